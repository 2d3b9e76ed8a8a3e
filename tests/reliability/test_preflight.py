"""Bad configurations fail from the command line before any data or weights are loaded, with the
field at fault and the fix in the message."""

from collections import namedtuple
from pathlib import Path

import pytest
import yaml
from transformers import GPT2Config

from rlhf_recipes import cli
from rlhf_recipes.config import preflight
from rlhf_recipes.data import loading as data_loading
from rlhf_recipes.stages import train_and_save
from rlhf_recipes.models import ModelArguments
from rlhf_recipes.models.introspection import max_positions, model_config, parameter_count
from rlhf_recipes.config.parsing import ConfigError
from rlhf_recipes.ppo import run as ppo_run

REPO_ROOT = Path(__file__).resolve().parents[2]
PPO = ["ppo", "--config", str(REPO_ROOT / "recipes/tiny/ppo.yaml"), "--sft_model_path", "tiny:opt",
       "--reward_model_path", "tiny:opt"]


@pytest.fixture(autouse=True)
def nothing_loaded(monkeypatch):
    """Every test here must fail before a model or the data is loaded."""

    def forbidden(*args, **kwargs):
        raise AssertionError("a model or the data was loaded before the configuration error")

    for module in (train_and_save, ppo_run):
        monkeypatch.setattr(module, "load_model", forbidden)
    for module in (data_loading, ppo_run):
        monkeypatch.setattr(module, "load_stage_dataset", forbidden)


def stage_argv(stage, tiny_dirs, output_dir, *extra):
    config = str(REPO_ROOT / f"recipes/tiny/{stage}.yaml")
    model = [] if stage == "sft" else ["--model_name_or_path", tiny_dirs["sft"]]
    return [stage, "--config", config, *model, "--output_dir", str(output_dir), *extra]


@pytest.mark.parametrize("stage", ["sft", "reward"])
def test_an_output_dir_that_cannot_be_created_is_named(stage, tiny_dirs, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")  # root ignores permissions, but not a file in the path
    with pytest.raises(ConfigError, match=r"output_dir '.*a_file/run' is not writable.*Choose a directory"):
        cli.main(stage_argv(stage, tiny_dirs, blocker / "run"))


def test_too_little_free_space_names_the_numbers(tiny_dirs, tmp_path, monkeypatch):
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(preflight.shutil, "disk_usage", lambda path: usage(10 * 2**20, 9 * 2**20, 2**20))
    weights = 4 * parameter_count(model_config(ModelArguments(model_name_or_path="tiny:opt")))
    # 10 steps, a save every 2, at most 1 kept: 2 on disk while the next is written, each weights + 2x for AdamW
    need = 2 * 3 * weights + weights
    with pytest.raises(ConfigError) as error:
        cli.main(stage_argv("sft", tiny_dirs, tmp_path, "--max_steps", "10", "--save_strategy", "steps",
                            "--save_steps", "2", "--save_total_limit", "1"))
    assert f"has 1.0 MiB free but this run needs about {need / 2**20:.1f} MiB (2 checkpoint(s) x" in str(error.value)
    assert "lower save_total_limit" in str(error.value)


@pytest.mark.parametrize(
    ("stage", "extra", "message"),
    [
        ("sft", ["--max_length", "1024"], r"max_length \(1024\) exceeds the model's 512 positions.*max_length: 512"),
        ("reward", ["--max_length", "600"], r"max_length \(600\) exceeds the model's 512 positions"),
        ("sft", ["--load_in_4bit", "true"], "load_in_4bit/load_in_8bit .* set use_peft: true"),
        ("reward", ["--merge_lora", "true"], r"merge_lora: true needs LoRA training \(use_peft: true\)"),
        ("sft", ["--learning_rate", "abc"], "learning_rate must be a number > 0; the command line gives 'abc'"),
    ],
)
def test_contradictory_or_mistyped_stage_options(stage, extra, message, tiny_dirs, tmp_path):
    with pytest.raises(ConfigError, match=message):
        cli.main(stage_argv(stage, tiny_dirs, tmp_path / "out", *extra))
    assert not (tmp_path / "out").exists()


def test_a_mistyped_yaml_value_is_named_with_its_file(tmp_path):
    config = yaml.safe_load((REPO_ROOT / "recipes/tiny/sft.yaml").read_text())
    path = tmp_path / "sft.yaml"
    path.write_text(yaml.safe_dump({**config, "learning_rate": "abc", "output_dir": str(tmp_path / "out")}))
    with pytest.raises(ConfigError, match=rf"learning_rate must be a number > 0; the config file {path} gives 'abc'"):
        cli.main(["sft", "--config", str(path)])


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--per_device_train_batch_size", "6", "--num_mini_batches", "4"],
         r"per_device_train_batch_size \(6\) must be divisible by num_mini_batches \(4\)"),
        (["--ref_model_path", "tiny:opt", "--use_peft", "true"], "Drop ref_model_path, or train without LoRA"),
        (["--response_length", "300"], r"max_prompt_length \(256\) \+ response_length \(300\) exceeds the model's 512"),
    ],
)
def test_contradictory_ppo_options_fail_from_the_command_line(extra, message, tmp_path):
    with pytest.raises(ConfigError, match=message):
        cli.main([*PPO, "--output_dir", str(tmp_path / "ppo"), *extra])


def test_positions_are_read_from_the_config_whatever_the_family_calls_them(tiny_dirs):
    assert max_positions(GPT2Config(n_positions=128)) == 128
    assert max_positions(model_config(ModelArguments(model_name_or_path=tiny_dirs["sft"]))) == 512
    overridden = ModelArguments(model_config_overrides={"max_position_embeddings": 64})  # no model_name_or_path (PPO)
    assert max_positions(model_config(overridden, "tiny:qwen2")) == 64
