"""Step 1: supervised fine-tuning with `trl.SFTTrainer` (full, LoRA or QLoRA).

Thin by design: arguments -> tokenizer + model -> `SFTTrainer` -> train -> save. The final
`output_dir` reloads with `AutoModelForCausalLM.from_pretrained` (or, for LoRA,
`AutoPeftModelForCausalLM`; `merge_lora: true` also writes `output_dir/merged`). Checks that need
no weights (`rlhf_recipes.config.preflight`) run first; checkpoints are atomic and the data order is
logged (`rlhf_recipes.stages.trainers`).
"""

from collections.abc import Sequence

from datasets import Dataset
from transformers import TrainerCallback
from trl import SFTConfig

from .. import logs
from ..artifacts import hub
from ..data import DataArguments, stage_splits
from ..models import ModelArguments
from ..config.parsing import parse_args
from .trainers import ReliableSFTTrainer
from .train_and_save import train_stage


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
    datasets = lambda: (train_dataset, eval_dataset)  # noqa: E731
    return train_stage(ReliableSFTTrainer, "causal-lm", model_args, training_args, datasets, callbacks)[0]


def run_sft(model_args: ModelArguments, data_args: DataArguments, training_args: SFTConfig) -> ReliableSFTTrainer:
    """Step 1 end to end: checks, the SFT split of the data, training, the saved model."""
    datasets = lambda: stage_splits(data_args, "sft")  # noqa: E731
    return train_stage(ReliableSFTTrainer, "causal-lm", model_args, training_args, datasets)[0]


def main(argv: Sequence[str] | None = None) -> None:
    """`rlhf-recipes sft --config recipes/<model>/sft.yaml [--field value ...]`."""
    model_args, data_args, training_args = parse_args([ModelArguments, DataArguments, SFTConfig], argv)
    logs.configure(training_args)
    run_sft(model_args, data_args, training_args)
    hub.finish_and_push("sft", model_args, data_args, training_args, argv)
