"""PPO's models under FSDP2 (`torch.distributed.fsdp.fully_shard`, accelerate's FSDP plugin with
`fsdp_version: 2`; docs/distributed_ppo.md).

accelerate shards one model per `prepare` call under FSDP2, so the actor and the critic are each prepared
with their own optimizer (separate learning rates, schedulers and clipping, as under DDP), the frozen
reference and reward models without one (sharded for inference). What FSDP2 does not give by itself:
- sampling on weights gathered once per rollout (`whole_weights`): by default every sharding unit gathers
  its weights before and frees them after each forward, i.e. once per generated token;
- a consolidated state dict for `save_pretrained` (`full_state_dict`) and a checkpoint of each rank's
  shard of the weights and optimizer states (`save_sharded` / `load_sharded`, torch.distributed.checkpoint).
"""

from contextlib import contextmanager

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType


def is_fsdp(accelerator: Accelerator) -> bool:
    return accelerator.distributed_type == DistributedType.FSDP


def is_sharded(module) -> bool:
    """Whether `module` is the root of an FSDP2-sharded model."""
    from torch.distributed.fsdp import FSDPModule

    return isinstance(module, FSDPModule)


def prepare(accelerator: Accelerator, *objects):
    """`accelerator.prepare(model[, optimizer])` with the launch's wrap policy resolved for this model:
    accelerate fixes the transformer-layer classes to wrap at the first model it prepares, so a critic of
    another architecture than the actor would otherwise be sharded as one unit."""
    plugin = accelerator.state.fsdp_plugin
    policy, names = plugin.auto_wrap_policy, plugin.transformer_cls_names_to_wrap
    try:
        return accelerator.prepare(*objects)
    finally:
        plugin.auto_wrap_policy, plugin.transformer_cls_names_to_wrap = policy, names


def prepare_frozen(accelerator: Accelerator, model):
    """`prepare` for a model that only runs no-grad forwards, with every unit sharded again after each of
    them: accelerate keeps the root and the embedding/norm/head unit whole after a forward (a trained model
    reshards them after its backward), which for a frozen model would hold them whole for good."""
    model = prepare(accelerator, model)
    model.set_reshard_after_forward(True)
    return model


def _units(model) -> list:
    from torch.distributed.fsdp import FSDPModule

    return [m for m in model.modules() if isinstance(m, FSDPModule)]


@contextmanager
def whole_weights(model):
    """Within: every sharding unit of `model` holds its whole weights, gathered once on entry (one
    all-gather per unit) and kept through every forward pass, then sharded again on exit. FSDP2 would
    otherwise free a unit's weights after each forward, and a generation loop would gather the model
    once per token. The root is left as it is: after its first forward FSDP2 no longer reshards it."""
    units = _units(model)
    inner = [unit for unit in units if unit is not model]
    # torch has no getter for a unit's reshard-after-forward setting (accelerate gives the decoder layers
    # the plugin's value, the embedding/norm/head unit False): keep each group's setting to restore it
    saved = [[group.post_forward_mesh_info for group in unit._get_fsdp_state()._fsdp_param_groups] for unit in inner]
    for unit in inner:
        unit.set_reshard_after_forward(False, recurse=False)
    try:
        for unit in units:
            unit.unshard()
        yield
    finally:
        for unit, infos in zip(inner, saved, strict=True):
            for group, info in zip(unit._get_fsdp_state()._fsdp_param_groups, infos, strict=True):
                group.post_forward_mesh_info = info
        for unit in units:
            unit.reshard()


def full_state_dict(model) -> dict:
    """The whole state dict of a sharded `model` on the main rank, in CPU memory ({} on the other ranks).
    Every rank must call this (it gathers)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def _state(model, optimizer) -> dict:
    """This rank's shards of the trainable weights and of their optimizer states. Frozen weights (a LoRA
    model's base) are left out: they are the ones the run started from."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

    model_state, optimizer_state = get_state_dict(model, optimizer, options=StateDictOptions(ignore_frozen_params=True))
    return {"model": model_state, "optimizer": optimizer_state}


def save_sharded(model, optimizer: torch.optim.Optimizer, path: str) -> None:
    """Every rank writes its shard of `model`'s trainable weights and of `optimizer`'s states to `path`
    (torch.distributed.checkpoint: one file per rank and the metadata). Every rank must call this."""
    import torch.distributed.checkpoint as dcp

    dcp.save(_state(model, optimizer), checkpoint_id=path)


def load_sharded(model, optimizer: torch.optim.Optimizer, path: str) -> None:
    """Restore what `save_sharded` wrote, each rank its shard (same number of ranks). A key of this
    model missing from the checkpoint is an error of `dcp.load`; frozen weights are not read."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

    state = _state(model, optimizer)
    dcp.load(state, checkpoint_id=path)
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"],
                   options=StateDictOptions(ignore_frozen_params=True, strict=False))
