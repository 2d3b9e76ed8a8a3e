"""Run by test_ppo_zero_recipes.py on 2 ranks: the PPO recipe (`rlhf_recipes.ppo.run.main(argv)`) under whatever
`accelerate launch --config_file` set up, recording per rank what the trainer really built.

    zero_recipe_worker.py RECORD_DIR ARGV_JSON

RECORD_DIR/rank<r>.json: world size, distributed type, both engines, ZeRO stage, where the actor's optimizer
states and parameters live (offload), the optimizer class that steps, whether the frozen reference holds only
a shard, and sums of |w| of the final actor (gathered under ZeRO-3). With `ema`: the number of EMA updates, and
how far the trainer's EMA is from the raw actor, from its starting weights and from an independent float64
recomputation (ema <- d * ema + (1 - d) * actor after every optimizer step, read from the live module).
"""

import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "distributed"))
import cpu_deepspeed  # noqa: E402,F401  (no DeepSpeed op compiled on this CPU machine)
from rank_exit import finish_rank  # noqa: E402

from rlhf_recipes.ppo import PPOTrainer, engines  # noqa: E402
from rlhf_recipes.ppo import run as ppo_run  # noqa: E402

record_dir, argv = sys.argv[1], json.loads(sys.argv[2])
caught, ema_check = [], {"updates": 0}
train, update_ema = PPOTrainer.train, PPOTrainer._update_ema


def catching_train(self, *args, **kwargs):
    caught.append(self)
    if self.ema is not None:
        ema_check["start"] = [p.detach().double().clone() for p in self.ema.parameters()]
        ema_check["shadow"] = [t.clone() for t in ema_check["start"]]
    return train(self, *args, **kwargs)


def checked_update_ema(self):
    decay, live = self.args.ema_decay, dict(self.unwrapped_actor.named_parameters())
    names = [name for name, _ in self.ema.named_parameters()]
    for shadow, name in zip(ema_check["shadow"], names, strict=True):
        shadow.mul_(decay).add_(live[name].detach().double(), alpha=1 - decay)
    ema_check["updates"] += 1
    return update_ema(self)


PPOTrainer.train, PPOTrainer._update_ema = catching_train, checked_update_ema


def _max_diff(a, b) -> float:
    return max(float((x.double() - y.double()).abs().max()) for x, y in zip(a, b, strict=True))


def _abs_sum(tensors) -> float:
    return float(sum(t.detach().double().abs().sum() for t in tensors))


def main() -> None:
    ppo_run.main(argv)
    trainer = caught[-1]
    acc, actor = trainer.accelerator, trainer.actor
    stage = trainer.zero_stage
    record = {
        "num_processes": acc.num_processes,
        "distributed_type": str(acc.distributed_type).split(".")[-1],
        "actor": type(actor).__name__,
        "critic": type(trainer.critic).__name__,
        "zero_stage": stage,
        "critic_zero_stage": trainer.critic.zero_optimization_stage() if stage else 0,
        "global_step": trainer.state.global_step,
    }
    if stage:
        offload_optimizer, offload_param = actor.zero_offload_optimizer(), actor.zero_offload_param()
        record.update(
            offload_optimizer=str(offload_optimizer.device) if offload_optimizer else None,
            offload_param=str(offload_param.device) if offload_param else None,
            optimizer=type(engines.stepped_optimizer(trainer.actor_optimizer)).__name__,
            ref_sharded=all(p.ds_tensor.numel() < p.ds_numel for p in trainer.ref_model.parameters()
                            if hasattr(p, "ds_tensor") and p.ds_numel >= 2 * acc.num_processes),
        )
    with engines.gathered_for_reading([trainer.unwrapped_actor], stage):
        actor_params = [p.detach().double().clone() for p in trainer.unwrapped_actor.parameters()]
    record["sum/actor"] = _abs_sum(actor_params)
    if trainer.ema is not None:
        ema = list(trainer.ema.parameters())
        record.update({
            "ema_updates": ema_check["updates"],
            "sum/ema": _abs_sum(ema),
            "ema_minus_actor": _max_diff(ema, actor_params),
            "ema_minus_start": _max_diff(ema, ema_check["start"]),
            "ema_minus_recomputed": _max_diff(ema, ema_check["shadow"]),
            "start_minus_recomputed": _max_diff(ema_check["start"], ema_check["shadow"]),
        })
    with open(os.path.join(record_dir, f"rank{acc.process_index}.json"), "w") as handle:
        json.dump(record, handle)
    finish_rank(acc)


if __name__ == "__main__":
    main()
