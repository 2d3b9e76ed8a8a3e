"""What the TRL-backed stages (SFT, reward model) share around their trainer.

The HF `TrainingArguments` carry `resume_from_checkpoint` only as a string that the Trainer
itself ignores ("intended for training/evaluation scripts"); `resume_checkpoint` gives it the
HF script semantics, restricted to complete checkpoints (`rlhf_recipes.artifacts.checkpointing`).
`train_stage` is a stage from its checks to its saved model; `run_training` and `save_final` are its
common tail: train (resuming if asked), record metrics and state, then write the final model +
tokenizer with `rlhf_recipes.artifacts.saving`.
"""

from collections.abc import Callable

from datasets import Dataset
from transformers import PreTrainedTokenizerBase, Trainer, TrainerCallback, TrainingArguments, set_seed

from ..artifacts.checkpointing import resolve_resume
from ..artifacts.saving import save_model_and_tokenizer
from ..config.preflight import preflight_stage
from ..models import ModelArguments, load_model, load_tokenizer, peft_config_for

PEFT_TASK_TYPES = {"causal-lm": "CAUSAL_LM", "seq-cls": "SEQ_CLS"}


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


def train_stage(
    trainer_class: type[Trainer],
    task: str,
    model_args: ModelArguments,
    training_args: TrainingArguments,
    datasets: Callable[[], tuple[Dataset, Dataset | None]],
    callbacks: list[TrainerCallback] | None = None,
    after_training: Callable[[Trainer, Dataset | None], dict | None] | None = None,
) -> tuple[Trainer, dict | None]:
    """A TRL-backed stage: checks that need no weights (preflight, `resume_from_checkpoint`), then
    `datasets()` (train, eval or None), the tokenizer and the `task` model ("causal-lm" | "seq-cls"),
    training, `after_training(trainer, eval_dataset)` on the trained model (the eval rows as given, not
    as the trainer tokenised them), and the final save. Returns the trainer
    and what `after_training` returned."""
    preflight_stage(model_args, training_args, task)
    resume_from = resume_checkpoint(training_args)  # a bad resume_from_checkpoint fails before the data loads
    train_dataset, eval_dataset = datasets()
    set_seed(training_args.seed)
    tokenizer = load_tokenizer(model_args, training_args.trust_remote_code)
    model = load_model(model_args, tokenizer, task=task, trust_remote_code=training_args.trust_remote_code)
    trainer = trainer_class(
        model=model,
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        processing_class=tokenizer,
        peft_config=peft_config_for(model_args, PEFT_TASK_TYPES[task]),
        callbacks=callbacks,
    )
    run_training(trainer, resume_from)
    result = after_training(trainer, eval_dataset) if after_training else None
    save_final(trainer, tokenizer, model_args.merge_lora)
    return trainer, result
