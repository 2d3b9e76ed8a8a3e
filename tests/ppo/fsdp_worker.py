"""Run by test_ppo_fsdp.py on 2 ranks under `accelerate launch --config_file accelerate_configs/fsdp.yaml`: the
tiny fp32 PPO run of zero_worker.py, sharded by accelerate's FSDP2 path (forced on for CPUs by cpu_fsdp.py).

    fsdp_worker.py OUTPUT_DIR MAX_STEPS [resume | pause_after_first_save | lora]

`lora`: LoRA actor, LoRA critic sharing the reward model's weights, PPO-ptx. Every rank writes
OUTPUT_DIR/rank<r>.json: world size, distributed type, the classes of what the trainer built and whether
each model's weights are sharded, the FSDP all-gathers made entering the rollout's gather, while sampling
and elsewhere, and sums of the final actor and critic weights (whole, gathered).
`pause_after_first_save`: after the first checkpoint, both ranks write their pid to OUTPUT_DIR/saved-<rank>
and wait to be killed. With CUDA (benchmarks/gpu_check.sh) it runs on the GPUs through accelerate's own FSDP
path, on EXPECTED_RANKS ranks (default 2), in the launch's `--mixed_precision` (the tests: no).
"""

import json
import os
import sys

import torch
from peft import LoraConfig
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
from torch.distributed.fsdp._fully_shard import _fsdp_param_group
from torch.distributed.tensor import DTensor

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.join(os.path.dirname(HERE), "distributed")]
import cpu_fsdp  # noqa: E402,F401  (accelerate's FSDP2 path on CPUs)
from conftest import PauseAfterSave, Tiny  # noqa: E402
from rank_exit import finish_rank  # noqa: E402

from rlhf_recipes.ppo import PPOTrainer, engines, rollout  # noqa: E402

output_dir, max_steps = sys.argv[1], int(sys.argv[2])
mode = sys.argv[3] if len(sys.argv) > 3 else None

tiny = Tiny()
lora = mode == "lora"
overrides = dict(critic_use_peft=True, ptx_coef=0.5) if lora else {}
args = tiny.args(output_dir, max_steps=max_steps, per_device_train_batch_size=4, num_mini_batches=2, num_ppo_epochs=2,
                 gradient_accumulation_steps=2, save_strategy="steps", save_steps=2, max_grad_norm=0.5,
                 critic_learning_rate=1e-3, resume_from_checkpoint=mode == "resume" or None,
                 use_cpu=not torch.cuda.is_available(),
                 bf16=os.environ.get("ACCELERATE_MIXED_PRECISION") == "bf16", **overrides)  # the launch's precision
models = dict(value_model=tiny.value(), reward_model=tiny.value(seed=5))
if lora:
    models = dict(reward_model=tiny.value(seed=5), ptx_dataset=tiny.dataset().rename_column("prompt", "text"),
                  peft_config=LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
trainer = PPOTrainer(args, tiny.tokenizer, tiny.policy(), reward_funcs=[tiny.reward_yes], train_dataset=tiny.dataset(),
                     callbacks=[PauseAfterSave(output_dir)] if mode == "pause_after_first_save" else None, **models)
acc = trainer.accelerator
assert acc.num_processes == int(os.environ.get("EXPECTED_RANKS", "2")), acc.num_processes

counts = {"whole_weight_gathers": 0, "all_gathers_entering": 0, "all_gathers_while_sampling": 0,
          "all_gathers_otherwise": 0}
phase = ["otherwise"]
all_gather, sample, whole = _fsdp_param_group.foreach_all_gather, rollout.sample_responses, engines.whole_weights


def counting_all_gather(*a, **k):
    counts[f"all_gathers_{phase[0]}"] += 1
    return all_gather(*a, **k)


def flagged_sample(*a, **k):
    phase[0] = "while_sampling"
    try:
        return sample(*a, **k)
    finally:
        phase[0] = "otherwise"


class CountingWhole:
    def __init__(self, *a, **k):
        counts["whole_weight_gathers"] += 1
        self.context = whole(*a, **k)

    def __enter__(self):
        phase[0] = "entering"
        try:
            return self.context.__enter__()
        finally:
            phase[0] = "otherwise"

    def __exit__(self, *exc):
        return self.context.__exit__(*exc)


_fsdp_param_group.foreach_all_gather = counting_all_gather
rollout.sample_responses, engines.whole_weights = flagged_sample, CountingWhole
trainer.train()
trainer.save_model()


def sums(module) -> tuple[float, float]:
    """Sums of |w| over the whole (gathered) weights of `module` and over its trainable ones, each weight once
    (a tied embedding appears under two names in the state dict, once in named_parameters)."""
    state = get_model_state_dict(module, options=StateDictOptions(full_state_dict=True))
    params = dict(module.named_parameters())
    total = sum(float(state[name].double().abs().sum()) for name in params)
    return total, sum(float(state[name].double().abs().sum()) for name, p in params.items() if p.requires_grad)


def sharded(module) -> bool:
    """Every weight of `module` is a DTensor, and this rank holds a part of their elements only."""
    params = list(module.parameters())
    local = sum(p.to_local().numel() for p in params if isinstance(p, DTensor))
    return all(isinstance(p, DTensor) for p in params) and local < sum(p.numel() for p in params)


(actor_sum, actor_trainable), (critic_sum, _) = sums(trainer.actor), sums(trainer.critic)
record = {
    "num_processes": acc.num_processes,
    "distributed_type": str(acc.distributed_type).split(".")[-1],
    "actor": type(trainer.actor).__name__,
    "critic": type(trainer.critic).__name__,
    "ref": type(trainer.ref_model).__name__ if trainer.ref_model is not None else None,
    "reward": type(trainer.scorer.reward_model).__name__,
    "sharded": {name: sharded(module) for name, module in (
        ("actor", trainer.actor), ("critic", trainer.critic), ("ref", trainer.ref_model),
        ("reward", trainer.scorer.reward_model)) if module is not None},
    "global_step": trainer.state.global_step,
    **counts,
    "sum/actor": actor_sum,
    "sum/actor_trainable": actor_trainable,
    "sum/critic": critic_sum,
}
with open(os.path.join(output_dir, f"rank{acc.process_index}.json"), "w") as handle:
    json.dump(record, handle)
finish_rank(acc)
