"""Reading sources: local file types, saved datasets, the Hub path, column mapping, and bad input errors."""

import json
import re

import datasets
import pytest
from datasets import Dataset, DatasetDict

from rlhf_recipes.data import DataArguments, DataError, load_stage_dataset
from rlhf_recipes.data.io import is_local, load_raw

USER_ROWS = [{"question": f"q{i}", "good": f"yes {i}", "bad": f"no {i}", "id": i} for i in range(20)]
MAPPING = {"prompt": "question", "chosen": "good", "rejected": "bad"}


def write_user_file(path):
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(row) + "\n" for row in USER_ROWS), encoding="utf-8")
    elif path.suffix == ".json":
        path.write_text(json.dumps(USER_ROWS, indent=2), encoding="utf-8")
    elif path.suffix == ".csv":
        Dataset.from_list(USER_ROWS).to_csv(str(path), index=False)
    else:
        Dataset.from_list(USER_ROWS).to_parquet(str(path))
    return path


@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".csv", ".parquet"])
def test_column_mapping_on_user_files(tmp_path, read_source, suffix):
    path = write_user_file(tmp_path / f"user{suffix}")
    dataset, report = read_source(path, column_mapping=json.dumps(MAPPING))
    assert report.steps[0].step.endswith("(preference)")
    assert dataset.to_list() == [
        {"prompt": f"q{i}", "completion": None, "chosen": f"yes {i}", "rejected": f"no {i}"} for i in range(20)
    ]


def test_user_file_through_the_reward_stage(tmp_path):
    path = write_user_file(tmp_path / "user.csv")
    data = load_stage_dataset(
        DataArguments(dataset_name=str(path), column_mapping=MAPPING, data_split="0,1,0", eval_split_size=4), "reward"
    )
    assert data["train"].column_names == ["prompt", "chosen", "rejected"]
    rows = data["train"].to_list() + data["eval"].to_list()
    assert sorted(rows, key=lambda row: int(row["prompt"][1:])) == [
        {"prompt": f"q{i}", "chosen": f"yes {i}", "rejected": f"no {i}"} for i in range(20)
    ]


def test_column_mapping_naming_a_missing_column(tmp_path, read_source):
    path = write_user_file(tmp_path / "user.jsonl")
    with pytest.raises(DataError, match=r"column_mapping names column\(s\) \['answer'\].*columns present: \['question', 'good', 'bad', 'id'\]"):
        read_source(path, column_mapping={"prompt": "question", "completion": "answer"})


def test_column_mapping_onto_an_existing_column(tmp_path, read_source, write_jsonl):
    path = write_jsonl(tmp_path / "d.jsonl", [{"prompt": "p", "question": "q", "completion": "c"}])
    with pytest.raises(DataError, match=r"renames onto column\(s\) \['prompt'\], which already exist"):
        read_source(path, column_mapping={"prompt": "question"})


def test_explicit_format_missing_a_column_names_it_and_the_columns_present(tmp_path, read_source, write_jsonl):
    path = write_jsonl(tmp_path / "d.jsonl", [{"instruction": "do it", "answer": "done"}])
    with pytest.raises(DataError) as err:
        read_source(path, dataset_format="alpaca")
    message = str(err.value)
    assert "format 'alpaca' needs column(s) ['output']" in message
    assert "columns present: ['instruction', 'answer']" in message
    assert str(path) in message


def test_undetectable_columns_list_the_known_formats(tmp_path, read_source, write_jsonl):
    path = write_jsonl(tmp_path / "d.jsonl", [{"text": "hello"}])
    with pytest.raises(DataError, match=r"cannot detect the data format from its columns \['text'\].*hh_rlhf \(chosen, rejected\)"):
        read_source(path)


def test_malformed_jsonl_line_names_file_and_line(tmp_path, read_source):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"prompt": "a", "completion": "b"}\n\n{"prompt": "c", "completion": }\n', encoding="utf-8")
    with pytest.raises(DataError, match=rf"{re.escape(str(path))}, line 3: malformed JSON \(Expecting value at column 31\)"):
        read_source(path)


def test_jsonl_line_that_is_not_an_object(tmp_path, read_source):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"prompt": "a"}\n["prompt"]\n', encoding="utf-8")
    with pytest.raises(DataError, match=rf"{re.escape(str(path))}, line 2: expected a JSON object, got list"):
        read_source(path)


def test_malformed_json_array_names_file_line_and_column(tmp_path, read_source):
    path = tmp_path / "bad.json"
    path.write_text('[\n  {"prompt": "a", "completion": "b"},\n  {"prompt": "c" "completion": "d"}\n]\n', encoding="utf-8")
    with pytest.raises(DataError, match=rf"{re.escape(str(path))}, line 3, column 18: malformed JSON array \(Expecting ',' delimiter\)"):
        read_source(path)


def test_json_file_holding_json_lines_is_read_as_such(tmp_path, read_source):
    path = tmp_path / "lines.json"
    path.write_text('{"prompt": "a", "completion": "b"}\n{"prompt": "c", "completion": "d"}\n', encoding="utf-8")
    assert read_source(path)[0]["prompt"] == ["a", "c"]
    path.write_text('{"prompt": "a", "completion": "b"}\n"just a string"\n', encoding="utf-8")
    with pytest.raises(DataError, match=rf"{re.escape(str(path))}, line 2: expected a JSON object, got str"):
        read_source(path)


