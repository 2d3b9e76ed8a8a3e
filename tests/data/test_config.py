"""`DataArguments` validation and parsing from the command line and YAML."""

from dataclasses import fields

import pytest

from rlhf_recipes.data import DataArguments
from rlhf_recipes.data.config import FORMATS
from rlhf_recipes.config.parsing import ConfigError, parse_args


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("2,x,4", "has a part that is not a number"),
        ("2,4", "must have 3 comma-separated proportions"),
        ("1,2,3,4", "must have 3 comma-separated proportions"),
        ("-1,2,3", "non-negative proportions with a positive sum"),
        ("0,0,0", "non-negative proportions with a positive sum"),
        ("nan,1,1", "non-negative proportions with a positive sum"),
    ],
)
def test_bad_data_split(spec, message):
    with pytest.raises(ConfigError, match=f"data_split '{spec}' .*{message}"):
        DataArguments(data_split=spec)


def test_data_split_weights():
    assert DataArguments(data_split=" 2, 4 ,4").split_weights == (2.0, 4.0, 4.0)
    assert DataArguments(data_split="0.5,0,1").split_weights == (0.5, 0.0, 1.0)


def test_unknown_dataset_format_lists_the_valid_ones():
    with pytest.raises(ConfigError) as err:
        DataArguments(dataset_format="hh")
    assert "Unknown dataset_format 'hh'; valid formats: auto, medicalgpt_reward" in str(err.value)
    assert all(name in str(err.value) for name in ("hh_rlhf", "rm_static", "alpaca", "sharegpt_ranking", "prompt_only"))
    assert set(FORMATS) >= {"auto", "hh_rlhf", "rm_static", "alpaca", "medicalgpt_dpo", "preference", "messages"}


def test_json_strings_for_dict_fields_are_parsed():
    args = DataArguments(column_mapping='{"prompt": "question"}', dataset_mixer='{"a.jsonl": 0.5, "b.jsonl": 1}')
    assert args.column_mapping == {"prompt": "question"}
    assert args.dataset_mixer == {"a.jsonl": 0.5, "b.jsonl": 1}


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("column_mapping", '{"prompt": ', "column_mapping is not valid JSON"),
        ("column_mapping", '["prompt"]', "column_mapping must be a mapping \\(a JSON object\\), got list"),
        ("column_mapping", '{"prompt": 3}', "column_mapping\\['prompt'\\] must be a column name, got 3"),
        ("dataset_mixer", "a.jsonl", "dataset_mixer is not valid JSON"),
        ("eval_split_size", -0.1, "eval_split_size must be a fraction in \\[0, 1\\) or a whole row count"),
        ("eval_split_size", 2.5, "eval_split_size must be a fraction in \\[0, 1\\) or a whole row count"),
        ("max_samples", 0, "max_samples must be a whole number >= 1; got 0"),
    ],
)
def test_bad_field_values(field, value, message):
    with pytest.raises(ConfigError, match=message):
        DataArguments(**{field: value})


def test_dataset_name_and_mixer_are_exclusive():
    with pytest.raises(ConfigError, match="either dataset_name or dataset_mixer, not both"):
        DataArguments(dataset_name="a.jsonl", dataset_mixer={"b.jsonl": 1.0})


def test_parsed_from_command_line_and_yaml(tmp_path):
    config = tmp_path / "data.yaml"
    config.write_text("dataset_mixer:\n  a.jsonl: 0.5\n  b.jsonl: 1.0\ndata_split: '1,0,0'\n", encoding="utf-8")
    (args,) = parse_args([DataArguments], ["--config", str(config), "--column_mapping", '{"prompt": "q"}', "--eval_split_size", "10"])
    assert args.dataset_mixer == {"a.jsonl": 0.5, "b.jsonl": 1.0}
    assert args.column_mapping == {"prompt": "q"}
    assert args.split_weights == (1.0, 0.0, 0.0)
    assert args.eval_split_size == 10


def test_every_field_has_help():
    assert all(field.metadata.get("help") for field in fields(DataArguments))
