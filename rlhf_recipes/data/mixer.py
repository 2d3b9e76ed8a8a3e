"""`dataset_mixer`: several canonical sources, each subsampled by a fraction, combined into one dataset.

Mixing strings with conversational sources converts the string sources to messages (prompt ->
one user turn, replies -> one assistant turn), so one dataset has one representation; TRL
then applies the tokenizer's chat template to every row alike.
"""

import logging

from datasets import Dataset, concatenate_datasets

from rlhf_recipes.data.errors import DataError
from rlhf_recipes.data.filters import drop_duplicates
from rlhf_recipes.data.records import dataset_is_conversational, features, to_messages
from rlhf_recipes.data.report import DataReport
from rlhf_recipes.data.tables import shuffled_order, take

logger = logging.getLogger("rlhf_recipes.data")


def subsample(dataset: Dataset, fraction: float, seed: int, name: str) -> Dataset:
    """round(fraction * rows) rows of `dataset`, the same ones for the same seed."""
    count = round(fraction * len(dataset))
    if count == 0:
        raise DataError(f"dataset_mixer: fraction {fraction:g} of {name} ({len(dataset)} rows) selects no rows.")
    return take(dataset, shuffled_order(len(dataset), seed)[:count])


def mix(sources: dict[str, tuple[Dataset, float]], seed: int, report: DataReport) -> Dataset:
    """{name: (canonical dataset, fraction)} -> one shuffled dataset; duplicates across sources dropped and counted."""
    parts = {name: subsample(dataset, fraction, seed, name) for name, (dataset, fraction) in sources.items()}
    for name, part in parts.items():
        report.sizes[f"mix:{name}"] = len(part)
    if any(dataset_is_conversational(part) for part in parts.values()):
        for name, part in parts.items():
            if not dataset_is_conversational(part):
                logger.info("dataset_mixer: %s has string rows; converting them to messages to mix them", name)
                parts[name] = part.map(to_messages, features=features(True))
    mixed = concatenate_datasets(list(parts.values()))
    mixed = drop_duplicates(mixed, report.step("mix", len(mixed)))
    return take(mixed, shuffled_order(len(mixed), seed))
