"""config.ranges: one range per numeric field, checked on raw strings (precheck) and parsed values alike."""

import pytest

from rlhf_recipes.config.errors import ConfigError
from rlhf_recipes.config.ranges import check_ranges


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"learning_rate": "-0.001"}, r"learning_rate must be a number > 0; the command line gives '-0.001'"),
        ({"per_device_train_batch_size": 0}, r"per_device_train_batch_size must be a whole number >= 1"),
        ({"gradient_accumulation_steps": 1.5}, r"gradient_accumulation_steps must be a whole number >= 1"),
        ({"max_steps": 0}, r"max_steps must be -1 or a whole number >= 1"),
        ({"top_p": 0}, r"top_p must be a number in \(0, 1\]"),
        ({"eval_split_size": 2.5}, r"eval_split_size must be a fraction in \[0, 1\) or a whole row count >= 1"),
        ({"lora_dropout": 1}, r"lora_dropout must be a number in \[0, 1\)"),
        ({"num_train_epochs": "nan"}, r"num_train_epochs must be a number > 0"),
        ({"learning_rate": True}, r"learning_rate must be a number > 0; the command line gives True"),
        ({"seed": "abc"}, r"seed must be a whole number in \[0, 4294967295\]"),
    ],
)
def test_values_outside_their_range_are_named(values, message):
    with pytest.raises(ConfigError, match=message):
        check_ranges(values, "command line")


def test_values_in_range_unset_and_unknown_fields_pass():
    check_ranges({"learning_rate": "1e-5", "max_steps": -1, "eval_split_size": 200, "reward_clip": None,
                  "max_length": "null", "not_a_ranged_field": -5, "output_dir": "x"})
