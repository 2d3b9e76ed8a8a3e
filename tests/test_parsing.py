import dataclasses

import pytest
import yaml
from trl import SFTConfig

from rlhf_recipes.models import ModelArguments
from rlhf_recipes.config.parsing import ConfigError, parse_args


def test_yaml_values_are_overridden_by_flags(tmp_path):
    config = tmp_path / "sft.yaml"
    config.write_text("model_name_or_path: tiny:opt\nmax_steps: 7\nlearning_rate: 0.5\n")
    model_args, sft_args = parse_args(
        [ModelArguments, SFTConfig], ["--config", str(config), "--max_steps", "5", "--output_dir", str(tmp_path)]
    )
    assert model_args.model_name_or_path == "tiny:opt"
    assert sft_args.max_steps == 5
    assert sft_args.learning_rate == 0.5


def test_unknown_yaml_key_is_named_with_a_suggestion(tmp_path):
    config = tmp_path / "sft.yaml"
    config.write_text("model_name_or_path: tiny:opt\nlearning_rat: 0.1\n")
    with pytest.raises(ConfigError, match=r"'learning_rat' in the config file .*did you mean 'learning_rate'"):
        parse_args([ModelArguments, SFTConfig], ["--config", str(config)])


def test_unknown_flag_is_named(tmp_path):
    with pytest.raises(ConfigError, match=r"'lora_rr' in the command line .*did you mean 'lora_r'"):
        parse_args([ModelArguments, SFTConfig], ["--output_dir", str(tmp_path), "--lora_rr", "8"])


def test_config_that_is_not_a_mapping_is_rejected(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text("- just\n- a list\n")
    with pytest.raises(ConfigError, match="YAML mapping"):
        parse_args([ModelArguments, SFTConfig], ["--config", str(config)])


def test_null_on_the_command_line_unsets_an_optional_field(tmp_path):
    from rlhf_recipes.ppo import PPOConfig

    config = tmp_path / "ppo.yaml"
    config.write_text(f"output_dir: {tmp_path}\nstop_token: eos\nreward_clip: 5.0\nhub_model_id: me/ppo\n")
    (ppo_args,) = parse_args(
        [PPOConfig], ["--config", str(config), "--stop_token", "null", "--reward_clip", "null", "--hub_model_id", "None"]
    )
    assert ppo_args.stop_token is None
    assert ppo_args.reward_clip is None
    assert ppo_args.hub_model_id is None
    (kept,) = parse_args([PPOConfig], ["--config", str(config), "--stop_token", "</s>"])
    assert kept.stop_token == "</s>"


def test_parsed_values_are_range_checked_without_the_cli_precheck(tmp_path):
    """The pipeline parses each stage's YAML directly: the dataclasses' fields still meet config.ranges."""
    config = tmp_path / "sft.yaml"
    config.write_text("model_name_or_path: tiny:opt\nper_device_train_batch_size: 0\n")
    with pytest.raises(ConfigError, match="per_device_train_batch_size must be a whole number >= 1; got 0"):
        parse_args([ModelArguments, SFTConfig], ["--config", str(config), "--output_dir", str(tmp_path)])


def test_a_dataclass_value_error_becomes_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="load_best_model_at_end"):
        parse_args([SFTConfig], ["--output_dir", str(tmp_path), "--load_best_model_at_end", "true",
                                 "--eval_strategy", "steps", "--save_strategy", "epoch"])


def test_help_groups_fields_by_dataclass_and_exits_0(capsys):
    with pytest.raises(SystemExit) as exit_:
        parse_args([ModelArguments, SFTConfig], ["--help"])
    assert exit_.value.code == 0
    lines = capsys.readouterr().out.splitlines()
    model, sft = lines.index("ModelArguments:"), lines.index("SFTConfig:")
    assert model < [i for i, line in enumerate(lines) if line.strip().startswith("--lora_r ")][0] < sft
    assert sft < [i for i, line in enumerate(lines) if line.strip().startswith("--learning_rate ")][0]


def test_print_config_prints_every_field_and_exits_0(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        parse_args([ModelArguments, SFTConfig], ["--output_dir", str(tmp_path), "--lora_r", "4", "--print-config"])
    assert exit_.value.code == 0
    resolved = yaml.safe_load(capsys.readouterr().out)
    assert resolved["lora_r"] == 4 and resolved["output_dir"] == str(tmp_path)
    assert {field.name for field in dataclasses.fields(SFTConfig) if field.init} <= set(resolved)
