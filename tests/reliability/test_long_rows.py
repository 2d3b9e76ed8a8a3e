"""Rows longer than max_length: TRL drops them silently (reward pairs) or after truncation (SFT rows
left without a completion token); the stages count and log the drops and stop when none is left."""

import logging

import pytest
from datasets import Dataset
from trl import RewardConfig, SFTConfig

from rlhf_recipes.data import DataArguments, DataError
from rlhf_recipes.models import ModelArguments
from rlhf_recipes.stages.reward import run_reward
from rlhf_recipes.stages.reward_eval import encode_pair
from rlhf_recipes.stages.sft import train_sft

from reliability_helpers import CPU

FAST = dict(**CPU, max_steps=1, per_device_train_batch_size=4,
            save_strategy="no", eval_strategy="no")


def reward_data(shared_data, name, **overrides):
    return DataArguments(dataset_name=str(shared_data / name), data_split="0,1,0", eval_split_size=0, **overrides)


def test_chinese_pairs_beyond_max_length_are_counted_and_logged(tiny_dirs, shared_data, tmp_path, caplog):
    data_args = reward_data(shared_data, "medicalgpt_medical_reward_zh.jsonl")
    args = RewardConfig(output_dir=str(tmp_path), max_length=128, **FAST)

    with caplog.at_level(logging.WARNING, logger="rlhf_recipes"):
        trainer, _ = run_reward(ModelArguments(model_name_or_path=tiny_dirs["sft"]), data_args, args)

    # counted independently: a byte-level token per UTF-8 byte, three per Chinese character
    rows = trainer.train_dataset.num_rows + trainer.length_drops["train"]
    too_long = sum(max(map(len, encode_pair(row, trainer.processing_class))) > 128
                   for row in Dataset.from_json(str(shared_data / "medicalgpt_medical_reward_zh.jsonl"))
                   .rename_columns({"question": "prompt", "response_chosen": "chosen", "response_rejected": "rejected"}))
    assert rows == 85 and trainer.length_drops["train"] == too_long > 0
    assert f"reward train: {too_long} of 85 rows dropped" in caplog.text
    assert "longer than max_length=128 tokens" in caplog.text


def test_a_reward_set_with_no_pair_short_enough_fails_with_the_fix(tiny_dirs, shared_data, tmp_path):
    data_args = reward_data(shared_data, "llamafactory_dpo_zh_demo.json", max_samples=20)
    args = RewardConfig(output_dir=str(tmp_path), max_length=128, **FAST)
    with pytest.raises(DataError, match=r"All 20 train rows of the reward data were dropped.*max_length=128.*Raise max_length"):
        run_reward(ModelArguments(model_name_or_path=tiny_dirs["sft"]), data_args, args)


def test_sft_rows_cut_or_left_without_completion_are_counted(tiny_dirs, tmp_path, caplog):
    short = [{"prompt": f"Q{i}:", "completion": f" A{i}"} for i in range(6)]
    long_prompt = [{"prompt": "Q: " + "word " * 20, "completion": " yes"} for _ in range(2)]
    long_answer = [{"prompt": "Q:", "completion": " yes" * 20}]
    args = SFTConfig(output_dir=str(tmp_path), max_length=32, **FAST)

    with caplog.at_level(logging.WARNING, logger="rlhf_recipes"):
        trainer = train_sft(ModelArguments(model_name_or_path=tiny_dirs["sft"]), args,
                            Dataset.from_list(short + long_prompt + long_answer))

    assert trainer.length_drops == {"train": 2}
    assert len(trainer.train_dataset) == 7
    assert "SFT train: 2 of 9 rows dropped: after truncation to max_length=32" in caplog.text
    assert "SFT train: 1 of 7 rows reached max_length=32 tokens and were cut (truncation_mode keep_start)" in caplog.text

    with pytest.raises(DataError, match="All 2 train rows of the SFT data were dropped.*truncation_mode: keep_end"):
        train_sft(ModelArguments(model_name_or_path=tiny_dirs["sft"]), args, Dataset.from_list(long_prompt))
