"""The tiny recipes end to end through their entry points: one subprocess per stage (they are slow)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from rlhf_recipes import cli
from rlhf_recipes.artifacts.run_dir import RM_EVAL
from rlhf_recipes.stages import reward
from rlhf_recipes.stages import sft
from rlhf_recipes.models import ModelArguments, load_model, load_tokenizer
from rlhf_recipes.config.parsing import ConfigError

REPO_ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
SFT_YAML = "recipes/tiny/sft.yaml"
REWARD_YAML = "recipes/tiny/reward.yaml"
QUICK = ["--max_steps", "2", "--max_samples", "16", "--eval_strategy", "no", "--save_strategy", "no"]


def _run(command: list[str]) -> subprocess.CompletedProcess:
    result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300, env=dict(os.environ))
    assert result.returncode == 0, f"{command} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


@pytest.fixture(scope="module")
def sft_dir(tmp_path_factory) -> Path:
    """Step 1 via the installed CLI on the tiny YAML, 2 steps."""
    output_dir = tmp_path_factory.mktemp("cli") / "sft"
    _run([str(VENV_BIN / "rlhf-recipes"), "sft", "--config", SFT_YAML, "--output_dir", str(output_dir), *QUICK])
    return output_dir


@pytest.mark.slow
def test_sft_cli_trains_from_the_tiny_yaml(sft_dir):
    state = json.loads((sft_dir / "trainer_state.json").read_text())
    assert state["global_step"] == 2
    assert (sft_dir / "model.safetensors").is_file()
    assert (sft_dir / "tokenizer.json").is_file()


@pytest.mark.slow
def test_reward_recipe_script_under_accelerate_starts_from_the_sft_output(sft_dir, tmp_path):
    output_dir = tmp_path / "reward"
    _run([
        str(VENV_BIN / "accelerate"), "launch", "--cpu", "--num_processes", "1", "recipes/reward.py",
        "--config", REWARD_YAML, "--model_name_or_path", str(sft_dir), "--output_dir", str(output_dir),
        "--eval_rm_num_samples", "4", *QUICK,
    ])

    report = json.loads((output_dir / RM_EVAL).read_text())
    assert report["num_pairs"] == 4
    assert 0.0 <= report["accuracy"] <= 1.0
    assert json.loads((output_dir / "config.json").read_text())["architectures"] == ["OPTForSequenceClassification"]


def test_unknown_yaml_key_is_named(tmp_path):
    config = yaml.safe_load((REPO_ROOT / SFT_YAML).read_text())
    config["learning_rat"] = 1e-3
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(config))

    with pytest.raises(ConfigError, match="'learning_rat'.*did you mean 'learning_rate'"):
        sft.main(["--config", str(path)])


def test_reward_yaml_without_the_sft_output_says_to_run_step_1(tmp_path):
    missing = tmp_path / "runs" / "tiny" / "sft"
    with pytest.raises(ConfigError, match=r"local path .* does not exist\. Run step 1 \(rlhf-recipes sft"):
        reward.main(["--config", str(REPO_ROOT / REWARD_YAML), "--model_name_or_path", str(missing)])


def test_eval_rm_cli_prints_good_and_bad_scores_and_writes_json(tmp_path, capsys):
    model_dir = tmp_path / "rm"
    args = ModelArguments(model_name_or_path="tiny:opt")
    tokenizer = load_tokenizer(args)
    load_model(args, tokenizer, task="seq-cls").save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    data = tmp_path / "pairs.jsonl"
    rows = [{"prompt": f"Question {i}?", "chosen": f" Right {i}.", "rejected": " Wrong."} for i in range(3)]
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    out = tmp_path / "report.json"

    argv = ["eval-rm", "--model_name_or_path", str(model_dir), "--dataset", str(data), "--json", str(out)]

    assert cli.main(argv) == 0

    report = json.loads(out.read_text())
    printed = capsys.readouterr().out
    assert report["num_pairs"] == 3
    for pair in report["pairs"]:
        assert f"good (chosen)   {pair['chosen_score']:+9.4f}" in printed
        assert f"bad  (rejected) {pair['rejected_score']:+9.4f}" in printed
    assert f"accuracy (chosen > rejected): {report['accuracy']:.4f}" in printed
    assert f"mean margin: {report['mean_margin']:+.4f}" in printed
