"""Run by test_ppo_ddp.py under `torchrun --nproc_per_node 2`: a short PPO run on two CPU ranks.

Rank 1's reward function returns NaN on its second rollout only, so both ranks must agree to
skip that update (a rank deciding alone would hang the other in the next collective). PPO-ptx
is on: its per-rank batches differ, so its gradients must be all-reduced for the ranks to agree.
Each rank records how many packed microbatches each of its minibatches took: ranks may differ, and the
gradients are still all-reduced once per minibatch. With `lora_critic` as the second argument, the policy is
LoRA and the critic is the reward model with a LoRA adapter (`critic_use_peft`), scoring with that adapter
disabled.
"""

import os
import sys

import torch
from datasets import Dataset
from peft import LoraConfig

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from conftest import Tiny  # noqa: E402

from rlhf_recipes.ppo import PPOTrainer, PtxCallback, microbatches  # noqa: E402

output_dir = sys.argv[1]
lora_critic = sys.argv[2:] == ["lora_critic"]
rank = int(os.environ["RANK"])
tiny = Tiny()
calls = {"n": 0}
packed_counts = []
unpacked_chunks = microbatches.chunks


def recording_chunks(*args, pack=False, **kwargs):
    parts = unpacked_chunks(*args, pack=pack, **kwargs)
    if pack:
        packed_counts.append(len(parts))
    return parts


microbatches.chunks = recording_chunks


def reward(prompts, completions, completion_ids, **kwargs):
    calls["n"] += 1
    if rank == 1 and calls["n"] == 2:
        return [float("nan")] * len(prompts)
    return tiny.reward_yes(prompts, completions, completion_ids)


ptx = Dataset.from_list([{"text": t} for t in ("yes no yes", "a b c d", "x y x y", "no no", "c d a")])
# prompts of 1 or 12 words (tokens): in a minibatch of 4 rows and gradient_accumulation_steps 4, two short rows
# (6 tokens with the response) pack into one microbatch, a long one (17) takes its own: 2 to 4 per minibatch
prompts = Dataset.from_list([{"prompt": " ".join("abcd"[(i + k) % 4] for k in range(1 if i % 3 else 12)), "row": i}
                             for i in range(48)])
args = tiny.args(output_dir, max_steps=3, per_device_train_batch_size=8, num_mini_batches=2,
                 gradient_accumulation_steps=4, max_prompt_length=16, save_strategy="steps", save_steps=3, ema=True,
                 critic_use_peft=lora_critic)
models = dict(value_model=tiny.value())
if lora_critic:
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    models = dict(reward_model=tiny.value(seed=5), peft_config=lora)
trainer = PPOTrainer(args, tiny.tokenizer, tiny.policy(), reward_funcs=[reward], train_dataset=prompts,
                     callbacks=[PtxCallback(ptx, 0.5)], **models)
assert trainer.accelerator.num_processes == 2, trainer.accelerator.num_processes
initial = {k: v.clone() for k, v in trainer.unwrapped_actor.state_dict().items()}
initial_critic = {k: v.clone() for k, v in trainer.unwrapped_critic.state_dict().items()}
trainer.train()
trainer.save_model()
torch.save(
    {
        "world_size": trainer.accelerator.num_processes,
        "initial": initial,
        "initial_critic": initial_critic,
        "actor": trainer.unwrapped_actor.state_dict(),
        "critic": trainer.unwrapped_critic.state_dict(),
        "ema": trainer.ema.state_dict(),
        "packed_counts": packed_counts,
    },
    os.path.join(output_dir, f"rank{rank}.pt"),
)
