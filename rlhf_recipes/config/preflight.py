"""Checks every stage runs before it loads data or weights, so that a run that cannot finish fails
in seconds with the fix, not hours later: contradictory model options, sequences longer than the
model's positions, and an `output_dir` that cannot be written or cannot hold the checkpoints.
"""

import math
import os
import shutil

from transformers import TrainingArguments

from ..models import ModelArguments
from ..models.introspection import bytes_per_parameter, max_positions, model_config, parameter_count
from .parsing import ConfigError

OPTIMIZER_FACTOR = 2  # AdamW keeps two moments per trained weight, in the weights' dtype
_GB = 1024**3


def check_model_args(model_args: ModelArguments) -> None:
    """Options that contradict each other, whatever the model."""
    if model_args.merge_lora and not model_args.use_peft:
        raise ConfigError("merge_lora: true needs LoRA training (use_peft: true); a full model has nothing to merge.")
    if (model_args.load_in_4bit or model_args.load_in_8bit) and not model_args.use_peft:
        raise ConfigError(
            "load_in_4bit/load_in_8bit freeze the base weights, so only LoRA can train them: set use_peft: true "
            "(QLoRA), or drop the quantization to train the full model."
        )


def check_length(positions: int | None, **lengths: int | None) -> None:
    """Sequences of the summed lengths (keyword = the setting, e.g. a prompt and its response) must fit the
    model's positions. Nothing to check when the model or a setting has no limit (None)."""
    if positions is None or None in lengths.values() or sum(lengths.values()) <= positions:
        return
    named = " + ".join(f"{name} ({length})" for name, length in lengths.items())
    (only, *others) = lengths
    fix = "Lower one of them." if others else f"Set {only}: {positions} or lower."
    raise ConfigError(
        f"{named} exceeds the model's {positions} positions (max_position_embeddings): sequences that long would "
        f"index past its position embeddings. {fix}"
    )


def _size(num_bytes: float) -> str:
    return f"{num_bytes / _GB:.2f} GiB" if num_bytes >= _GB / 10 else f"{num_bytes / 1024**2:.1f} MiB"


def kept_checkpoints(args: TrainingArguments) -> int:
    """How many checkpoints can be on disk at once: rotation deletes the oldest only after the new one is written."""
    strategy = getattr(args.save_strategy, "value", args.save_strategy)
    if strategy == "no":
        return 0
    saves = 1
    if strategy == "steps" and args.max_steps > 0 and args.save_steps >= 1:
        saves = max(args.max_steps // int(args.save_steps), 1)
    elif strategy == "epoch" and args.max_steps <= 0:
        saves = math.ceil(args.num_train_epochs)
    return min(saves, args.save_total_limit + 1) if args.save_total_limit else saves


def estimate_run_bytes(num_parameters: int, bytes_per_param: int, kept: int, use_peft: bool, merge_lora: bool) -> tuple[int, str]:
    """Rough disk need of a run and its breakdown: kept checkpoints x (weights + optimizer) + final model.

    LoRA checkpoints hold only the adapter (small next to the model), so with LoRA only merged
    weights count.
    """
    weights = num_parameters * bytes_per_param
    if use_peft:
        return (weights if merge_lora else 0), f"merged weights {_size(weights)}" if merge_lora else "LoRA adapters only"
    per_checkpoint = weights * (1 + OPTIMIZER_FACTOR)
    detail = (
        f"{kept} checkpoint(s) x {_size(per_checkpoint)} (weights {_size(weights)} + optimizer states "
        f"{_size(weights * OPTIMIZER_FACTOR)}) + final model {_size(weights)}"
    )
    return kept * per_checkpoint + weights, detail


def _existing_ancestor(path: str) -> str:
    path = os.path.abspath(path)
    while not os.path.exists(path):
        path = os.path.dirname(path)
    return path


def check_output_dir(output_dir: str, need_bytes: int = 0, detail: str = "") -> None:
    """`output_dir` can be written (a probe file in it, or in its nearest existing parent: a run that fails
    before training must not leave an empty directory behind), and its disk has `need_bytes` free."""
    existing = _existing_ancestor(output_dir)
    probe = os.path.join(existing, f".write-probe-{os.getpid()}")
    try:
        if not os.path.isdir(existing):
            raise NotADirectoryError(f"{existing} is a file")
        with open(probe, "wb") as handle:
            handle.write(b"probe")
            handle.flush()
            os.fsync(handle.fileno())
        os.remove(probe)
    except OSError as err:
        raise ConfigError(
            f"output_dir {output_dir!r} is not writable ({err.strerror or err}): checkpoints and the final model "
            "could not be saved. Choose a directory you can write to."
        ) from err
    free = shutil.disk_usage(existing).free
    if need_bytes > free:
        raise ConfigError(
            f"output_dir {output_dir!r} has {_size(free)} free but this run needs about {_size(need_bytes)} "
            f"({detail}). Free some space, choose another output_dir, or lower save_total_limit."
        )


def preflight_stage(model_args: ModelArguments, args: TrainingArguments, task: str) -> None:
    """All checks of a TRL-backed stage (SFT: task "causal-lm"; reward model: "seq-cls"), before data or weights."""
    check_model_args(model_args)
    trust = args.trust_remote_code
    config = model_config(model_args, trust_remote_code=trust)
    check_length(max_positions(config), max_length=getattr(args, "max_length", None))
    need, detail = estimate_run_bytes(
        parameter_count(config, task, trust), bytes_per_parameter(model_args, config), kept_checkpoints(args),
        model_args.use_peft, model_args.merge_lora,
    )
    check_output_dir(args.output_dir, need, detail)
