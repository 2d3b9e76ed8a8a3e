"""Where PPO's four models live under each launch: one device / DDP, DeepSpeed ZeRO-2/3 or FSDP2
(docs/distributed_ppo.md; FSDP's own parts are in `fsdp`).

Under DeepSpeed the two trained models get one engine each, built by `accelerator.prepare(model, optimizer)`
from the launch config's plugin: each engine owns its optimizer, clips its own gradient norm and steps at
its own accumulation boundary, so actor and critic keep separate learning rates, schedulers and clipping.
The frozen reference and reward models are ZeRO-3 inference engines (sharded, no optimizer) under ZeRO-3
and whole copies on every rank under ZeRO-2, as TRL <= 1.11 prepared them. Under FSDP2 each model is
prepared on its own too, the trained ones with their optimizers, the frozen ones sharded without one.
"""

import copy
from contextlib import contextmanager, nullcontext

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType

from . import fsdp


def zero_stage(accelerator: Accelerator) -> int:
    """The launch's ZeRO stage; 0 when DeepSpeed is not used."""
    if accelerator.distributed_type != DistributedType.DEEPSPEED:
        return 0
    return int(accelerator.state.deepspeed_plugin.deepspeed_config["zero_optimization"]["stage"])


def prepare_trained(accelerator: Accelerator, model, optimizer, micro_batch_size: int, max_grad_norm: float | None):
    """(prepared model, prepared optimizer). Under DeepSpeed: an engine of its own, which steps
    `micro_batch_size` rows per backward and clips this model's gradient norm to `max_grad_norm`."""
    if zero_stage(accelerator):
        config = accelerator.state.deepspeed_plugin.deepspeed_config
        config["train_micro_batch_size_per_gpu"] = micro_batch_size
        config["gradient_clipping"] = max_grad_norm or 0.0
        config.pop("train_batch_size", None)  # derived again from the two values above
    if fsdp.is_fsdp(accelerator):
        return fsdp.prepare(accelerator, model, optimizer)
    return accelerator.prepare(model, optimizer)


def stepped_optimizer(prepared):
    """The torch optimizer whose param groups really step behind accelerate's wrapper (and, under
    DeepSpeed, behind the ZeRO optimizer): the one an LR scheduler must drive."""
    inner = prepared.optimizer
    return getattr(inner, "optimizer", inner) if not isinstance(inner, torch.optim.Optimizer) else inner


def prepare_frozen(accelerator: Accelerator, model):
    """A model used only for inference: sharded by a ZeRO-3 engine without optimizer under ZeRO-3, by
    FSDP2 under FSDP, else a whole copy on this rank's device. Returns the module to call (under FSDP,
    call the returned root itself: its forward gathers the weights no sub-module's forward does)."""
    if fsdp.is_fsdp(accelerator):
        return fsdp.prepare_frozen(accelerator, model)
    if zero_stage(accelerator) != 3:
        return model.to(accelerator.device)
    import deepspeed

    config = copy.deepcopy(accelerator.state.deepspeed_plugin.deepspeed_config)
    for training_only in ("optimizer", "scheduler", "gradient_clipping"):
        config.pop(training_only, None)
    config["zero_optimization"].pop("offload_optimizer", None)
    engine, *_ = deepspeed.initialize(model=model, config=config)
    engine.eval()
    return engine.module


def copy_model(model: torch.nn.Module) -> torch.nn.Module:
    """A trainable, independent copy of `model` (the reference from the policy, the critic from the reward
    model). A model that `from_pretrained` built already partitioned (ZeRO-3 with `zero3_init_flag`) is
    copied partitioned: `copy.deepcopy` alone would give empty tensors without DeepSpeed's attributes.
    Each module's weights are gathered and partitioned again in turn, children before their parents, so
    no rank ever holds more than one module's whole weights."""
    if not any(hasattr(p, "ds_id") for p in model.parameters()):
        return copy.deepcopy(model)
    import deepspeed
    from transformers.integrations import deepspeed_config

    copied = copy.deepcopy(model)
    source_of = {id(c): s for s, c in zip(model.parameters(), copied.parameters(), strict=True)}
    for module in reversed(list(copied.modules())):
        params = list(module.parameters(recurse=False))
        if not params or all(hasattr(p, "ds_id") for p in params):
            continue  # tied weights are partitioned with the first module that holds them
        for param in params:
            with deepspeed.zero.GatheredParameters([source_of[id(param)]]):
                param.data = source_of[id(param)].data.clone()
        deepspeed.zero.Init(module=module, config_dict_or_path=deepspeed_config(), mem_efficient_linear=False)
    return copied


def _parameter_offload(engine):
    """ZeRO-3's parameter manager of a training engine (it owns the per-module gather hooks)."""
    return engine.optimizer.parameter_offload


@contextmanager
def whole_weights(engine, stage: int):
    """Within: the engine's module holds its whole weights on every rank. Under ZeRO-3 they are
    gathered once and the per-module gather/release hooks are lifted, so a generation loop runs on
    plain tensors instead of gathering every layer for every token; an FSDP2 model is gathered once
    (`fsdp.whole_weights`); elsewhere this does nothing."""
    if stage != 3:
        with fsdp.whole_weights(engine) if fsdp.is_sharded(engine) else nullcontext():
            yield
        return
    import deepspeed

    offload = _parameter_offload(engine)
    with deepspeed.zero.GatheredParameters(list(engine.module.parameters())):
        for hook in offload.forward_hooks + offload.backward_hooks:
            hook.remove()
        offload.forward_hooks, offload.backward_hooks = [], []
        try:
            yield
        finally:
            for param in engine.module.parameters():
                param.ds_active_sub_modules.clear()
            offload._register_deepspeed_module(engine.module)


def gathered_for_reading(modules, stage: int):
    """Gather ZeRO-3 shards of `modules` (read-only, e.g. to save them whole); nothing elsewhere."""
    if stage != 3:
        return nullcontext()
    import deepspeed

    return deepspeed.zero.GatheredParameters([p for m in modules for p in m.parameters()])
