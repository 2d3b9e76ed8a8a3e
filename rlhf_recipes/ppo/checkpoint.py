"""What a PPO checkpoint holds beyond `rlhf_recipes.artifacts.checkpointing` (staging, COMPLETE marker,
`latest` pointer, rotation and resume rules, shared with SFT and the reward model).

Layout of `output_dir/checkpoint-<step>/`: `actor/` (model or LoRA adapter, save_pretrained, and the
tokenizer), `critic/` (model, or with `critic_use_peft` its LoRA adapter and `score` head), `ema/` (when
enabled), `optimizer_{actor,critic}.pt`, `scheduler_{actor,critic}.pt`, `trainer_state.json`
(global step, episode, KL coefficient, reward statistics, log history), `rng_state_<rank>.pth`,
and the `COMPLETE` marker. Under DeepSpeed, `actor_engine/` and `critic_engine/` replace the weights
and optimizer files: DeepSpeed's own checkpoint of each engine, in which every rank writes its shard of
the weights and optimizer states (resume with the same number of ranks); under FSDP, `actor_fsdp/` and
`critic_fsdp/` do the same with torch.distributed.checkpoint (each rank's shard of the trainable weights
and of their optimizer states). A checkpoint is written into
`.tmp-checkpoint-<step>`, marked complete, then renamed into place; the `latest` pointer file is
replaced last. Resume only ever reads directories that carry the marker.
"""

import glob
import os
import random

import numpy as np
import torch
from safetensors.torch import load_file

from ..config.parsing import ConfigError
from . import fsdp


def save_rng_state(path: str, rank: int) -> None:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    torch.save(state, os.path.join(path, f"rng_state_{rank}.pth"))


def load_rng_state(path: str, rank: int) -> None:
    file = os.path.join(path, f"rng_state_{rank}.pth")
    if not os.path.isfile(file):
        raise ConfigError(f"{path} has no RNG state for rank {rank}; resume with the same number of processes.")
    state = torch.load(file, weights_only=False)
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def load_weights(model, path: str) -> None:
    """Load what `save_pretrained` wrote to `path` into `model` in place (LoRA adapter or full model)."""
    if os.path.isfile(os.path.join(path, "adapter_model.safetensors")):
        from peft import set_peft_model_state_dict

        result = set_peft_model_state_dict(model, load_file(os.path.join(path, "adapter_model.safetensors")))
        if result.unexpected_keys:
            raise ValueError(f"Adapter in {path} does not match the model: {result.unexpected_keys[:5]}")
        return
    weights = {}
    for file in sorted(glob.glob(os.path.join(path, "*.safetensors"))):
        weights.update(load_file(file))
    if not weights:
        raise ValueError(f"No safetensors weights in {path}.")
    missing, unexpected = model.load_state_dict(weights, strict=False)
    own = model.state_dict()
    loaded = {own[key].data_ptr() for key in weights if key in own}
    untied = [key for key in missing if own[key].data_ptr() not in loaded]
    if unexpected or untied:
        raise ValueError(
            f"Weights in {path} do not match the model: missing {untied[:5]}, unexpected {unexpected[:5]}."
        )


ENGINE_TAG = "state"


def _engine_dir(path: str, name: str) -> str:
    return os.path.join(path, f"{name}_engine")


def save_engine(engine, path: str, name: str) -> None:
    """DeepSpeed checkpoint of one engine into path/<name>_engine (every rank calls this). Frozen
    weights (a LoRA model's base) are left out: they are the ones the run started from."""
    frozen = any(not p.requires_grad for p in engine.module.parameters())
    engine.save_checkpoint(_engine_dir(path, name), tag=ENGINE_TAG, exclude_frozen_parameters=frozen)


def load_engine(engine, path: str, name: str) -> None:
    """Restore weights and optimizer states saved by `save_engine` (every rank calls this)."""
    if not os.path.isdir(_engine_dir(path, name)):
        raise ConfigError(f"{path} holds no DeepSpeed state for the {name} ({name}_engine/): it was written by a run "
                          "launched without DeepSpeed; resume it with that launch config.")
    loaded, _ = engine.load_checkpoint(_engine_dir(path, name), tag=ENGINE_TAG, load_module_strict=False,
                                       load_optimizer_states=True, load_lr_scheduler_states=False)
    if loaded is None:
        raise ConfigError(f"DeepSpeed could not load the {name}'s state from {_engine_dir(path, name)}.")


def _sharded_dir(path: str, name: str) -> str:
    return os.path.join(path, f"{name}_fsdp")


def save_sharded(model, optimizer, path: str, name: str) -> None:
    """Each rank's shard of an FSDP model's trainable weights and optimizer states into path/<name>_fsdp
    (every rank calls this)."""
    fsdp.save_sharded(model, optimizer, _sharded_dir(path, name))


def load_sharded(model, optimizer, path: str, name: str) -> None:
    """Restore what `save_sharded` wrote (every rank calls this)."""
    if not os.path.isdir(_sharded_dir(path, name)):
        raise ConfigError(f"{path} holds no FSDP state for the {name} ({name}_fsdp/): it was written by a run "
                          "launched without FSDP; resume it with that launch config.")
    fsdp.load_sharded(model, optimizer, _sharded_dir(path, name))
