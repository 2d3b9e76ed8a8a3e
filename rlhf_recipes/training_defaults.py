"""What the TRL-backed stages (SFT, reward model) share around their trainer.

The HF `TrainingArguments` carry `resume_from_checkpoint` only as a string that the Trainer
itself ignores ("intended for training/evaluation scripts"); `resume_checkpoint` gives it the
HF script semantics; `check_merge_lora` rejects a merge without LoRA before any training.
`run_training` and `save_final` are the common tail of a stage: train (resuming if asked),
record metrics and state, then write the final model + tokenizer with `rlhf_recipes.saving`.
"""

import os

from transformers import PreTrainedTokenizerBase, Trainer, TrainingArguments
from transformers.trainer_utils import get_last_checkpoint

from .models import ModelArguments
from .parsing import ConfigError
from .saving import save_model_and_tokenizer

_TRUE = {"true", "yes", "1"}
_FALSE = {"false", "no", "0", ""}


def resume_checkpoint(training_args: TrainingArguments) -> str | None:
    """The checkpoint directory to resume from, or None to start fresh.

    `resume_from_checkpoint: true` means the latest `checkpoint-*` in `output_dir`; any other
    value is a checkpoint directory. Either must exist: a missing one is a `ConfigError`.
    """
    value = training_args.resume_from_checkpoint
    if value is None or value is False or (isinstance(value, str) and value.strip().lower() in _FALSE):
        return None
    if value is True or value.strip().lower() in _TRUE:
        output_dir = training_args.output_dir
        latest = get_last_checkpoint(output_dir) if os.path.isdir(output_dir) else None
        if latest is None:
            raise ConfigError(
                f"resume_from_checkpoint is true but {output_dir!r} holds no checkpoint-* directory to resume from."
            )
        return latest
    if not os.path.isdir(value):
        raise ConfigError(f"resume_from_checkpoint: {value!r} is not a checkpoint directory.")
    return value


def check_merge_lora(model_args: ModelArguments) -> None:
    """`merge_lora` needs LoRA; caught before training rather than at the final save."""
    if model_args.merge_lora and not model_args.use_peft:
        raise ConfigError("merge_lora: true needs LoRA training (use_peft: true); a full model has nothing to merge.")


def run_training(trainer: Trainer, resume_from: str | None) -> dict:
    """Train (resuming from `resume_from` when given), then save metrics and trainer state; returns the metrics."""
    result = trainer.train(resume_from_checkpoint=resume_from)
    trainer.log_metrics("train", result.metrics)
    trainer.save_metrics("train", result.metrics)
    trainer.save_state()
    return result.metrics


def save_final(trainer: Trainer, tokenizer: PreTrainedTokenizerBase, merge_lora: bool) -> None:
    """The final model/adapter + tokenizer to `output_dir` (and `merged/` with `merge_lora`), main process only.

    Merging LoRA weights modifies the model in place, so this comes after any use of the trained model.
    """
    trainer.accelerator.wait_for_everyone()
    if trainer.is_world_process_zero():
        save_model_and_tokenizer(trainer.model, tokenizer, trainer.args.output_dir, merge_lora)