@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".csv"])
def test_non_utf8_bytes_name_file_and_line(tmp_path, read_source, suffix):
    path = tmp_path / f"latin1{suffix}"
    lines = {
        ".jsonl": ['{"prompt": "a", "completion": "b"}', '{"prompt": "caf\u00e9", "completion": "d"}'],
        ".json": ['[{"prompt": "a", "completion": "b"},', '{"prompt": "caf\u00e9", "completion": "d"}]'],
        ".csv": ["prompt,completion", "caf\u00e9,d"],
    }[suffix]
    path.write_bytes("\n".join(lines).encode("latin-1"))
    with pytest.raises(DataError, match=rf"{re.escape(str(path))}, line 2: not valid UTF-8 \(byte b'\\xe9' at column"):
        read_source(path)


def test_field_changing_type_between_rows(tmp_path, read_source, write_jsonl):
    path = write_jsonl(tmp_path / "d.jsonl", [{"prompt": "a", "completion": "b"}, {"prompt": {"x": 1}, "completion": "d"}])
    with pytest.raises(DataError, match=rf"{re.escape(str(path))}: rows do not share one schema \(field 'prompt' is str in row 1 but dict in row 2"):
        read_source(path)


def test_non_text_value_names_source_row_and_column(tmp_path, read_source, write_jsonl):
    path = write_jsonl(tmp_path / "d.jsonl", [{"prompt": "a", "completion": 1}, {"prompt": "c", "completion": 5}])
    with pytest.raises(DataError, match=rf"{re.escape(str(path))}, row 0 \(prompt_completion format\): column 'completion' holds a int"):
        read_source(path)


def test_missing_and_empty_files(tmp_path, read_source):
    with pytest.raises(DataError, match="Data file or directory not found"):
        read_source(tmp_path / "nope.jsonl")
    (tmp_path / "empty.jsonl").write_text("\n", encoding="utf-8")
    with pytest.raises(DataError, match="holds no rows"):
        read_source(tmp_path / "empty.jsonl")


def test_saved_dataset_directory_and_split(tmp_path, read_source):
    DatasetDict(
        train=Dataset.from_list([{"prompt": "p", "completion": "c"}]),
        test=Dataset.from_list([{"prompt": "tp", "completion": "tc"}]),
    ).save_to_disk(str(tmp_path / "saved"))
    dataset, _ = read_source(tmp_path / "saved", dataset_split="test")
    assert dataset["prompt"] == ["tp"]
    with pytest.raises(DataError, match="has no split 'validation' \\(dataset_split\\); its splits: train, test"):
        read_source(tmp_path / "saved", dataset_split="validation")


def test_directory_that_is_not_a_saved_dataset(tmp_path, read_source):
    (tmp_path / "plain").mkdir()
    with pytest.raises(DataError, match="not one written by Dataset.save_to_disk"):
        read_source(tmp_path / "plain")


@pytest.fixture
def fake_hub(monkeypatch):
    """Replaces `datasets.load_dataset` with a recorder returning a tiny preference dataset."""
    calls = []

    def load_dataset(*args, **kwargs):
        calls.append((args, kwargs))
        return Dataset.from_list([{"prompt": f"p{i}", "chosen": f"c{i}", "rejected": f"r{i}"} for i in range(10)])

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    return calls


def test_hub_id_is_read_with_config_and_split(fake_hub, read_source):
    dataset, _ = read_source("Dahoas/rm-static", dataset_config="default", dataset_split="test")
    assert fake_hub == [(("Dahoas/rm-static", "default"), {"split": "test"})]
    assert len(dataset) == 10


@pytest.mark.parametrize("name", ["./data/train.jsonl", "data.jsonl", "/abs/dir", "a/b/c", "~/data"])
def test_local_looking_names_never_reach_the_hub(fake_hub, read_source, name):
    assert is_local(name)
    with pytest.raises(DataError, match="not found"):
        read_source(name)
    assert fake_hub == []


def test_existing_local_file_never_reaches_the_hub(fake_hub, tmp_path, write_jsonl):
    write_jsonl(tmp_path / "d.jsonl", [{"prompt": "p", "completion": "c"}])
    assert load_raw(str(tmp_path / "d.jsonl"))["prompt"] == ["p"]
    assert fake_hub == []


@pytest.mark.parametrize("name", ["Anthropic/hh-rlhf", "imdb"])
def test_hub_ids_are_not_local(name):
    assert not is_local(name)


def test_malformed_csv_names_file_and_line(tmp_path, read_source):
    path = tmp_path / "bad.csv"
    path.write_text("prompt,completion\na,b\nc,d,e,f\n", encoding="utf-8")
    with pytest.raises(DataError, match=rf"{re.escape(str(path))}: cannot be read as CSV: .*Expected 2 fields in line 3"):
        read_source(path)


def test_unsupported_file_type(tmp_path, read_source):
    path = tmp_path / "notes.txt"
    path.write_text("hello", encoding="utf-8")
    with pytest.raises(DataError, match="Unsupported data file type '.txt'.*use one of .json, .jsonl, .csv, .parquet"):
        read_source(path)
