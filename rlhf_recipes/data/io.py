"""Reading one raw source into a `datasets.Dataset`: local files, saved datasets, or the Hub.

Local JSON (an array, or JSON Lines whatever the suffix) is parsed here so that a bad byte or a
broken line is reported with the file and line; CSV and Parquet go through `datasets` after a UTF-8 check of CSV text. A name that
looks like a path never reaches the Hub, so a typo fails here instead of as a confusing
Hub lookup.
"""

import json
from pathlib import Path

import datasets
from datasets import Dataset, DatasetDict
from datasets.exceptions import DatasetGenerationError

from rlhf_recipes.config.paths import DATA_FILE_SUFFIXES as FILE_SUFFIXES
from rlhf_recipes.config.paths import looks_like_local_path
from rlhf_recipes.data.errors import DataError


def is_local(name: str) -> bool:
    """True for an existing path or anything spelled like a path or a data file; False means a Hub dataset id."""
    return looks_like_local_path(name, FILE_SUFFIXES)


def load_raw(name: str, config: str | None = None, split: str = "train") -> Dataset:
    """The rows of `name` (a local file or directory, or a Hub id read with `config` and `split`)."""
    if not is_local(name):
        return datasets.load_dataset(name, config, split=split)
    path = Path(name).expanduser()
    if not path.exists():
        raise DataError(f"Data file or directory not found: {path}")
    if path.is_dir():
        return _load_saved(path, split)
    if path.suffix in (".json", ".jsonl"):
        lines = _decode_lines(path)
        # A JSON array starts with "["; anything else is read as JSON Lines, which some projects
        # name .json (MedicalGPT's reward files are).
        is_array = next((line for line in lines if line.strip()), "").lstrip().startswith("[")
        return _from_rows(path, _parse_json_array(path, lines) if is_array else _parse_jsonl(path, lines))
    if path.suffix == ".csv":
        _decode_lines(path)  # only to report a non-UTF-8 line by number before pandas fails vaguely
        try:
            return Dataset.from_csv(str(path), keep_in_memory=True)
        except (ValueError, DatasetGenerationError) as err:
            raise DataError(f"{path}: cannot be read as CSV: {err.__cause__ or err}") from err
    if path.suffix == ".parquet":
        return Dataset.from_parquet(str(path), keep_in_memory=True)
    raise DataError(f"Unsupported data file type {path.suffix!r} for {path}; use one of {', '.join(FILE_SUFFIXES)}.")


def _load_saved(path: Path, split: str) -> Dataset:
    try:
        saved = datasets.load_from_disk(str(path))
    except FileNotFoundError as err:
        raise DataError(f"{path} is a directory but not one written by Dataset.save_to_disk: {err}") from err
    if isinstance(saved, DatasetDict):
        if split not in saved:
            raise DataError(f"{path} has no split {split!r} (dataset_split); its splits: {', '.join(saved)}.")
        saved = saved[split]
    return saved


def _decode_lines(path: Path) -> list[str]:
    """The file's lines, or a DataError naming the first line that is not UTF-8."""
    lines = []
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                lines.append(raw.decode("utf-8"))
            except UnicodeDecodeError as err:
                raise DataError(
                    f"{path}, line {number}: not valid UTF-8 (byte {raw[err.start:err.start + 1]!r} at column "
                    f"{err.start + 1}); re-save the file as UTF-8."
                ) from None
    return lines


def _parse_jsonl(path: Path, lines: list[str]) -> list[dict]:
    rows = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(f"{path}, line {number}: malformed JSON ({err.msg} at column {err.colno}).") from None
        if not isinstance(row, dict):
            raise DataError(f"{path}, line {number}: expected a JSON object, got {type(row).__name__}.")
        rows.append(row)
    return rows


def _parse_json_array(path: Path, lines: list[str]) -> list[dict]:
    try:
        rows = json.loads("".join(lines))
    except json.JSONDecodeError as err:
        raise DataError(f"{path}, line {err.lineno}, column {err.colno}: malformed JSON array ({err.msg}).") from None
    for number, row in enumerate(rows):
        if not isinstance(row, dict):
            raise DataError(f"{path}: element {number} of the array is a {type(row).__name__}, not an object.")
    return rows


def _type_change(rows: list[dict]) -> str:
    """Where a top-level field first changes JSON type (nulls aside), to point at the row Arrow rejects."""
    first_seen: dict[str, tuple[str, int]] = {}
    for number, row in enumerate(rows, start=1):
        for key, value in row.items():
            if value is None:
                continue
            kind = type(value).__name__
            seen_kind, seen_row = first_seen.setdefault(key, (kind, number))
            if kind != seen_kind:
                return f"field {key!r} is {seen_kind} in row {seen_row} but {kind} in row {number}"
    return "a nested field changes type between rows"


def _from_rows(path: Path, rows: list[dict]) -> Dataset:
    if not rows:
        raise DataError(f"{path} holds no rows.")
    try:
        return Dataset.from_list(rows)
    except (TypeError, ValueError) as err:  # pyarrow's ArrowInvalid/ArrowTypeError are subclasses
        raise DataError(
            f"{path}: rows do not share one schema ({_type_change(rows)}; rows counted from 1): {err}"
        ) from err
