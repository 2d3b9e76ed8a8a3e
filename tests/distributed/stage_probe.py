"""Run rlhf-recipes stages in one multi-process launch and record, per rank, what really ran.

    torchrun --nproc_per_node 2 tests/distributed/stage_probe.py PROBE_DIR STAGES_JSON

STAGES_JSON is a list of [stage, argv] run in order through the stages' own `main(argv)`. Each
trainer is caught when its `train()` starts; after every stage each rank writes
PROBE_DIR/<stage>-rank<r>.json: world size and rank as the trainer's Accelerator saw them (and the
local/node rank torchrun gave the process), the distributed type, the DeepSpeed ZeRO stage and offload
of the engine actually used (PPO: also the critic's engine), the global step, and a checksum of the
trained weights (equal on every rank when gradients were synchronised).
Under ZeRO offload the optimizer stays the Trainer's torch AdamW and DeepSpeed's CPU collectives are
torch.distributed's, so no DeepSpeed op is compiled (none needs a C++ compiler).
"""

import json
import os
import sys

import torch
import transformers

import cpu_deepspeed  # noqa: F401  (no DeepSpeed op compiled on this CPU machine)
from rank_exit import finish_rank

from rlhf_recipes.stages import reward
from rlhf_recipes.stages import sft
from rlhf_recipes.ppo import PPOTrainer
from rlhf_recipes.ppo import run as ppo_run

MAINS = {"sft": sft.main, "reward": reward.main, "ppo": ppo_run.main}
caught = []


def _catching(train):
    def wrapper(self, *args, **kwargs):
        caught.append(self)
        return train(self, *args, **kwargs)

    return wrapper


transformers.Trainer.train = _catching(transformers.Trainer.train)
PPOTrainer.train = _catching(PPOTrainer.train)


def _checksum(module: torch.nn.Module) -> float:
    """Sum of |w| over trainable weights; ZeRO-3 partitions are gathered first."""
    params = [p for p in module.parameters() if p.requires_grad]
    if hasattr(params[0], "ds_numel"):
        import deepspeed

        with deepspeed.zero.GatheredParameters(params):
            return float(sum(p.detach().float().abs().sum() for p in params))
    return float(sum(p.detach().float().abs().sum() for p in params))


def _engine(trainer) -> dict:
    return _engine_of(trainer.actor if isinstance(trainer, PPOTrainer) else trainer.model_wrapped)


def _engine_of(wrapped) -> dict:
    if type(wrapped).__name__ != "DeepSpeedEngine":
        return {"engine": type(wrapped).__name__}
    return {
        "engine": "DeepSpeedEngine",
        "zero_stage": wrapped.zero_optimization_stage(),
        "offload_optimizer": str(wrapped.zero_offload_optimizer().device) if wrapped.zero_offload_optimizer() else None,
        "optimizer": type(getattr(wrapped.optimizer, "optimizer", wrapped.optimizer)).__name__,
    }


def main() -> None:
    probe_dir, stages = sys.argv[1], json.loads(sys.argv[2])
    os.makedirs(probe_dir, exist_ok=True)
    for stage, argv in stages:
        MAINS[stage](argv)
        trainer = caught[-1]
        acc = trainer.accelerator
        model = trainer.actor if isinstance(trainer, PPOTrainer) else trainer.model_wrapped
        record = {
            "stage": stage,
            "num_processes": acc.num_processes,
            "process_index": acc.process_index,
            "local_rank": int(os.environ.get("LOCAL_RANK", -1)),
            "node_rank": int(os.environ.get("GROUP_RANK", -1)),  # set by torchrun: this machine's rank
            "distributed_type": str(acc.distributed_type).split(".")[-1],
            "global_step": trainer.state.global_step,
            "checksum": _checksum(model),
            **_engine(trainer),
        }
        if isinstance(trainer, PPOTrainer):
            record["world_batch_size"] = trainer.world_batch_size
            record["critic_engine"] = {key: value for key, value in _engine_of(trainer.critic).items()
                                       if key in ("engine", "zero_stage")}
        with open(os.path.join(probe_dir, f"{stage}-rank{acc.process_index}.json"), "w") as handle:
            json.dump(record, handle)
    finish_rank(caught[-1].accelerator)


if __name__ == "__main__":
    main()
