"""Row quality checks on canonical records: empty prompts or responses, chosen == rejected, duplicates.

Each dropped row is counted by reason in a `StepReport`; nothing is removed silently.
"""

import json

from datasets import Dataset

from rlhf_recipes.data.records import RESPONSE_COLUMNS
from rlhf_recipes.data.report import StepReport
from rlhf_recipes.data.tables import take


def _blank(value: str | list) -> bool:
    """An empty text, or messages whose last turn (the question, or the reply) is empty."""
    if isinstance(value, str):
        return not value.strip()
    return not value or not (value[-1]["content"] or "").strip()


def _defect(record: dict) -> str | None:
    """The reason to drop a record, or None to keep it; unfilled columns (None) are not checked."""
    if _blank(record["prompt"]):
        return "empty_prompt"
    if any(record.get(column) is not None and _blank(record[column]) for column in RESPONSE_COLUMNS):
        return "empty_response"
    if record.get("chosen") is not None and record["chosen"] == record.get("rejected"):
        return "chosen_equals_rejected"
    return None


def _key(record: dict) -> str:
    return json.dumps(record, sort_keys=True, ensure_ascii=False)


def clean(indexed_records: list[tuple[int, dict]], step: StepReport) -> list[tuple[int, dict]]:
    """Keeps (row index, record) pairs without defects, first occurrence of duplicates only."""
    kept, seen = [], set()
    for index, record in indexed_records:
        reason = _defect(record)
        if reason is None:
            key = _key(record)
            reason = "duplicate" if key in seen else None
            seen.add(key)
        if reason:
            step.drop(reason, index)
        else:
            kept.append((index, record))
    return kept


def drop_duplicates(dataset: Dataset, step: StepReport, seen: set[str] | None = None) -> Dataset:
    """The dataset without repeated rows (first occurrence kept), counted as "duplicate".

    `seen` holds the keys of rows kept elsewhere (e.g. the train split when cleaning eval); rows
    matching them are dropped too, and the keys of this dataset's kept rows are added to it.
    """
    keep, seen = [], set() if seen is None else seen
    for index, row in enumerate(dataset.to_list()):
        key = _key(row)
        if key in seen:
            step.drop("duplicate", index)
        else:
            seen.add(key)
            keep.append(index)
    return dataset if len(keep) == len(dataset) else take(dataset, keep)
