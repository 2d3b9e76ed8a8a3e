"""TRL's `SFTTrainer` and `RewardTrainer` with the guarantees the stages promise.

The HF Trainer already saves and restores model, optimizer, scheduler, RNG and data position;
`ReliableTrainerMixin` adds only what it lacks:
- atomic checkpoints (`rlhf_recipes.artifacts.checkpointing`): the Trainer writes each checkpoint into a
  staging directory, which is marked complete and renamed only once every process has finished;
  rotation counts complete checkpoints only; resuming a finished run trains no extra step;
- a stop with a clear error, before the optimizer step, when the gradient norm is not finite
  (a NaN/inf loss or an overflow), instead of `logging_nan_inf_filter` hiding it from the logs;
- `data_order.jsonl` (`rlhf_recipes.artifacts.data_order`), the samples of each step;
- counted, logged drops of rows TRL filters for length, and an error when none are left;
- plain-text rows tokenized in one batched call (`pretokenize`) rather than TRL's per-row `map`, and
  reward batches padded in one array (`preference_collator`).
"""

import logging
import math
import os
import shutil

import pyarrow.compute as pc
from datasets import Dataset
from transformers.trainer import TRAINER_STATE_NAME
from trl import RewardTrainer, SFTTrainer
from trl.trainer.reward_trainer import DataCollatorForPreference

from ..artifacts import checkpointing
from ..data.errors import DataError
from ..artifacts.data_order import DataOrderLog
from .preference_collator import PreferenceCollator
from .pretokenize import preference_ids, sft_ids

logger = logging.getLogger("rlhf_recipes")


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN or infinite gradient norm; raised before the update is applied."""


class ReliableTrainerMixin:
    """Mix in before a `transformers.Trainer` subclass (see the module docstring)."""

    _staging_dir: str | None = None

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        acc = self.accelerator
        self.data_order = DataOrderLog(self.args.output_dir, acc.process_index, acc.num_processes)
        self.add_callback(self.data_order)

    def _get_output_dir(self, trial) -> str:
        return self._staging_dir or super()._get_output_dir(trial)

    def _save_checkpoint(self, model, trial) -> None:
        """The Trainer's own save, into `.tmp-checkpoint-<step>/`, committed when every process is done."""
        output_dir = self._get_output_dir(trial)
        step = self.state.global_step
        staging = checkpointing.staging_dir(output_dir, step)
        if self.args.should_save:
            shutil.rmtree(staging, ignore_errors=True)
        self.accelerator.wait_for_everyone()
        self._staging_dir = staging
        try:
            super()._save_checkpoint(model, trial)
        finally:
            self._staging_dir = None
        staged = os.path.join(staging, checkpointing.checkpoint_name(step))
        final = os.path.join(output_dir, checkpointing.checkpoint_name(step))
        if self.state.best_model_checkpoint == staged:  # the Trainer recorded the staging path as the best
            self.state.best_model_checkpoint = final
            if self.args.should_save:
                self.state.save_to_json(os.path.join(staged, TRAINER_STATE_NAME))
        self.accelerator.wait_for_everyone()
        if self.args.should_save:
            best = [self.state.best_model_checkpoint] if self.state.best_model_checkpoint else []
            checkpointing.commit(output_dir, staged, step, self.args.save_total_limit, keep=best)
        self.accelerator.wait_for_everyone()

    def _run_epoch(self, *args, **kwargs):
        # transformers checks max_steps only after a step: resuming a finished run (killed while
        # writing its final model) would otherwise train one step more than asked.
        if self.state.global_step >= self.state.max_steps:
            return
        super()._run_epoch(*args, **kwargs)

    def _get_grad_norm(self, model, grad_norm=None):
        # After the gradient all-reduce every process sees the same norm, so all stop together.
        # fp16's loss scaler skips overflowing steps by design: leave those to it.
        grad_norm = super()._get_grad_norm(model, grad_norm=grad_norm)
        if grad_norm is not None and not self.args.fp16 and not math.isfinite(float(grad_norm)):
            latest = checkpointing.latest_checkpoint(self.args.output_dir)
            raise NonFiniteLossError(
                f"Step {self.state.global_step + 1}: the gradient norm is {float(grad_norm)} (a NaN/inf loss or an "
                "overflow); training stopped before this update, so no saved weight is affected. "
                f"Last complete checkpoint: {latest or 'none'}. Lower learning_rate, keep max_grad_norm > 0, use bf16 "
                "rather than fp16, or check the data, then rerun with --resume_from_checkpoint true."
            )
        return grad_norm

    def training_step(self, model, inputs, *args, **kwargs):
        self.data_order.record(inputs)
        return super().training_step(model, inputs, *args, **kwargs)

    def _account_for_length(self, before: Dataset, after: Dataset, name: str, max_length: int | None) -> None:
        """Log the rows TRL's preparation dropped for length; fail when none are left."""
        dropped = len(before) - len(after)
        self.length_drops = {**getattr(self, "length_drops", {}), name: dropped}
        if dropped:
            logger.warning("%s %s: %d of %d rows dropped: %s.", self.stage, name, dropped, len(before),
                           self.drop_reason.format(max_length=max_length))
        if len(before) and not len(after):
            raise DataError(
                f"All {len(before)} {name} rows of the {self.stage} data were dropped: "
                f"{self.drop_reason.format(max_length=max_length)}. {self.length_fix}"
            )


