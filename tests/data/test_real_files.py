"""Every adapter on the real files in /work/shared/data: detection, row counts, drops, known rows."""

import json

import pytest


def raw_rows(path) -> list[dict]:
    if path.suffix == ".json":
        return json.loads(path.read_text(encoding="utf-8"))
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def raw_duplicates(rows: list[dict]) -> int:
    return len(rows) - len({json.dumps(row, sort_keys=True) for row in rows})


# file -> (detected format, rows kept, drops per reason), counts checked against the data README
# and an independent scan of the raw transcripts (identical pairs, empty final replies).
EXPECTED = {
    "hh_rlhf_helpful_base_test_sample.jsonl": ("hh_rlhf", 400, {}),
    "hh_rlhf_harmless_base_test_sample.jsonl": ("hh_rlhf", 399, {"empty_response": 1}),
    "hh_rlhf_helpful_train_pool.jsonl": (
        "hh_rlhf", 3971, {"chosen_equals_rejected": 24, "empty_response": 4, "last_turn_not_assistant": 1}
    ),
    "rm_static_style_sample.jsonl": ("rm_static", 1000, {}),
    "llamafactory_alpaca_zh_demo.json": ("alpaca", 992, {"duplicate": 8}),
    "llamafactory_dpo_zh_demo.json": ("sharegpt_ranking", 239, {"duplicate": 11}),
    "medicalgpt_dpo_zh_500.jsonl": ("medicalgpt_dpo", 420, {}),
    "medicalgpt_medical_reward_zh.jsonl": ("medicalgpt_reward", 85, {}),
}


@pytest.mark.parametrize("name", EXPECTED)
def test_detected_format_row_counts_and_drops(read_source, shared_data, name):
    fmt, kept, drops = EXPECTED[name]
    dataset, report = read_source(shared_data / name)
    (step,) = report.steps
    assert step.step.endswith(f"({fmt})")
    assert step.rows_in == len(raw_rows(shared_data / name))
    assert len(dataset) == kept == step.rows_out
    assert dict(step.dropped) == drops


@pytest.mark.parametrize("name", ["llamafactory_alpaca_zh_demo.json", "llamafactory_dpo_zh_demo.json"])
def test_duplicate_drops_match_exact_repeats_in_the_file(read_source, shared_data, name):
    _, report = read_source(shared_data / name)
    assert report.dropped["duplicate"] == raw_duplicates(raw_rows(shared_data / name)) > 0


def test_hh_first_row(read_source, shared_data):
    path = shared_data / "hh_rlhf_helpful_base_test_sample.jsonl"
    raw = raw_rows(path)[0]
    context, reply = raw["chosen"].rsplit("\n\nAssistant:", 1)
    rejected_reply = raw["rejected"].rsplit("\n\nAssistant:", 1)[1]
    record = read_source(path)[0][0]
    assert record["prompt"][0] == {
        "role": "user",
        "content": "I want to learn how to make gingerbread cookies, can you give me an easy to follow recipe?",
    }
    assert len(record["prompt"]) == context.count("\n\nHuman:") + context.count("\n\nAssistant:") == 7
    assert record["prompt"][-1]["content"] == context.rsplit("\n\nHuman:", 1)[1].strip()
    assert record["chosen"] == [{"role": "assistant", "content": reply.strip()}]
    assert record["rejected"] == [{"role": "assistant", "content": rejected_reply.strip()}]
    assert record["completion"] is None


def test_rm_static_first_row(read_source, shared_data):
    path = shared_data / "rm_static_style_sample.jsonl"
    raw = raw_rows(path)[0]
    record = read_source(path)[0][0]
    assert record["prompt"][0]["content"].startswith("Descartes discusses the pineal gland in his studies.")
    assert record["prompt"][-1]["role"] == "user"
    assert record["chosen"] == [{"role": "assistant", "content": "Absolutely."}]
    assert record["rejected"] == [{"role": "assistant", "content": "Sure, I feel the same way."}]
    assert raw["chosen"] == " Absolutely."


def test_rm_static_and_hh_parse_the_same_dialogues_identically(read_source, shared_data):
    """The README: every rm-static row is a train-pool row cut at its last Assistant marker."""
    rm_static = read_source(shared_data / "rm_static_style_sample.jsonl")[0]
    pool = read_source(shared_data / "hh_rlhf_helpful_train_pool.jsonl")[0]
    pool_keys = {json.dumps(row, sort_keys=True) for row in pool}
    assert all(json.dumps(row, sort_keys=True) in pool_keys for row in rm_static)


def test_alpaca_rows_are_strings_with_input_appended(read_source, shared_data):
    path = shared_data / "llamafactory_alpaca_zh_demo.json"
    raw = raw_rows(path)
    dataset = read_source(path)[0]
    assert dataset[0] == {
        "prompt": "识别并解释给定列表中的两个科学理论：细胞理论和日心说。",
        "completion": raw[0]["output"],
        "chosen": None,
        "rejected": None,
    }
    with_input = next(i for i, row in enumerate(raw) if row["input"])
    assert with_input < 516  # before the first dropped duplicate, so indices still line up
    assert dataset[with_input]["prompt"] == raw[with_input]["instruction"] + "\n" + raw[with_input]["input"]


def test_llamafactory_ranking_rows_with_and_without_system_turn(read_source, shared_data):
    path = shared_data / "llamafactory_dpo_zh_demo.json"
    raw = raw_rows(path)
    dataset = read_source(path)[0]
    assert dataset[0]["prompt"] == [{"role": "user", "content": raw[0]["conversations"][0]["value"]}]
    assert dataset[0]["chosen"] == [{"role": "assistant", "content": raw[0]["chosen"]["value"]}]
    assert dataset[0]["rejected"] == [{"role": "assistant", "content": raw[0]["rejected"]["value"]}]
    with_system = next(i for i, row in enumerate(raw) if len(row["conversations"]) == 2)
    assert with_system < 71  # before the first dropped duplicate
    assert [m["role"] for m in dataset[with_system]["prompt"]] == ["system", "user"]
    assert dataset[with_system]["prompt"][0]["content"] == raw[with_system]["conversations"][0]["value"]


def test_medicalgpt_dpo_first_row(read_source, shared_data):
    path = shared_data / "medicalgpt_dpo_zh_500.jsonl"
    raw = raw_rows(path)[0]
    record = read_source(path)[0][0]
    assert record["prompt"] == [{"role": "user", "content": raw["conversations"][0]["value"]}]
    assert record["chosen"] == [{"role": "assistant", "content": raw["chosen"]}]
    assert record["rejected"] == [{"role": "assistant", "content": raw["rejected"]}]


def test_medicalgpt_reward_first_row(read_source, shared_data):
    record = read_source(shared_data / "medicalgpt_medical_reward_zh.jsonl")[0][0]
    assert record == {
        "prompt": "肛门病变可能是什么疾病的症状?",
        "completion": None,
        "chosen": "食管克罗恩病",
        "rejected": "肛门病变可能与多种不同类型的病症有关。",
    }
