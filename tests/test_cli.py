"""The `rlhf-recipes` console script and the recipe scripts, run as a user runs them (a subprocess each):
--help, --print-config, user errors as one paragraph with exit status 2, --debug, and the precheck
that fails before the stage (trl, transformers, torch) is imported."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
CONSOLE = str(Path(sys.executable).parent / "rlhf-recipes")
SFT_YAML = str(REPO_ROOT / "recipes/tiny/sft.yaml")
PPO_YAML = str(REPO_ROOT / "recipes/tiny/ppo.yaml")
HEAVY_MODULES = ("torch", "transformers", "trl", "datasets")


def run(*args: str, cwd: Path = REPO_ROOT, env: dict | None = None, python_flags: tuple = ()):
    command = [sys.executable, *python_flags, CONSOLE, *args] if python_flags else [CONSOLE, *args]
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=300,
                          env={**os.environ, **(env or {})})


def assert_user_error(result, command: str, *phrases: str) -> str:
    """Exit status 2, no traceback, and the error as one paragraph on the last line of stderr."""
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"rlhf-recipes {command}: error: ") and last.endswith("(--debug shows the traceback.)")
    for phrase in phrases:
        assert phrase in last
    return last


@pytest.mark.parametrize(
    ("command", "headings", "fields"),
    [
        ("sft", ["ModelArguments:", "DataArguments:", "SFTConfig:"], ["--model_name_or_path", "--learning_rate"]),
        *(pytest.param(*case, marks=pytest.mark.slow) for case in [
            ("reward", ["RewardConfig:", "RewardScriptArguments:"],
             ["--eval_rm_num_samples", "--center_rewards_coefficient"]),
            ("ppo", ["PPOConfig:", "PPOScriptArguments:"], ["--response_length", "--ptx_dataset_name"]),
            ("eval-rm", ["RewardEvalArguments:"], ["--num_samples", "--dataset"]),
            ("make-pairs", ["MakePairsArguments:"], ["--max_prompt_length", "--output"]),
            ("pipeline", [], ["--config", "--overwrite"]),
            ("demo", [], ["--output_dir", "--seed"]),
            ("report", [], ["run_dir"]),
            ("generate", [], ["--prompt", "--max_new_tokens"]),
            ("chat", [], ["--chat_template"]),
        ]),
    ],
)
def test_help_lists_the_fields_grouped_and_exits_0(command, headings, fields):
    result = run(command, "--help")
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.startswith(f"usage: rlhf-recipes {command}")
    lines = result.stdout.splitlines()
    for heading in headings:
        assert heading in lines
    for field in fields:
        assert field in result.stdout
    if headings:  # a dataclass field shows its help text and its default, once (no --dashed-alias)
        assert "--learning_rate LEARNING_RATE" in result.stdout or "--num_samples NUM_SAMPLES" in result.stdout
        assert "(default: " in result.stdout
        assert "--model-name-or-path" not in result.stdout


def test_help_shows_the_yaml_values_as_defaults():
    result = run("sft", "-h", "--config", SFT_YAML)
    assert result.returncode == 0
    assert "(default: tiny:opt)" in " ".join(result.stdout.split())


@pytest.mark.slow
@pytest.mark.parametrize("script", ["sft", "reward", "ppo", "pipeline"])
def test_recipe_scripts_have_the_same_help(script):
    result = subprocess.run([sys.executable, f"recipes/{script}.py", "--help"], cwd=REPO_ROOT, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "usage:" in result.stdout and "--config" in result.stdout


def test_print_config_prints_the_resolved_yaml_that_reproduces_itself(tmp_path):
    output_dir = tmp_path / "never-created"
    result = run("sft", "--config", SFT_YAML, "--learning_rate", "0.01", "--output_dir", str(output_dir),
                 "--print-config")
    assert result.returncode == 0, result.stderr[-3000:]
    resolved = yaml.safe_load(result.stdout)
    assert resolved["learning_rate"] == 0.01  # the flag over the YAML's value
    assert resolved["model_name_or_path"] == yaml.safe_load(Path(SFT_YAML).read_text())["model_name_or_path"]
    assert resolved["lr_scheduler_type"] == yaml.safe_load(Path(SFT_YAML).read_text())["lr_scheduler_type"]
    assert "# ModelArguments" in result.stdout and "# SFTConfig" in result.stdout
    assert not output_dir.exists()

    saved = tmp_path / "resolved.yaml"
    saved.write_text(result.stdout)
    again = run("sft", "--config", str(saved), "--print-config")
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout == result.stdout


@pytest.mark.slow
def test_print_config_needs_no_existing_inputs():
    """PPO's config names step 1 and 2 outputs that do not exist yet: printing it still works."""
    result = run("ppo", "--config", PPO_YAML, "--sft_model_path", "./not-trained-yet", "--print-config")
    assert result.returncode == 0, result.stderr[-3000:]
    assert yaml.safe_load(result.stdout)["sft_model_path"] == "./not-trained-yet"


