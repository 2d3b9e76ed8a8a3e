"""`output_dir/data_order.jsonl`: which samples each optimizer step trained on, as short token hashes.

One line per step, `{"step": N, "samples": [hash, ...]}` in micro-batch order. It is written
from the batches the model actually receives, so batches the HF Trainer skips when resuming
never appear. On resume, lines after the checkpoint's step (work the kill threw away) are
dropped first: the file always describes the steps the current weights come from, and an
interrupted-then-resumed run gives the same file as an uninterrupted one.
"""

import hashlib
import os

import numpy as np
from transformers import TrainerCallback

from .checkpointing import trim_step_log
from .run_dir import DATA_ORDER, append_jsonl


def sample_hash(token_ids: np.ndarray) -> str:
    """A short stable id of one sample: the hash of its (unpadded) token ids as int64."""
    return hashlib.sha1(token_ids.astype(np.int64, copy=False).tobytes()).hexdigest()[:12]


class DataOrderLog(TrainerCallback):
    """Collects the hashes of each micro-batch (`record`) and writes one line per optimizer step.

    Every process writes its own file (`data_order.jsonl` on a single process, else
    `data_order.rank<r>.jsonl`), since each trains on its own share of the batch.
    """

    def __init__(self, output_dir: str, process_index: int = 0, num_processes: int = 1):
        name = DATA_ORDER if num_processes == 1 else DATA_ORDER.replace(".jsonl", f".rank{process_index}.jsonl")
        self.path = os.path.join(output_dir, name)
        self.pending: list[str] = []

    def record(self, inputs: dict) -> None:
        # one numpy copy per batch: indexing the tensors row by row cost several ms per training step
        ids = inputs["input_ids"].cpu().numpy()
        mask = inputs.get("attention_mask")
        keep = mask.bool().cpu().numpy() if mask is not None else np.ones(ids.shape, dtype=bool)
        self.pending.extend(sample_hash(row[row_keep]) for row, row_keep in zip(ids, keep, strict=True))

    def on_train_begin(self, args, state, control, **kwargs):
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        trim_step_log(self.path, state.global_step)
        self.pending = []

    def on_step_end(self, args, state, control, **kwargs):
        append_jsonl(self.path, [{"step": state.global_step, "samples": self.pending}])
        self.pending = []
