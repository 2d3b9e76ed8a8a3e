"""Shared tiny setup for the PPO tests.

They run tiny models on a shared 2-core box: one intra-op thread avoids oversubscription
(several threads per process made each tiny step 10-30x slower here).
"""

import os
import time

import pytest
import torch
from datasets import Dataset
from transformers import OPTConfig, OPTForCausalLM, OPTForSequenceClassification, TrainerCallback

from rlhf_recipes.models import build_word_tokenizer
from rlhf_recipes.ppo import PPOConfig

torch.set_num_threads(1)

WORDS = ["a", "b", "c", "d", "yes", "no", "x", "y"]


class Tiny:
    """A word tokenizer, 1-layer OPT policy/critic/RM factories, prompts and a 'say yes' reward."""

    def __init__(self):
        self.tokenizer = build_word_tokenizer(WORDS)
        self.yes = self.tokenizer.convert_tokens_to_ids("yes")

    def config(self, **overrides):
        tok = self.tokenizer
        base = dict(vocab_size=len(tok), hidden_size=32, num_hidden_layers=1, num_attention_heads=2, ffn_dim=64,
                    word_embed_proj_dim=32, max_position_embeddings=64, pad_token_id=tok.pad_token_id,
                    bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, num_labels=1, dropout=0.0)
        return OPTConfig(**dict(base, **overrides))

    def policy(self, seed=0):
        torch.manual_seed(seed)
        return OPTForCausalLM(self.config())

    def value(self, seed=1):
        torch.manual_seed(seed)
        return OPTForSequenceClassification(self.config())

    def dataset(self, n=48):
        letters = ["a", "b", "c", "d"]
        return Dataset.from_list([{"prompt": " ".join(letters[(i + k) % 4] for k in range(1 + i % 3)), "row": i}
                                  for i in range(n)])

    def reward_yes(self, prompts, completions, completion_ids, **kwargs):
        """Share of 'yes' tokens in the response."""
        return [sum(t == self.yes for t in ids) / len(ids) for ids in completion_ids]

    def args(self, output_dir, **overrides):
        base = dict(output_dir=str(output_dir), use_cpu=True, per_device_train_batch_size=16, num_mini_batches=2,
                    num_ppo_epochs=2, response_length=5, max_prompt_length=8, temperature=1.0, learning_rate=3e-3,
                    max_steps=2, save_strategy="no", report_to="none", disable_tqdm=True, sample_every=0,
                    kl_coef=0.01, seed=0)
        return PPOConfig(**dict(base, **overrides))


@pytest.fixture
def tiny():
    return Tiny()


class PauseAfterSave(TrainerCallback):
    """For the kill-and-resume tests of the multi-rank workers: each rank leaves its pid in
    OUTPUT_DIR/saved-<rank> after its first checkpoint (torchrun gives every rank its own session, so the
    test kills the ranks themselves) and waits."""

    def __init__(self, output_dir: str):
        self.output_dir = output_dir

    def on_save(self, args, state, control, **kwargs):
        path = os.path.join(self.output_dir, f"saved-{int(os.environ['RANK'])}")
        with open(path + ".tmp", "w") as handle:
            handle.write(str(os.getpid()))
        os.replace(path + ".tmp", path)
        time.sleep(600)

