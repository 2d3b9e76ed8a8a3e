"""Step 1: supervised fine-tuning with `trl.SFTTrainer` (full, LoRA or QLoRA).

Thin by design: arguments -> tokenizer + model -> `SFTTrainer` -> train -> save. The final
`output_dir` reloads with `AutoModelForCausalLM.from_pretrained` (or, for LoRA,
`AutoPeftModelForCausalLM`; `merge_lora: true` also writes `output_dir/merged`). Checks that need
no weights (`rlhf_recipes.config.preflight`) run first; checkpoints are atomic and the data order is
logged (`rlhf_recipes.stages.trainers`).
"""

from collections.abc import Sequence

from datasets import Dataset
from transformers import TrainerCallback, set_seed
from trl import SFTConfig

from .. import logs
from ..artifacts import hub
from ..data import DataArguments, load_stage_dataset
from ..models import ModelArguments, load_model, load_tokenizer, peft_config_for
from ..config.parsing import parse_args
from ..config.preflight import preflight_stage
from .trainers import ReliableSFTTrainer
from .train_and_save import resume_checkpoint, run_training, save_final


def train_sft(
    model_args: ModelArguments,
    training_args: SFTConfig,
    train_dataset: Dataset,
    eval_dataset: Dataset | None = None,
    callbacks: list[TrainerCallback] | None = None,
) -> ReliableSFTTrainer:
    """Fine-tune on `train_dataset` (TRL prompt/completion or conversational rows) and save.

    Returns the trainer, whose `state.log_history` holds the losses.
    """
    preflight_stage(model_args, training_args, "causal-lm")
    resume_from = resume_checkpoint(training_args)
    return _train_checked(model_args, training_args, train_dataset, eval_dataset, resume_from, callbacks)


def _train_checked(
    model_args: ModelArguments,
    training_args: SFTConfig,
    train_dataset: Dataset,
    eval_dataset: Dataset | None,
    resume_from: str | None,
    callbacks: list[TrainerCallback] | None = None,
) -> ReliableSFTTrainer:
    """`train_sft` once the checks have passed and the checkpoint to resume from is known (the checks
    size a model on the meta device: not twice)."""
    set_seed(training_args.seed)
    tokenizer = load_tokenizer(model_args, training_args.trust_remote_code)
    model = load_model(model_args, tokenizer, task="causal-lm", trust_remote_code=training_args.trust_remote_code)
    trainer = ReliableSFTTrainer(
        model=model,
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        processing_class=tokenizer,
        peft_config=peft_config_for(model_args, "CAUSAL_LM"),
        callbacks=callbacks,
    )
    run_training(trainer, resume_from)
    save_final(trainer, tokenizer, model_args.merge_lora)
    return trainer


def run_sft(model_args: ModelArguments, data_args: DataArguments, training_args: SFTConfig) -> ReliableSFTTrainer:
    """Step 1 end to end: checks, the SFT split of the data, then `train_sft`."""
    preflight_stage(model_args, training_args, "causal-lm")
    resume_from = resume_checkpoint(training_args)  # a bad resume_from_checkpoint fails before the data loads
    splits = load_stage_dataset(data_args, "sft")
    eval_dataset = splits["eval"] if len(splits["eval"]) else None
    return _train_checked(model_args, training_args, splits["train"], eval_dataset, resume_from)


def main(argv: Sequence[str] | None = None) -> None:
    """`rlhf-recipes sft --config recipes/<model>/sft.yaml [--field value ...]`."""
    model_args, data_args, training_args = parse_args([ModelArguments, DataArguments, SFTConfig], argv)
    logs.configure(training_args)
    run_sft(model_args, data_args, training_args)
    hub.finish_and_push("sft", model_args, data_args, training_args, argv)
