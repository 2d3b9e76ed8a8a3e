"""Fixtures for the data-layer tests: reading one source the way `load_stage_dataset` does, writing files."""

import json
from pathlib import Path

import pytest
from datasets import Dataset

from rlhf_recipes.data import DataArguments, DataReport
from rlhf_recipes.data.loading import load_source


def _read_source(path: Path | str, **args) -> tuple[Dataset, DataReport]:
    report = DataReport("ppo")  # ppo accepts every kind of source
    return load_source(str(path), DataArguments(**args), "ppo", report), report


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    return path


@pytest.fixture
def read_source():
    """(path, **DataArguments fields) -> (canonical records in file order minus drops, DataReport)."""
    return _read_source


@pytest.fixture
def write_jsonl():
    """(path, rows) -> path, the rows written as JSON Lines."""
    return _write_jsonl

