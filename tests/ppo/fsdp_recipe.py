"""Run by test_ppo_fsdp.py on 2 ranks under `accelerate launch --config_file accelerate_configs/fsdp.yaml`: the PPO
recipe (`rlhf-recipes ppo`, what recipes/ppo.py runs) with accelerate's FSDP2 path forced on for CPUs (cpu_fsdp.py).

    fsdp_recipe.py PROBE_DIR --config recipes/tiny/ppo.yaml [--field value ...]

Before the trainer saves, every rank writes PROBE_DIR/rank<r>.json: world size, distributed type, the classes of
the actor and the critic, and the step reached.
"""

import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE]
import cpu_fsdp  # noqa: E402,F401  (accelerate's FSDP2 path on CPUs)

from rlhf_recipes.cli import run  # noqa: E402
from rlhf_recipes.ppo import PPOTrainer  # noqa: E402

probe_dir, argv = sys.argv[1], sys.argv[2:]
save_model = PPOTrainer.save_model


def recording_save_model(self, *args, **kwargs):
    acc = self.accelerator
    record = {"num_processes": acc.num_processes, "distributed_type": str(acc.distributed_type).split(".")[-1],
              "actor": type(self.actor).__name__, "critic": type(self.critic).__name__,
              "global_step": self.state.global_step}
    with open(os.path.join(probe_dir, f"rank{acc.process_index}.json"), "w") as handle:
        json.dump(record, handle)
    return save_model(self, *args, **kwargs)


PPOTrainer.save_model = recording_save_model
sys.exit(run("ppo", argv))
