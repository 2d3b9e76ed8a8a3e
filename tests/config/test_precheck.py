"""config.precheck: the raw YAML + command-line checks the CLI runs before importing a stage."""

import pytest
import yaml

from rlhf_recipes.config.errors import ConfigError
from rlhf_recipes.config.precheck import command_line_settings, precheck


def write_yaml(path, data) -> str:
    path.write_text(yaml.safe_dump(data))
    return str(path)


def test_command_line_settings_read_values_equals_and_bare_flags():
    argv = ["--config", "x.yaml", "--learning_rate", "-1e-3", "--use_peft", "--lora-r=8", "--seed", "1"]
    assert command_line_settings(argv) == {"config": "x.yaml", "learning_rate": "-1e-3", "use_peft": "true",
                                           "lora_r": "8", "seed": "1"}


def test_a_command_line_value_replaces_the_yaml_value_before_it_is_checked(tmp_path):
    config = write_yaml(tmp_path / "reward.yaml", {"model_name_or_path": "./runs/not-yet", "learning_rate": -1})
    with pytest.raises(ConfigError, match=rf"learning_rate must be a number > 0; the config file {config} gives -1"):
        precheck("reward", ["--config", config])
    precheck("reward", ["--config", config, "--model_name_or_path", str(tmp_path), "--learning_rate", "1e-4"])


def test_print_config_skips_the_path_checks_but_not_the_ranges(tmp_path):
    config = write_yaml(tmp_path / "ppo.yaml", {"sft_model_path": "./runs/not-yet"})
    precheck("ppo", ["--config", config, "--print-config"])
    with pytest.raises(ConfigError, match="response_length"):
        precheck("ppo", ["--config", config, "--print-config", "--response_length", "0"])


def test_pipeline_stages_are_checked_with_their_stage_yaml(tmp_path):
    write_yaml(tmp_path / "sft.yaml", {"per_device_train_batch_size": 0})
    pipeline = write_yaml(tmp_path / "pipeline.yaml", {
        "output_dir": str(tmp_path / "run"), "model": {"model_name_or_path": "tiny:opt"},
        "stages": {"sft": {"config": "sft.yaml"}, "ppo": {"sft_model_path": "./run/sft"}},
    })
    with pytest.raises(ConfigError, match=r"per_device_train_batch_size must be .*the 'sft' stage of"):
        precheck("pipeline", ["--config", pipeline])
    write_yaml(tmp_path / "sft.yaml", {"per_device_train_batch_size": 4})
    precheck("pipeline", ["--config", pipeline])  # ppo's sft_model_path is written by the sft stage: not checked


def test_pipeline_seed_override_is_checked(tmp_path):
    pipeline = write_yaml(tmp_path / "pipeline.yaml", {"output_dir": "x", "stages": {}})
    with pytest.raises(ConfigError, match="seed must be a whole number"):
        precheck("pipeline", ["--config", pipeline, "--seed", "-1"])


def test_resume_needs_a_complete_checkpoint(tmp_path):
    with pytest.raises(ConfigError, match="resume_from_checkpoint is true but .* holds no complete checkpoint"):
        precheck("ppo", ["--output_dir", str(tmp_path), "--resume_from_checkpoint", "true"])
    with pytest.raises(ConfigError, match="is not a checkpoint directory"):
        precheck("sft", ["--output_dir", str(tmp_path), "--resume_from_checkpoint", str(tmp_path / "checkpoint-3")])
    precheck("sft", ["--output_dir", str(tmp_path), "--resume_from_checkpoint", "false"])
