"""A NaN/inf loss stops SFT and reward-model training with a clear error before the bad update,
so every saved checkpoint stays finite (PPO's skip-and-count is tested in tests/ppo)."""

import pytest
import torch
from datasets import Dataset
from safetensors.torch import load_file
from transformers import TrainerCallback
from trl import RewardConfig, SFTConfig

from rlhf_recipes.models import ModelArguments
from rlhf_recipes.stages.reward import train_reward
from rlhf_recipes.stages.sft import train_sft
from rlhf_recipes.stages.trainers import NonFiniteLossError

from reliability_helpers import CPU

ROWS = [{"prompt": f"Q: {i}? A:", "chosen": f" {i % 3}", "rejected": f" {i % 3 + 1}"} for i in range(16)]


class PoisonAtStep(TrainerCallback):
    """Sets one weight to NaN as step `step` begins, after the previous checkpoint was written."""

    def __init__(self, step: int):
        self.step = step

    def on_step_begin(self, args, state, control, model=None, **kwargs):
        if state.global_step + 1 == self.step:
            with torch.no_grad():
                next(p for p in model.parameters() if p.requires_grad).view(-1)[0] = float("nan")


@pytest.mark.parametrize("stage", ["sft", "reward"])
def test_a_nan_loss_stops_training_before_the_update_and_names_the_last_checkpoint(stage, tiny_dirs, tmp_path):
    settings = dict(output_dir=str(tmp_path), **CPU, max_length=32,
                    max_steps=4, per_device_train_batch_size=4, learning_rate=1e-3, save_strategy="steps", save_steps=2)
    model_args = ModelArguments(model_name_or_path=tiny_dirs["sft"])
    with pytest.raises(NonFiniteLossError, match=rf"Step 3: the gradient norm is nan.*{tmp_path}/checkpoint-2"):
        if stage == "sft":
            rows = [{"prompt": row["prompt"], "completion": row["chosen"]} for row in ROWS]
            train_sft(model_args, SFTConfig(**settings), Dataset.from_list(rows), callbacks=[PoisonAtStep(3)])
        else:
            train_reward(model_args, RewardConfig(**settings), Dataset.from_list(ROWS), callbacks=[PoisonAtStep(3)])

    assert sorted(p.name for p in tmp_path.glob("checkpoint-*")) == ["checkpoint-2"]
    saved = load_file(str(tmp_path / "checkpoint-2" / "model.safetensors"))
    assert all(torch.isfinite(tensor).all() for tensor in saved.values())
