"""Atomic, rotating PPO checkpoints.

Layout of `output_dir/checkpoint-<step>/`: `actor/` (model or LoRA adapter, save_pretrained),
`critic/`, `ema/` (when enabled), `optimizer_{actor,critic}.pt`, `scheduler_{actor,critic}.pt`,
`trainer_state.json` (global step, episode, KL coefficient, reward statistics, log history),
`rng_state_<rank>.pth`, and the `COMPLETE` marker. A checkpoint is written into
`.tmp-checkpoint-<step>`, marked complete, then renamed into place; the `latest` pointer file is
replaced last. Resume only ever reads directories that carry the marker.
"""

import glob
import os
import random
import re
import shutil

import numpy as np
import torch
from safetensors.torch import load_file

from ..parsing import ConfigError

PREFIX = "checkpoint-"
MARKER = "COMPLETE"
LATEST = "latest"
_TRUE = {"true", "yes", "1"}
_FALSE = {"false", "no", "0", ""}


def is_complete(path: str) -> bool:
    return os.path.isfile(os.path.join(path, MARKER))


def complete_checkpoints(output_dir: str) -> list[tuple[int, str]]:
    """(step, path) of every complete checkpoint, oldest first."""
    found = []
    for path in glob.glob(os.path.join(output_dir, PREFIX + "*")):
        match = re.fullmatch(PREFIX + r"(\d+)", os.path.basename(path))
        if match and is_complete(path):
            found.append((int(match.group(1)), path))
    return sorted(found)


def latest_checkpoint(output_dir: str) -> str | None:
    """The newest complete checkpoint: the `latest` pointer if it names one, else the highest step."""
    pointer = os.path.join(output_dir, LATEST)
    if os.path.isfile(pointer):
        with open(pointer, encoding="utf-8") as handle:
            path = os.path.join(output_dir, handle.read().strip())
        if is_complete(path):
            return path
    found = complete_checkpoints(output_dir)
    return found[-1][1] if found else None


def resolve_resume(value, output_dir: str) -> str | None:
    """`resume_from_checkpoint`: None/false -> start fresh; True/"true" -> latest complete checkpoint
    in output_dir; a path -> that checkpoint, which must be complete."""
    if value is None or value is False or (isinstance(value, str) and value.strip().lower() in _FALSE):
        return None
    if value is True or value.strip().lower() in _TRUE:
        path = latest_checkpoint(output_dir) if os.path.isdir(output_dir) else None
        if path is None:
            raise ConfigError(f"resume_from_checkpoint is true but {output_dir!r} holds no complete checkpoint.")
        return path
    if not is_complete(value):
        raise ConfigError(f"resume_from_checkpoint: {value!r} is not a complete PPO checkpoint (no {MARKER} marker).")
    return value


def temp_dir(output_dir: str, step: int) -> str:
    return os.path.join(output_dir, f".tmp-{PREFIX}{step}")


def commit(output_dir: str, tmp: str, step: int, save_total_limit: int | None) -> str:
    """Mark `tmp` complete, move it to checkpoint-<step>, point `latest` at it, rotate old ones."""
    open(os.path.join(tmp, MARKER), "w").close()
    final = os.path.join(output_dir, f"{PREFIX}{step}")
    if os.path.exists(final):
        stale = final + ".replaced"
        os.replace(final, stale)
        os.replace(tmp, final)
        shutil.rmtree(stale)
    else:
        os.replace(tmp, final)
    pointer = os.path.join(output_dir, LATEST)
    with open(pointer + ".tmp", "w", encoding="utf-8") as handle:
        handle.write(os.path.basename(final))
    os.replace(pointer + ".tmp", pointer)
    rotate(output_dir, save_total_limit)
    return final


def rotate(output_dir: str, save_total_limit: int | None) -> None:
    """Delete the oldest complete checkpoints beyond the limit; the newest always stays."""
    if not save_total_limit:
        return
    found = complete_checkpoints(output_dir)
    for _, path in found[: max(len(found) - max(save_total_limit, 1), 0)]:
        shutil.rmtree(path)


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
