"""Step 2: pairwise reward model with `trl.RewardTrainer`, then its evaluation on held-out pairs.

InstructGPT: the reward model starts from the SFT checkpoint with a fresh scalar score head and
learns `-log sigmoid(r_chosen - r_rejected)` (TRL's loss; `center_rewards_coefficient` and a
`margin` column are TRL's options). At the end, `rlhf_recipes.stages.reward_eval` scores the eval split
and writes `output_dir/eval_rm.json`. The final `output_dir` reloads with
`AutoModelForSequenceClassification.from_pretrained`.
"""

import os
from collections.abc import Sequence
from dataclasses import dataclass, field

from datasets import Dataset
from transformers import TrainerCallback
from trl import RewardConfig, RewardTrainer

from .. import logs
from ..artifacts import hub
from ..data import DataArguments, stage_splits
from ..models import ModelArguments, is_tiny
from ..config.parsing import ConfigError, parse_args
from ..config.paths import STEP_1, check_local_path
from .reward_eval import evaluate_reward_model, format_report, write_report
from ..artifacts.run_dir import RM_EVAL
from ..artifacts.saving import MERGED_SUBDIR
from .trainers import ReliableRewardTrainer
from .train_and_save import train_stage


@dataclass
class RewardScriptArguments:
    """Options of the reward stage that are not TRL's."""

    eval_rm_num_samples: int | None = field(
        default=None, metadata={"help": "Held-out pairs scored after training (all when unset)."}
    )
    eval_rm_show_pairs: int = field(default=3, metadata={"help": "Pairs printed in the end-of-training table."})


def check_init_checkpoint(model_args: ModelArguments) -> None:
    """Fail early, with the fix, when the reward model's starting checkpoint cannot be loaded.

    A missing local directory usually means step 1 (SFT) has not run; a LoRA adapter directory
    has no full weights to put a score head on, so its `merged/` directory is needed.
    """
    name = model_args.model_name_or_path
    if name is None or is_tiny(name):
        return
    if not os.path.isdir(name):
        check_local_path("model_name_or_path", name, STEP_1)  # the reward model starts from step 1's output
        return
    if not os.path.isfile(os.path.join(name, "config.json")):
        merged = os.path.join(name, MERGED_SUBDIR)
        fix = f"use {merged!r}" if os.path.isdir(merged) else "rerun SFT with merge_lora: true and use its merged/ dir"
        raise ConfigError(f"{name!r} holds no full model (no config.json; a LoRA adapter?): {fix} instead.")


def evaluate_held_out(
    trainer: RewardTrainer, eval_dataset: Dataset | None, script_args: RewardScriptArguments
) -> dict | None:
    """Score the held-out pairs with the trained model; write `eval_rm.json` and print a short table."""
    if eval_dataset is None:
        print("reward: no eval split, so no held-out evaluation (eval_rm.json not written).")
        return None
    args = trainer.args
    report = evaluate_reward_model(
        trainer.model,
        trainer.processing_class,
        eval_dataset,
        num_samples=script_args.eval_rm_num_samples,
        batch_size=args.per_device_eval_batch_size,
        max_length=args.max_length,
    )
    if trainer.is_world_process_zero():
        path = os.path.join(args.output_dir, RM_EVAL)
        write_report(report, path)
        print(format_report(report, max_pairs=script_args.eval_rm_show_pairs))
        print(f"reward: held-out evaluation written to {path}")
    return report


def train_reward(
    model_args: ModelArguments,
    training_args: RewardConfig,
    train_dataset: Dataset,
    eval_dataset: Dataset | None = None,
    script_args: RewardScriptArguments | None = None,
    callbacks: list[TrainerCallback] | None = None,
) -> tuple[ReliableRewardTrainer, dict | None]:
    """Train the reward model on prompt/chosen/rejected rows, evaluate it on `eval_dataset`, and save it.

    Returns the trainer and the evaluation report (None without an eval split); the report is
    also written to `output_dir/eval_rm.json` and summarised on stdout.
    """
    return _train(model_args, training_args, lambda: (train_dataset, eval_dataset), script_args, callbacks)


def run_reward(
    model_args: ModelArguments,
    data_args: DataArguments,
    training_args: RewardConfig,
    script_args: RewardScriptArguments | None = None,
) -> tuple[ReliableRewardTrainer, dict | None]:
    """Step 2 end to end: checks, the reward split of the data, training, evaluation, the saved model."""
    return _train(model_args, training_args, lambda: stage_splits(data_args, "reward"), script_args)


def _train(model_args, training_args, datasets, script_args, callbacks=None):
    check_init_checkpoint(model_args)
    script_args = script_args or RewardScriptArguments()
    return train_stage(
        ReliableRewardTrainer, "seq-cls", model_args, training_args, datasets, callbacks,
        after_training=lambda trainer, eval_dataset: evaluate_held_out(trainer, eval_dataset, script_args),
    )


def main(argv: Sequence[str] | None = None) -> None:
    """`rlhf-recipes reward --config recipes/<model>/reward.yaml [--field value ...]`."""
    model_args, data_args, training_args, script_args = parse_args(
        [ModelArguments, DataArguments, RewardConfig, RewardScriptArguments], argv
    )
    logs.configure(training_args)
    run_reward(model_args, data_args, training_args, script_args)
    hub.finish_and_push("reward", model_args, data_args, training_args, argv)
