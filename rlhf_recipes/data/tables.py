"""Datasets built and rows selected in Arrow, without `datasets`' per-row Python round trip.

`Dataset.flatten_indices` and `Dataset.map` turn every row into Python objects and back; on
conversational rows that costs more than the rest of the data layer together. Arrow's `take`
gives the same rows in C, and the result is flat (no indices mapping) and in memory, as
`select(...).flatten_indices()` was.
"""

from collections.abc import Sequence

import numpy as np
import pyarrow as pa
from datasets import Dataset, DatasetInfo, Features
from datasets.fingerprint import generate_random_fingerprint
from datasets.table import InMemoryTable


def arrow_table(dataset: Dataset) -> pa.Table:
    """All rows of `dataset` (its indices mapping applied) as one Arrow table."""
    return dataset.with_format("arrow")[:]


def from_table(table: pa.Table, features: Features) -> Dataset:
    """An in-memory Dataset of `table`, typed by `features`.

    Its fingerprint is random, as `datasets` gives results it cannot hash: an in-memory dataset
    has no cache files for a fingerprint to name, and hashing would serialise every row.
    """
    info = DatasetInfo(features=features)
    return Dataset(InMemoryTable(table), info=info, fingerprint=generate_random_fingerprint())


def take(dataset: Dataset, indices: Sequence[int] | np.ndarray) -> Dataset:
    """The rows at `indices`, in that order, as a flat in-memory Dataset."""
    return from_table(dataset.with_format("arrow")[np.asarray(indices, dtype=np.int64)], dataset.features)


def shuffled_order(num_rows: int, seed: int) -> np.ndarray:
    """The row order `Dataset.shuffle(seed=seed)` gives, so splits and mixes keep the rows they always had."""
    return np.random.default_rng(seed).permutation(num_rows)
