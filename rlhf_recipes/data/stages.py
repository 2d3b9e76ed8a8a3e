"""Which sources can feed which stage, and canonical records projected to each stage's TRL format.

- "sft": prompt + completion; a preference row gives its chosen reply as the completion
  (DeepSpeed-Chat step 1 does the same).
- "reward": prompt + chosen + rejected; needs preference sources.
- "ppo": prompt only; any source.
"""

import pyarrow as pa
import pyarrow.compute as pc
from datasets import Dataset, Features

from rlhf_recipes.data.errors import DataError
from rlhf_recipes.data.tables import arrow_table, from_table

STAGES = ("sft", "reward", "ppo")
KINDS_FOR_STAGE = {
    "sft": ("sft", "preference"),
    "reward": ("preference",),
    "ppo": ("sft", "preference", "prompt"),
}


def check_stage(stage: str) -> None:
    """Rejects an unknown stage name."""
    if stage not in STAGES:
        raise DataError(f"Unknown stage {stage!r}; valid stages: {', '.join(STAGES)}.")


def check_source_kind(source: str, format_name: str, kind: str, stage: str) -> None:
    """A clear error when a source cannot feed `stage` (e.g. SFT data for a reward model)."""
    if kind not in KINDS_FOR_STAGE[stage]:
        needs = {"reward": "preference pairs (prompt, chosen, rejected)", "sft": "responses to train on"}[stage]
        raise DataError(
            f"{source} ({format_name} format, {kind} data) cannot feed the {stage} stage: it needs {needs}."
        )


def _sft_rows(dataset: Dataset) -> Dataset:
    """prompt + completion, the chosen reply where a row has no completion (in Arrow: a `map` would
    convert every row to Python and back)."""
    table = arrow_table(dataset)
    completion = pc.coalesce(table["completion"], table["chosen"])
    features = Features(prompt=dataset.features["prompt"], completion=dataset.features["completion"])
    return from_table(pa.table({"prompt": table["prompt"], "completion": completion}), features)


def project(dataset: Dataset, stage: str) -> Dataset:
    """Canonical records -> the stage's TRL standard format (columns as listed in the module doc)."""
    if stage == "sft":
        return _sft_rows(dataset)
    if stage == "reward":
        return dataset.select_columns(["prompt", "chosen", "rejected"])
    return dataset.select_columns(["prompt"])
