"""DeepSpeed on this CPU-only machine without compiling any DeepSpeed op (imported by the 2-rank workers).

- ZeRO offload keeps the trainer's torch AdamW (`zero_force_ds_cpu_optimizer: false`) instead of
  DeepSpeed's CPU Adam, a C++ op compiled on first use (minutes, and a compiler on the machine).
- DeepSpeed's CPU backend compiles a shared-memory allreduce op at its first collective; marked
  unavailable, DeepSpeed uses torch.distributed's (gloo) collectives.
"""

import os

from accelerate.utils import DeepSpeedPlugin


def _accepting_torch_optimizers(post_init):
    def wrapper(self):
        post_init(self)
        self.deepspeed_config["zero_force_ds_cpu_optimizer"] = False

    return wrapper


DeepSpeedPlugin.__post_init__ = _accepting_torch_optimizers(DeepSpeedPlugin.__post_init__)

if os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true":
    import deepspeed.ops

    deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False
