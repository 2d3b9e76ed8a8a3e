"""The batched pre-tokenisation gives the datasets TRL's own per-row preparation gives (same ids, labels, drops),
and the reward collator TRL's batches."""

import pytest
import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer
from trl import RewardConfig, RewardTrainer, SFTConfig, SFTTrainer
from trl.trainer.reward_trainer import DataCollatorForPreference

from rlhf_recipes.stages.preference_collator import PreferenceCollator
from rlhf_recipes.stages.pretokenize import preference_ids, sft_ids
from rlhf_recipes.stages.trainers import ReliableRewardTrainer, ReliableSFTTrainer


@pytest.fixture(scope="module")
def tokenizer(tiny_base):
    return AutoTokenizer.from_pretrained(tiny_base)


def _prepared(trainer_class, model_class, config_class, tiny_base, tmp_path, fast, train, max_length=12):
    args = config_class(output_dir=str(tmp_path / trainer_class.__name__), **{**fast, "max_length": max_length})
    extra = {"num_labels": 1} if model_class is AutoModelForSequenceClassification else {}
    trainer = trainer_class(model=model_class.from_pretrained(tiny_base, **extra), args=args, train_dataset=train,
                            processing_class=AutoTokenizer.from_pretrained(tiny_base))
    return trainer.train_dataset


def test_reward_rows_match_trls_own_tokenization_and_length_filter(tiny_base, tmp_path, fast, tokenizer):
    eos = tokenizer.eos_token
    rows = Dataset.from_list([
        {"prompt": "Q: max 3 8 1 5 A:", "chosen": " 8", "rejected": " 5 5 5"},
        {"prompt": "Q: hello there", "chosen": " yes" + eos, "rejected": " no"},  # EOS already there: not doubled
        {"prompt": "Q: a long prompt that", "chosen": " goes on" * 40, "rejected": " x"},
    ])
    ours = _prepared(ReliableRewardTrainer, AutoModelForSequenceClassification, RewardConfig, tiny_base, tmp_path,
                     fast, rows, max_length=64)
    trl = _prepared(RewardTrainer, AutoModelForSequenceClassification, RewardConfig, tiny_base, tmp_path, fast, rows,
                    max_length=64)
    assert len(ours) == len(trl) == 2  # the long pair is dropped by TRL's filter in both
    for column in ("chosen_ids", "rejected_ids", "chosen", "rejected"):
        assert ours[column] == trl[column]
    assert ours["chosen_ids"][1].count(tokenizer.eos_token_id) == 1


@pytest.mark.parametrize("rows", [
    [{"prompt": "Q: max 3 8 1 5 A:", "completion": " 8"}, {"prompt": "Q: min 2 2 A:", "completion": " 2 2 2"},
     {"prompt": "Q: a long prompt that", "completion": " goes on" * 20}],
    [{"text": "Q: first 3 8 1 5 A: 3"}, {"text": "a b c " * 20}],
], ids=["prompt-completion", "text"])
def test_sft_rows_match_trls_own_tokenization_labels_and_truncation(tiny_base, tmp_path, fast, rows):
    data = Dataset.from_list(rows)
    ours = _prepared(ReliableSFTTrainer, AutoModelForCausalLM, SFTConfig, tiny_base, tmp_path, fast, data, 40)
    trl = _prepared(SFTTrainer, AutoModelForCausalLM, SFTConfig, tiny_base, tmp_path, fast, data, 40)
    assert len(ours) == len(trl) == len(rows)
    assert ours["input_ids"] == trl["input_ids"]
    assert ours["labels"] == trl["labels"]
    assert max(len(ids) for ids in ours["input_ids"]) == 40  # TRL still truncates the long row


def test_rows_it_cannot_reproduce_are_left_to_trl(tokenizer):
    chat = Dataset.from_list([{"prompt": [{"role": "user", "content": "hi"}],
                               "completion": [{"role": "assistant", "content": "yo"}]}])
    assert sft_ids(chat, tokenizer, "text") is None
    done = Dataset.from_list([{"prompt": "a", "chosen": "b", "rejected": "c", "chosen_ids": [1], "rejected_ids": [2]}])
    assert preference_ids(done, tokenizer) is None
    assert sft_ids(Dataset.from_list([{"input_ids": [1, 2]}]), tokenizer, "text") is None


@pytest.mark.parametrize("multiple", [None, 8])
@pytest.mark.parametrize("margin", [False, True])
def test_preference_collator_builds_trls_batches(multiple, margin):
    examples = [{"chosen_ids": [5, 6, 7], "rejected_ids": [8]}, {"chosen_ids": [9], "rejected_ids": [3, 4, 5, 6, 2]},
                {"chosen_ids": [1, 1], "rejected_ids": [7, 7]}]
    if margin:
        for index, example in enumerate(examples):
            example["margin"] = 0.5 * index
    ours = PreferenceCollator(pad_token_id=0, pad_to_multiple_of=multiple)(examples)
    trl = DataCollatorForPreference(pad_token_id=0, pad_to_multiple_of=multiple)(examples)
    assert ours.keys() == trl.keys()
    for key, value in trl.items():
        assert ours[key].dtype == value.dtype and torch.equal(ours[key], value), key
