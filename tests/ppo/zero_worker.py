"""Run by test_ppo_zero.py on 2 ranks: a tiny fp32 PPO run under whatever the launcher set up (DDP
through torchrun, or DeepSpeed ZeRO-2/3 through `accelerate launch --config_file`).

    zero_worker.py OUTPUT_DIR MAX_STEPS [resume | pause_after_first_save]

Policy, critic and reward model are tiny OPTs; the reference is the trainer's frozen copy of the
policy; separate actor/critic learning rates and clipping. Every rank writes OUTPUT_DIR/rank<r>.json:
world size, distributed type, the classes and ZeRO stage of what the trainer built, how often the
ZeRO-3 actor was gathered for sampling and how many per-module fetches ran while sampling, and sums
of the final actor and critic weights (gathered under ZeRO-3). `pause_after_first_save`: after the
first checkpoint, both ranks write their pid to OUTPUT_DIR/saved-<rank> and wait to be killed.
"""

import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.join(os.path.dirname(HERE), "distributed")]
import cpu_deepspeed  # noqa: E402,F401  (no DeepSpeed op compiled on this CPU machine)
from conftest import PauseAfterSave, Tiny  # noqa: E402
from rank_exit import finish_rank  # noqa: E402

from rlhf_recipes.ppo import PPOTrainer, engines, rollout  # noqa: E402

output_dir, max_steps = sys.argv[1], int(sys.argv[2])
mode = sys.argv[3] if len(sys.argv) > 3 else None

tiny = Tiny()
args = tiny.args(output_dir, max_steps=max_steps, per_device_train_batch_size=4, num_mini_batches=2, num_ppo_epochs=2,
                 gradient_accumulation_steps=2, save_strategy="steps", save_steps=2, max_grad_norm=0.5,
                 critic_learning_rate=1e-3, resume_from_checkpoint=mode == "resume" or None)
trainer = PPOTrainer(args, tiny.tokenizer, tiny.policy(), value_model=tiny.value(), reward_model=tiny.value(seed=5),
                     reward_funcs=[tiny.reward_yes], train_dataset=tiny.dataset(),
                     callbacks=[PauseAfterSave(output_dir)] if mode == "pause_after_first_save" else None)
acc = trainer.accelerator
assert acc.num_processes == 2, acc.num_processes

counts = {"whole_weight_gathers": 0, "fetches_while_sampling": 0, "fetches_otherwise": 0}
if trainer.zero_stage == 3:
    sampling = [False]
    coordinator = type(trainer.actor.optimizer.parameter_offload.get_param_coordinator())
    fetch, sample, whole = coordinator.fetch_sub_module, rollout.sample_responses, engines.whole_weights

    def counting_fetch(self, *a, **k):
        counts["fetches_while_sampling" if sampling[0] else "fetches_otherwise"] += 1
        return fetch(self, *a, **k)

    def flagged_sample(*a, **k):
        sampling[0] = True
        try:
            return sample(*a, **k)
        finally:
            sampling[0] = False

    def counting_whole(*a, **k):
        counts["whole_weight_gathers"] += 1
        return whole(*a, **k)

    coordinator.fetch_sub_module = counting_fetch
    rollout.sample_responses, engines.whole_weights = flagged_sample, counting_whole
trainer.train()
trainer.save_model()

with engines.gathered_for_reading([trainer.unwrapped_actor, trainer.unwrapped_critic], trainer.zero_stage):
    sums = {name: float(sum(p.detach().double().abs().sum() for p in module.parameters()))
            for name, module in (("actor", trainer.unwrapped_actor), ("critic", trainer.unwrapped_critic.model))}
record = {
    "num_processes": acc.num_processes,
    "distributed_type": str(acc.distributed_type).split(".")[-1],
    "actor": type(trainer.actor).__name__,
    "critic": type(trainer.critic).__name__,
    "ref": type(trainer.ref_model).__name__,
    # True when this rank holds only its shard of the frozen reference's weights
    "ref_sharded": all(getattr(p, "ds_tensor", p).numel() < p.numel() or p.numel() == 0 if hasattr(p, "ds_numel")
                       else False for p in trainer.ref_model.parameters() if p.dim() > 1),
    "zero_stage": trainer.zero_stage,
    "global_step": trainer.state.global_step,
    "lr": [trainer.actor_scheduler.get_last_lr()[0], trainer.critic_scheduler.get_last_lr()[0]],
    **counts,
    **{f"sum/{k}": v for k, v in sums.items()},
}
with open(os.path.join(output_dir, f"rank{acc.process_index}.json"), "w") as handle:
    json.dump(record, handle)
finish_rank(acc)