@pytest.mark.parametrize(
    ("args", "phrases"),
    [
        (["sft", "--config", "recipes/tiny/nope.yaml"], ["Config file 'recipes/tiny/nope.yaml' does not exist"]),
        (["sft", "--config", SFT_YAML, "--model_name_or_path", "./runs/nope"],
         ["model_name_or_path: local path './runs/nope' does not exist", "Correct the path"]),
        (["reward", "--model_name_or_path", "/no/such/sft"],
         ["local path '/no/such/sft' does not exist. Run step 1 (rlhf-recipes sft"]),
        (["sft", "--config", SFT_YAML, "--dataset_name", "data/missing.jsonl"],
         ["dataset_name: local path 'data/missing.jsonl' does not exist"]),
        (["sft", "--config", SFT_YAML, "--learning_rate", "-0.001"],
         ["learning_rate must be a number > 0; the command line gives '-0.001'"]),
        (["ppo", "--config", PPO_YAML, "--per_device_train_batch_size", "0"],
         ["per_device_train_batch_size must be a whole number >= 1"]),
        (["ppo", "--config", PPO_YAML, "--response_length", "0"], ["response_length must be a whole number >= 1"]),
        (["make-pairs", "--model_name_or_path", "~/no-such-model", "--output", "x.jsonl"],
         ["local path '~/no-such-model' does not exist"]),
        (["report", "/no/such/run"], ["Run directory '/no/such/run' does not exist"]),
        (["sft", "--config", SFT_YAML, "--output_dir", "/no/such/run", "--resume_from_checkpoint", "true"],
         ["resume_from_checkpoint is true but '/no/such/run' holds no complete checkpoint"]),
    ],
)
def test_user_errors_fail_in_the_precheck_without_importing_the_stage(args, phrases):
    """One paragraph, exit 2, and none of torch/transformers/trl/datasets imported (-X importtime lists
    every module the process imported)."""
    result = run(*args, python_flags=("-X", "importtime"))
    assert_user_error(result, args[0], *phrases)
    imported = {line.split("|")[-1].strip() for line in result.stderr.splitlines() if line.startswith("import time:")}
    assert "rlhf_recipes.config.precheck" in imported
    assert not imported & set(HEAVY_MODULES)


def test_a_dir_name_path_under_an_existing_directory_is_local(tmp_path):
    """`runs/sft` once `runs/` exists is a local path, not the Hub id `runs/sft`."""
    (tmp_path / "runs").mkdir()
    result = run("sft", "--config", SFT_YAML, "--model_name_or_path", "runs/does-not-exist", cwd=tmp_path)
    assert_user_error(result, "sft", "local path 'runs/does-not-exist' does not exist")


def test_offline_a_hub_id_missing_from_the_cache_fails_at_once(tmp_path):
    result = run("sft", "--config", SFT_YAML, "--model_name_or_path", "someone/not-cached",
                 env={"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path)})
    assert_user_error(result, "sft", "'someone/not-cached' is neither a local path nor a model in the Hugging Face")


def test_errors_after_the_precheck_are_one_paragraph_and_leave_no_output_dir(tmp_path):
    """A data file the data layer cannot read (found only after the stage is imported): DataError, exit 2,
    and the output_dir the preflight checked was not created."""
    data = tmp_path / "bad.jsonl"
    data.write_text('{"foo": "bar"}\n')
    output_dir = tmp_path / "runs" / "sft"
    result = run("sft", "--config", SFT_YAML, "--dataset_name", str(data), "--output_dir", str(output_dir))
    assert_user_error(result, "sft", "cannot detect the data format from its columns ['foo']")
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_a_dataclass_rule_between_fields_is_a_user_error(tmp_path):
    result = run("ppo", "--config", PPO_YAML, "--sft_model_path", "tiny:opt", "--reward_model_path", "tiny:opt",
                 "--per_device_train_batch_size", "6", "--num_mini_batches", "4", "--output_dir", str(tmp_path / "o"))
    assert_user_error(result, "ppo", "per_device_train_batch_size (6) must be divisible by num_mini_batches (4)")


@pytest.mark.parametrize("debug", [("--debug",), ()])
def test_debug_shows_the_traceback(debug):
    env = {} if debug else {"RLHF_RECIPES_DEBUG": "1"}
    result = run("sft", "--config", SFT_YAML, "--learning_rate", "0", *debug, env=env)
    assert result.returncode == 1
    assert "Traceback (most recent call last)" in result.stderr
    assert "ConfigError: learning_rate must be a number > 0" in result.stderr


def test_recipe_script_errors_are_one_paragraph_too():
    result = subprocess.run([sys.executable, "recipes/ppo.py", "--config", PPO_YAML, "--num_ppo_epochs", "0"],
                            cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert_user_error(result, "ppo", "num_ppo_epochs must be a whole number >= 1")


def test_out_of_memory_is_reported_as_a_model_that_does_not_fit(monkeypatch, capsys):
    """A stage that runs out of accelerator memory (raised here by the stage's main) gets the fixes, exit 2."""
    import torch

    from rlhf_recipes import cli

    class Stage:
        @staticmethod
        def main(argv):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(cli.importlib, "import_module", lambda name: Stage)
    assert cli.run("demo", []) == 2
    error = capsys.readouterr().err
    assert "does not fit in memory (CUDA out of memory. Tried to allocate 20.00 GiB)" in error
    assert "per_device_train_batch_size" in error and "load_in_4bit" in error
    with pytest.raises(torch.OutOfMemoryError):
        cli.run("demo", [], report_errors=False)
