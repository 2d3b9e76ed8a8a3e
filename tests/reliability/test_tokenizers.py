"""Tokenizers that are missing parts, or that differ between the policy and the reward model."""

import json
from pathlib import Path

import pytest
import torch
from datasets import Dataset
from transformers import AutoTokenizer
from trl import SFTConfig

from rlhf_recipes.data import DataArguments
from rlhf_recipes.models import FALLBACK_CHAT_TEMPLATE, ModelArguments, build_byte_tokenizer, build_word_tokenizer
from rlhf_recipes.models import load_model, load_tokenizer
from rlhf_recipes.ppo import PPOConfig
from rlhf_recipes.ppo.run import run_ppo
from rlhf_recipes.stages.sft import train_sft

from reliability_helpers import CPU, read_jsonl


def test_a_tokenizer_without_pad_token_or_chat_template_trains_chat_sft(tiny_dirs, tmp_path):
    bare = build_byte_tokenizer()
    bare.pad_token, bare.chat_template = None, None
    bare.save_pretrained(tmp_path / "bare")
    reloaded = AutoTokenizer.from_pretrained(tmp_path / "bare")
    assert reloaded.pad_token is None and reloaded.chat_template is None
    model_args = ModelArguments(model_name_or_path=tiny_dirs["sft"], tokenizer_name_or_path=str(tmp_path / "bare"))
    rows = [{"prompt": [{"role": "user", "content": f"colour {i}?"}],
             "completion": [{"role": "assistant", "content": ["red", "blue"][i % 2]}]} for i in range(8)]
    args = SFTConfig(output_dir=str(tmp_path / "out"), **CPU,
                     max_length=64, max_steps=2, per_device_train_batch_size=4, save_strategy="no")

    trainer = train_sft(model_args, args, Dataset.from_list(rows))

    assert trainer.state.global_step == 2
    saved = AutoTokenizer.from_pretrained(tmp_path / "out")  # later stages get a complete tokenizer
    assert saved.pad_token == saved.eos_token == "</s>"
    assert saved.chat_template == FALLBACK_CHAT_TEMPLATE
    assert "Human: colour 1?" in saved.apply_chat_template(rows[1]["prompt"], tokenize=False)


def test_a_tokenizer_without_pad_or_eos_token_is_refused_with_the_fix(tmp_path):
    bare = build_byte_tokenizer()
    bare.pad_token, bare.eos_token = None, None
    bare.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="has neither a pad nor an EOS token; set one"):
        load_tokenizer(ModelArguments(model_name_or_path=str(tmp_path)))


def test_ppo_scores_with_a_reward_model_whose_tokenizer_differs(tiny_dirs, short_pairs, tmp_path):
    words = sorted({word for row in read_jsonl(Path(short_pairs)) for text in row.values()
                    for word in text.split()})
    rm_tokenizer = build_word_tokenizer(words)
    rm_args = ModelArguments(model_name_or_path="tiny:opt")
    torch.manual_seed(0)
    reward_model = load_model(rm_args, rm_tokenizer, task="seq-cls")
    reward_model.save_pretrained(tmp_path / "rm")
    rm_tokenizer.save_pretrained(tmp_path / "rm")
    args = PPOConfig(output_dir=str(tmp_path / "ppo"), **CPU,
                     sft_model_path=tiny_dirs["sft"], reward_model_path=str(tmp_path / "rm"), max_steps=2,
                     per_device_train_batch_size=4, num_mini_batches=1, num_ppo_epochs=1, response_length=4,
                     max_prompt_length=32, sample_every=0, save_strategy="no")
    data_args = DataArguments(dataset_name=short_pairs, data_split="0,0,1", eval_split_size=0)

    trainer = run_ppo(ModelArguments(), data_args, args)

    # byte ids (up to 259) would overflow the word-level RM's embeddings: it only sees its own tokens
    assert reward_model.config.vocab_size == len(rm_tokenizer) < 100
    assert trainer.scorer.reward_tokenizer.get_vocab() == rm_tokenizer.get_vocab()
    assert trainer.unwrapped_critic.model.config.vocab_size == len(trainer.processing_class)  # from the policy
    log = [json.loads(line) for line in (tmp_path / "ppo" / "ppo_log.jsonl").read_text().splitlines()]
    assert [row["skipped"] for row in log] == [False, False]
