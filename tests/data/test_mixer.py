"""`dataset_mixer`: fractions per source, deterministic, one representation, duplicates across sources."""

import json

import pytest

from rlhf_recipes.data import DataArguments, DataError, build_stage_dataset, load_stage_dataset
from rlhf_recipes.config.parsing import ConfigError

ALL_FOR_PPO = dict(data_split="0,0,1", eval_split_size=0)


def mixer(shared_data, **fractions):
    return {str(shared_data / name): fraction for name, fraction in fractions.items()}


def test_fractions_of_each_source(shared_data):
    sources = mixer(shared_data, **{"llamafactory_alpaca_zh_demo.json": 0.5, "medicalgpt_medical_reward_zh.jsonl": 1.0})
    data, report = build_stage_dataset(DataArguments(dataset_mixer=sources, **ALL_FOR_PPO), "ppo")
    alpaca, medical = sources
    assert report.sizes[f"mix:{alpaca}"] == 496  # round(0.5 * 992 rows kept)
    assert report.sizes[f"mix:{medical}"] == 85
    assert len(data["train"]) == 496 + 85
    assert set(medical_questions(shared_data)) <= set(data["train"]["prompt"])


def medical_questions(shared_data) -> list[str]:
    lines = (shared_data / "medicalgpt_medical_reward_zh.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line)["question"] for line in lines]


def test_mix_is_deterministic_and_shuffled_across_sources(shared_data):
    sources = mixer(shared_data, **{"llamafactory_alpaca_zh_demo.json": 0.1, "medicalgpt_medical_reward_zh.jsonl": 1.0})
    first = load_stage_dataset(DataArguments(dataset_mixer=sources, **ALL_FOR_PPO), "ppo")["train"]["prompt"]
    again = load_stage_dataset(DataArguments(dataset_mixer=sources, **ALL_FOR_PPO), "ppo")["train"]["prompt"]
    other_seed = load_stage_dataset(DataArguments(dataset_mixer=sources, split_seed=1, **ALL_FOR_PPO), "ppo")["train"]["prompt"]
    assert list(first) == list(again)
    assert set(first) != set(other_seed)
    questions = set(medical_questions(shared_data))
    medical_positions = [i for i, prompt in enumerate(first) if prompt in questions]
    assert medical_positions != list(range(len(first) - 85, len(first)))  # shuffled, not simply appended


def test_string_sources_become_messages_when_mixed_with_conversational(shared_data):
    sources = mixer(shared_data, **{"medicalgpt_medical_reward_zh.jsonl": 1.0, "medicalgpt_dpo_zh_500.jsonl": 0.1})
    data = load_stage_dataset(DataArguments(dataset_mixer=sources, data_split="0,1,0", eval_split_size=0), "reward")
    rows = {row["prompt"][-1]["content"]: row for row in data["train"]}
    assert len(rows) == 85 + 42
    assert rows["肛门病变可能是什么疾病的症状?"] == {
        "prompt": [{"role": "user", "content": "肛门病变可能是什么疾病的症状?"}],
        "chosen": [{"role": "assistant", "content": "食管克罗恩病"}],
        "rejected": [{"role": "assistant", "content": "肛门病变可能与多种不同类型的病症有关。"}],
    }


def test_duplicates_across_sources_are_dropped_and_counted(shared_data):
    """Every rm-static row is also a train-pool row (data README), so mixing both adds nothing."""
    sources = mixer(shared_data, **{"hh_rlhf_helpful_train_pool.jsonl": 1.0, "rm_static_style_sample.jsonl": 1.0})
    data, report = build_stage_dataset(DataArguments(dataset_mixer=sources, data_split="0,1,0", eval_split_size=0), "reward")
    (mix_step,) = [step for step in report.steps if step.step == "mix"]
    assert mix_step.rows_in == 3971 + 1000
    assert mix_step.dropped == {"duplicate": 1000}
    assert len(data["train"]) == 3971


def test_source_that_cannot_feed_the_stage_is_named(shared_data):
    sources = mixer(shared_data, **{"medicalgpt_dpo_zh_500.jsonl": 1.0, "llamafactory_alpaca_zh_demo.json": 1.0})
    with pytest.raises(DataError, match="llamafactory_alpaca_zh_demo.json \\(alpaca format, sft data\\) cannot feed the reward stage"):
        load_stage_dataset(DataArguments(dataset_mixer=sources), "reward")


def test_sft_mixes_sft_and_preference_sources(shared_data):
    sources = mixer(shared_data, **{"medicalgpt_medical_reward_zh.jsonl": 1.0, "llamafactory_alpaca_zh_demo.json": 0.1})
    data = load_stage_dataset(DataArguments(dataset_mixer=sources, data_split="1,0,0", eval_split_size=0), "sft")
    completions = dict(zip(data["train"]["prompt"], data["train"]["completion"]))
    assert len(completions) == 85 + 99
    assert completions["肛门病变可能是什么疾病的症状?"] == "食管克罗恩病"


def test_fraction_selecting_no_rows(shared_data):
    sources = mixer(shared_data, **{"medicalgpt_medical_reward_zh.jsonl": 0.001})
    with pytest.raises(DataError, match="fraction 0.001 of .*medicalgpt_medical_reward_zh.jsonl \\(85 rows\\) selects no rows"):
        load_stage_dataset(DataArguments(dataset_mixer=sources), "ppo")


@pytest.mark.parametrize("fraction", [0, 1.5, -0.1, "half", True])
def test_fraction_outside_zero_one(fraction):
    with pytest.raises(ConfigError, match="dataset_mixer\\['a.jsonl'\\] must be a fraction in \\(0, 1\\]"):
        DataArguments(dataset_mixer={"a.jsonl": fraction})
