"""What the TRL-backed stages (SFT, reward model) share around their trainer.

The HF `TrainingArguments` carry `resume_from_checkpoint` only as a string that the Trainer
itself ignores ("intended for training/evaluation scripts"); `resume_checkpoint` gives it the
HF script semantics, restricted to complete checkpoints (`rlhf_recipes.artifacts.checkpointing`).
`run_training` and `save_final` are the common tail of a stage: train (resuming if asked),
record metrics and state, then write the final model + tokenizer with `rlhf_recipes.artifacts.saving`.
"""

from transformers import PreTrainedTokenizerBase, Trainer, TrainingArguments

from ..artifacts.checkpointing import resolve_resume
from ..artifacts.saving import save_model_and_tokenizer


def resume_checkpoint(training_args: TrainingArguments) -> str | None:
    """The checkpoint directory to resume from, or None to start fresh.

    `resume_from_checkpoint: true` means the latest complete checkpoint in `output_dir`; any
    other value is a checkpoint directory, which must be complete. Otherwise a `ConfigError`.
    """
    return resolve_resume(training_args.resume_from_checkpoint, training_args.output_dir)


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
