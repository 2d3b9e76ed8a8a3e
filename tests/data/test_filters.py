"""Bad rows are dropped, counted per reason, logged and reported; dropping everything is an error."""

import logging

import pytest

from rlhf_recipes.data import DataArguments, DataError, build_stage_dataset

GOOD = [{"prompt": f"question {i}", "chosen": f"good {i}", "rejected": f"bad {i}"} for i in range(10)]
BAD = [
    {"prompt": "", "chosen": "a", "rejected": "b"},  # row 10: empty prompt
    {"prompt": "   ", "chosen": "a", "rejected": "b"},  # row 11: blank prompt
    {"prompt": "q", "chosen": "", "rejected": "b"},  # row 12: empty response
    {"prompt": "q", "chosen": "a", "rejected": None},  # row 13: missing response
    {"prompt": "q", "chosen": "same", "rejected": "same"},  # row 14
    GOOD[3],  # row 15: duplicate of row 3
    GOOD[3],  # row 16
]


@pytest.fixture
def messy_file(tmp_path, write_jsonl):
    return str(write_jsonl(tmp_path / "messy.jsonl", GOOD + BAD))


def test_drops_are_counted_per_reason_with_row_indices(messy_file):
    data, report = build_stage_dataset(DataArguments(dataset_name=messy_file, data_split="0,1,0", eval_split_size=0), "reward")
    assert len(data["train"]) == 10
    assert report.dropped == {"empty_prompt": 2, "empty_response": 2, "chosen_equals_rejected": 1, "duplicate": 2}
    source = report.steps[0]
    assert (source.rows_in, source.rows_out) == (17, 10)
    assert source.examples == {
        "empty_prompt": [10, 11],
        "empty_response": [12, 13],
        "chosen_equals_rejected": [14],
        "duplicate": [15, 16],
    }
    summary = report.to_dict()
    assert summary["dropped"] == dict(report.dropped)
    assert summary["sizes"] == {"rows": 10, "stage_part": 10, "train": 10, "eval": 0}


def test_drop_summary_is_logged(messy_file, caplog):
    with caplog.at_level(logging.INFO, logger="rlhf_recipes.data"):
        build_stage_dataset(DataArguments(dataset_name=messy_file, data_split="0,1,0", eval_split_size=0), "reward")
    warnings = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "17 rows in, 10 kept, 7 dropped" in warnings[0]
    assert "chosen_equals_rejected=1, duplicate=2, empty_prompt=2, empty_response=2" in warnings[0]
    assert any("reward data: rows=10, stage_part=10, train=10, eval=0" in record.getMessage() for record in caplog.records)


def test_conversational_rows_with_empty_turns(tmp_path, write_jsonl):
    def turn(role, content):
        return {"role": role, "content": content}

    rows = [
        {"messages": [turn("user", "hi"), turn("assistant", "hello")]},
        {"messages": [turn("user", ""), turn("assistant", "hello")]},  # empty prompt
        {"messages": [turn("user", "hi"), turn("assistant", " ")]},  # empty response
        {"messages": [turn("user", "hi")]},  # nothing to learn
    ]
    path = write_jsonl(tmp_path / "chat.jsonl", rows)
    data, report = build_stage_dataset(DataArguments(dataset_name=str(path), data_split="1,0,0", eval_split_size=0), "sft")
    assert data["train"].to_list() == [{"prompt": [turn("user", "hi")], "completion": [turn("assistant", "hello")]}]
    assert report.dropped == {"empty_prompt": 1, "empty_response": 1, "last_turn_not_assistant": 1}


def test_unsupported_roles_are_dropped_and_counted(tmp_path, write_jsonl, read_source):
    rows = [
        {"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]},
        {"conversations": [{"from": "human", "value": "q"}, {"from": "function_call", "value": "{}"}]},
    ]
    dataset, report = read_source(write_jsonl(tmp_path / "sharegpt.jsonl", rows))
    assert report.steps[0].step.endswith("(sharegpt)")
    assert len(dataset) == 1
    assert report.dropped == {"unsupported_role": 1}


def test_adapter_that_drops_every_row_is_an_error(tmp_path, write_jsonl, read_source):
    rows = [{"chosen": f"Human: no blank-line markers {i}", "rejected": f"Human: x {i}"} for i in range(5)]
    path = write_jsonl(tmp_path / "not_hh.jsonl", rows)
    with pytest.raises(DataError, match="all 5 rows were dropped reading it as hh_rlhf \\(malformed_transcript=5\\)"):
        read_source(path)


def test_file_of_only_bad_rows_is_an_error(tmp_path, write_jsonl, read_source):
    path = write_jsonl(tmp_path / "empty.jsonl", [{"prompt": "", "completion": "x"}, {"prompt": "q", "completion": ""}])
    with pytest.raises(DataError, match="all 2 rows were dropped reading it as prompt_completion \\(empty_prompt=1, empty_response=1\\)"):
        read_source(path)
