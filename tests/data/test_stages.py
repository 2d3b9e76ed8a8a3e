"""Each stage's output is in TRL's standard format, one representation per source, and TRL accepts it."""

import pytest
from trl.data_utils import is_conversational, maybe_apply_chat_template

from rlhf_recipes.data import DataArguments, DataError, build_stage_dataset, load_stage_dataset
from rlhf_recipes.models.tokenizers import build_byte_tokenizer

COLUMNS = {"sft": ["prompt", "completion"], "reward": ["prompt", "chosen", "rejected"], "ppo": ["prompt"]}


def stage_data(shared_data, name, stage, **args):
    return load_stage_dataset(DataArguments(dataset_name=str(shared_data / name), data_split="1,1,1", **args), stage)


@pytest.mark.parametrize("stage", COLUMNS)
def test_hh_stages_are_conversational_with_single_assistant_replies(shared_data, stage):
    data = stage_data(shared_data, "hh_rlhf_helpful_base_test_sample.jsonl", stage)
    assert data["train"].column_names == COLUMNS[stage]
    for row in data["train"]:
        assert is_conversational(row)
        assert row["prompt"][0]["role"] == "user" and row["prompt"][-1]["role"] == "user"
        for column in COLUMNS[stage][1:]:
            assert [message["role"] for message in row[column]] == ["assistant"]


@pytest.mark.parametrize("stage", COLUMNS)
def test_single_turn_source_stays_strings(shared_data, stage):
    data = stage_data(shared_data, "medicalgpt_medical_reward_zh.jsonl", stage)
    assert data["train"].column_names == COLUMNS[stage]
    assert all(isinstance(value, str) for row in data["train"] for value in row.values())


def test_sft_from_preference_uses_the_chosen_reply(shared_data):
    args = dict(data_split="1,0,0", eval_split_size=0)
    sft = load_stage_dataset(DataArguments(dataset_name=str(shared_data / "medicalgpt_dpo_zh_500.jsonl"), **args), "sft")
    pairs = load_stage_dataset(
        DataArguments(dataset_name=str(shared_data / "medicalgpt_dpo_zh_500.jsonl"), data_split="0,1,0", eval_split_size=0),
        "reward",
    )
    # same rows and order: the shuffle and the part depend only on the rows and the seed
    assert list(sft["train"]["prompt"]) == list(pairs["train"]["prompt"])
    assert list(sft["train"]["completion"]) == list(pairs["train"]["chosen"])


def test_sft_projection_duplicates_are_dropped_and_counted(tmp_path, write_jsonl):
    rows = [{"prompt": "same", "chosen": "good", "rejected": f"bad {i}"} for i in range(10)]
    rows += [{"prompt": f"q{i}", "chosen": "good", "rejected": "bad"} for i in range(10)]
    path = write_jsonl(tmp_path / "pairs.jsonl", rows)
    data, report = build_stage_dataset(DataArguments(dataset_name=str(path), data_split="1,0,0", eval_split_size=0), "sft")
    assert len(data["train"]) == 11
    assert report.dropped == {"duplicate": 9}
    assert [step.step for step in report.steps if step.dropped] == ["sft format, train"]


def test_eval_rows_equal_to_train_rows_are_dropped(tmp_path, write_jsonl):
    rows = [{"prompt": f"q{i % 5}", "chosen": "good", "rejected": f"bad {i}"} for i in range(50)]
    path = write_jsonl(tmp_path / "pairs.jsonl", rows)
    data, report = build_stage_dataset(DataArguments(dataset_name=str(path), data_split="0,0,1", eval_split_size=10), "ppo")
    assert not set(data["train"]["prompt"]) & set(data["eval"]["prompt"])
    assert len(data["train"]) + len(data["eval"]) == 5
    assert report.dropped == {"duplicate": 45}


def test_reward_from_sft_only_source_is_an_error(shared_data):
    with pytest.raises(DataError, match="llamafactory_alpaca_zh_demo.json \\(alpaca format, sft data\\) cannot feed the reward stage"):
        stage_data(shared_data, "llamafactory_alpaca_zh_demo.json", "reward")


def test_sft_from_prompt_only_source_is_an_error(tmp_path, write_jsonl):
    path = write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": f"p{i}"} for i in range(10)])
    with pytest.raises(DataError, match="prompt_only format, prompt data\\) cannot feed the sft stage"):
        load_stage_dataset(DataArguments(dataset_name=str(path)), "sft")
    assert len(load_stage_dataset(DataArguments(dataset_name=str(path), data_split="0,0,1", eval_split_size=0), "ppo")["train"]) == 10


def test_unknown_stage(shared_data):
    with pytest.raises(DataError, match="Unknown stage 'dpo'; valid stages: sft, reward, ppo"):
        stage_data(shared_data, "medicalgpt_medical_reward_zh.jsonl", "dpo")


def test_no_dataset_given():
    with pytest.raises(DataError, match="set dataset_name .* or dataset_mixer"):
        load_stage_dataset(DataArguments(), "sft")


@pytest.mark.parametrize("name", ["hh_rlhf_helpful_base_test_sample.jsonl", "medicalgpt_medical_reward_zh.jsonl"])
@pytest.mark.parametrize("stage", COLUMNS)
def test_trl_chat_template_step_accepts_every_stage(shared_data, name, stage):
    """TRL's own preprocessing (SFTTrainer/RewardTrainer call it) turns each row into text."""
    tokenizer = build_byte_tokenizer()
    row = stage_data(shared_data, name, stage)["train"][0]
    text = maybe_apply_chat_template(row, tokenizer)
    assert set(text) == set(COLUMNS[stage])
    assert all(isinstance(value, str) and value for value in text.values())
    if name.startswith("hh"):
        assert text["prompt"].startswith("Human: ") and text["prompt"].endswith("Assistant:")