def _rows_of_length(dataset: Dataset, length: int) -> int:
    """Rows whose `input_ids` hold exactly `length` tokens, counted in Arrow (no Python list per row)."""
    lengths = pc.list_value_length(dataset.with_format("arrow")["input_ids"])
    return pc.sum(pc.equal(lengths, length)).as_py() or 0


class ReliableSFTTrainer(ReliableTrainerMixin, SFTTrainer):
    stage = "SFT"
    drop_reason = "after truncation to max_length={max_length} tokens no completion token was left to learn from"
    length_fix = "Raise max_length (up to the model's positions), or set truncation_mode: keep_end."

    def _prepare_dataset(self, dataset, processing_class, args, packing, formatting_func, dataset_name):
        tokenized = None if formatting_func is not None else sft_ids(dataset, processing_class, args.dataset_text_field)
        prepared = super()._prepare_dataset(tokenized if tokenized is not None else dataset, processing_class, args,
                                            packing, formatting_func, dataset_name)
        if isinstance(dataset, Dataset) and not packing and args.max_length is not None:
            self._account_for_length(dataset, prepared, dataset_name, args.max_length)
            cut = _rows_of_length(prepared, args.max_length)
            if cut:
                logger.warning("SFT %s: %d of %d rows reached max_length=%d tokens and were cut (truncation_mode %s).",
                               dataset_name, cut, len(prepared), args.max_length, args.truncation_mode)
        return prepared


class ReliableRewardTrainer(ReliableTrainerMixin, RewardTrainer):
    stage = "reward"
    drop_reason = "TRL's RewardTrainer leaves out pairs whose chosen or rejected text is longer than max_length={max_length} tokens"
    length_fix = "Raise max_length (up to the model's positions), or use shorter pairs."

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if type(self.data_collator) is DataCollatorForPreference:  # TRL's default: the same batches, built faster
            self.data_collator = PreferenceCollator(self.data_collator.pad_token_id,
                                                    self.data_collator.pad_to_multiple_of)

    def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
        tokenized = preference_ids(dataset, processing_class)
        prepared = super()._prepare_dataset(tokenized if tokenized is not None else dataset, processing_class, args,
                                            dataset_name)
        if isinstance(dataset, Dataset) and args.max_length is not None:
            self._account_for_length(dataset, prepared, dataset_name, args.max_length)
        return prepared
