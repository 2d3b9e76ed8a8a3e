"""The generic adapters (TRL standard columns, Alpaca extras, ShareGPT) by example, and every adapter by property."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rlhf_recipes.data.adapters import ADAPTERS, DropRow
from rlhf_recipes.data.errors import DataError


def turn(role, content):
    return {"role": role, "content": content}


@pytest.mark.parametrize(
    ("row", "fmt", "record"),
    [
        (
            {"prompt": "q", "chosen": "a", "rejected": "b"},
            "preference",
            {"prompt": "q", "chosen": "a", "rejected": "b"},
        ),
        (
            {"prompt": "q", "chosen": [turn("assistant", "a")], "rejected": "b"},
            "preference",
            {"prompt": [turn("user", "q")], "chosen": [turn("assistant", "a")], "rejected": [turn("assistant", "b")]},
        ),
        (
            {"chosen": [turn("user", "q"), turn("assistant", "a")], "rejected": [turn("user", "q"), turn("assistant", "b")]},
            "implicit_preference",
            {"prompt": [turn("user", "q")], "chosen": [turn("assistant", "a")], "rejected": [turn("assistant", "b")]},
        ),
        (
            {"prompt": [turn("system", "s"), turn("user", "q")], "completion": [turn("assistant", "a")]},
            "prompt_completion",
            {"prompt": [turn("system", "s"), turn("user", "q")], "completion": [turn("assistant", "a")]},
        ),
        (
            {"messages": [turn("user", "q"), turn("assistant", "a"), turn("user", "q2"), turn("assistant", "a2")]},
            "messages",
            {"prompt": [turn("user", "q"), turn("assistant", "a"), turn("user", "q2")], "completion": [turn("assistant", "a2")]},
        ),
        (
            {"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}], "system": "s"},
            "sharegpt",
            {"prompt": [turn("system", "s"), turn("user", "q")], "completion": [turn("assistant", "a")]},
        ),
        (
            {"instruction": "translate", "input": "hello", "output": "bonjour"},
            "alpaca",
            {"prompt": "translate\nhello", "completion": "bonjour"},
        ),
        (
            {"instruction": "and now?", "input": "", "output": "a2", "system": "s", "history": [["q1", "a1"]]},
            "alpaca",
            {
                "prompt": [turn("system", "s"), turn("user", "q1"), turn("assistant", "a1"), turn("user", "and now?")],
                "completion": [turn("assistant", "a2")],
            },
        ),
        ({"prompt": [turn("user", "q")]}, "prompt_only", {"prompt": [turn("user", "q")]}),
    ],
)
def test_generic_adapters(tmp_path, read_source, write_jsonl, row, fmt, record):
    assert ADAPTERS[fmt].convert(row) == record
    dataset, report = read_source(write_jsonl(tmp_path / "one.jsonl", [row]))
    assert report.steps[0].step.endswith(f"({fmt})")  # detected from the columns
    assert {column: value for column, value in dataset[0].items() if value is not None} == record


def test_alpaca_source_with_history_is_conversational_throughout(tmp_path, read_source, write_jsonl):
    rows = [
        {"instruction": "plain", "input": "", "output": "x", "history": []},
        {"instruction": "follow-up", "input": "", "output": "y", "history": [["first", "answer"]]},
    ]
    dataset, _ = read_source(write_jsonl(tmp_path / "alpaca.jsonl", rows))
    assert dataset[0]["prompt"] == [turn("user", "plain")]
    assert dataset[0]["completion"] == [turn("assistant", "x")]
    assert len(dataset[1]["prompt"]) == 3


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.sampled_from(["role", "content", "from", "value", "x"]), children, max_size=3),
    max_leaves=8,
)
message_like = st.fixed_dictionaries(
    {"role": st.sampled_from(["user", "assistant", "system", "human", "gpt", "tool"]), "content": st.text(max_size=10)}
)
column_values = st.one_of(json_values, st.lists(message_like, max_size=4), st.text(max_size=30))


@pytest.mark.parametrize("fmt", ADAPTERS)
@given(data=st.data())
def test_adapters_return_a_record_or_fail_with_their_own_errors(fmt, data):
    adapter = ADAPTERS[fmt]
    row = {column: data.draw(column_values, label=column) for column in adapter.columns}
    for optional in ("system", "history", "input"):
        row.setdefault(optional, data.draw(st.none() | column_values, label=optional))
    try:
        record = adapter.convert(row)
    except (DropRow, DataError):
        return
    kinds = {"preference": {"prompt", "chosen", "rejected"}, "sft": {"prompt", "completion"}, "prompt": {"prompt"}}
    assert set(record) == kinds[adapter.kind]
    values = list(record.values())
    assert all(isinstance(value, str) for value in values) or all(
        isinstance(value, list) and all(set(message) == {"role", "content"} for message in value) for value in values
    )
