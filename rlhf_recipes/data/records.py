"""The canonical record every adapter produces, and its Arrow schema.

A record always has the four columns `prompt`, `completion`, `chosen`, `rejected`; the ones a
source does not fill are None. A preference source fills prompt/chosen/rejected, an SFT source
prompt/completion, a prompt-only source just prompt. Within one dataset all filled values are
either strings or all lists of `{"role", "content"}` messages (TRL's "conversational" format).
"""

import pyarrow as pa
from datasets import Dataset, Features, List, Value

from rlhf_recipes.data.tables import from_table

COLUMNS = ("prompt", "completion", "chosen", "rejected")
RESPONSE_COLUMNS = COLUMNS[1:]
MESSAGE = {"role": Value("string"), "content": Value("string")}


def is_messages(value) -> bool:
    """True for a list of `{"role", "content"}` messages (TRL's conversational format), not a string."""
    return isinstance(value, list) and (not value or isinstance(value[0], dict))


def is_conversational(record: dict) -> bool:
    """True when the record's values are message lists rather than strings."""
    return any(is_messages(record.get(column)) for column in COLUMNS)


def to_messages(record: dict) -> dict:
    """A string record as messages: the prompt becomes one user turn, each response one assistant turn."""
    if is_conversational(record):
        return record
    converted = {column: record.get(column) for column in COLUMNS}
    if isinstance(converted["prompt"], str):
        converted["prompt"] = [{"role": "user", "content": converted["prompt"]}]
    for column in RESPONSE_COLUMNS:
        if isinstance(converted[column], str):
            converted[column] = [{"role": "assistant", "content": converted[column]}]
    return converted


def features(conversational: bool) -> Features:
    """The Arrow schema of canonical records, strings or conversational."""
    value = List(MESSAGE) if conversational else Value("string")
    return Features({column: value for column in COLUMNS})


def to_dataset(records: list[dict]) -> Dataset:
    """Canonical records as a Dataset; string records are turned into messages if any record is conversational."""
    conversational = any(is_conversational(record) for record in records)
    if conversational:
        records = [to_messages(record) for record in records]
    schema = features(conversational)
    # Arrow reads the rows against the known schema; `Dataset.from_list` would first encode each row in Python.
    return from_table(pa.Table.from_pylist(records, schema=schema.arrow_schema), schema)


def dataset_is_conversational(dataset: Dataset) -> bool:
    """True for a canonical dataset of message lists."""
    return not isinstance(dataset.features["prompt"], Value)
