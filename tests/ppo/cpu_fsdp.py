"""accelerate's FSDP2 path on this CPU-only machine (imported by the 2-rank FSDP workers).

accelerate turns an FSDP launch into FSDP only on accelerators: on CPUs `AcceleratorState` keeps
MULTI_CPU (DDP over gloo) and ignores the plugin. torch's own FSDP2 (`fully_shard`) runs over a gloo
mesh, so after accelerate has set up the processes this marks the state FSDP with the launch's plugin;
`accelerator.prepare` then shards with accelerate's own `fsdp2_prepare_model`, as it would on GPUs.
"""

from accelerate.state import AcceleratorState, PartialState
from accelerate.utils import DistributedType

_init = AcceleratorState.__init__


def _fsdp_on_cpu(self, *args, fsdp_plugin=None, **kwargs):
    _init(self, *args, fsdp_plugin=fsdp_plugin, **kwargs)
    if fsdp_plugin is not None and self.distributed_type == DistributedType.MULTI_CPU:
        self.distributed_type = PartialState._shared_state["distributed_type"] = DistributedType.FSDP
        self.fsdp_plugin = fsdp_plugin


AcceleratorState.__init__ = _fsdp_on_cpu
