"""`rlhf-recipes make-pairs` with a tiny saved model on the Chinese Alpaca sample."""

import json

import pytest

from rlhf_recipes.cli import main as cli_main
from rlhf_recipes.data import DataArguments, DataError, load_stage_dataset
from rlhf_recipes.tools.make_pairs import MakePairsArguments, make_pairs
from rlhf_recipes.config.parsing import ConfigError

ALPACA_ZH = "llamafactory_alpaca_zh_demo.json"



@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory, save_tiny_model) -> str:
    """A random-init tiny Qwen2 causal LM saved with its byte-level tokenizer: the 'weaker model'."""
    return save_tiny_model(tmp_path_factory.mktemp("weak_model"), family="qwen2")


@pytest.fixture(scope="module")
def alpaca_rows(shared_data) -> dict[str, str]:
    """instruction (+ newline + input) -> output, straight from the file."""
    rows = json.loads((shared_data / ALPACA_ZH).read_text(encoding="utf-8"))
    return {"\n".join(p for p in (r["instruction"], r["input"]) if p): r["output"] for r in rows}


@pytest.fixture(scope="module")
def pairs_file(tiny_dir, shared_data, tmp_path_factory):
    output = tmp_path_factory.mktemp("pairs") / "pairs.jsonl"
    argv = ["make-pairs", "--model_name_or_path", tiny_dir, "--dataset", str(shared_data / ALPACA_ZH),
            "--output", str(output), "--num_samples", "5", "--max_new_tokens", "6", "--max_prompt_length", "256",
            "--data_split", "2,2,1", "--split_part", "reward"]
    assert cli_main(argv) == 0
    return output


def test_pairs_have_the_demonstration_as_chosen_and_the_model_answer_as_rejected(pairs_file, alpaca_rows):
    text = pairs_file.read_text(encoding="utf-8")
    rows = [json.loads(line) for line in text.splitlines()]
    assert len(rows) == 5
    for row in rows:
        [question] = row["prompt"]
        assert question["role"] == "user" and question["content"] in alpaca_rows
        assert row["chosen"] == [{"role": "assistant", "content": alpaca_rows[question["content"]]}]
        [rejected] = row["rejected"]
        assert rejected["role"] == "assistant" and rejected["content"]
        assert rejected["content"] != row["chosen"][0]["content"]
    assert rows[0]["prompt"][0]["content"] in text  # Chinese written as text, not \u escapes


def test_pairs_feed_the_reward_stage(pairs_file):
    args = DataArguments(dataset_name=str(pairs_file), data_split="0,1,0", eval_split_size=0)
    splits = load_stage_dataset(args, "reward")
    assert len(splits["train"]) == 5
    assert set(splits["train"].column_names) == {"prompt", "chosen", "rejected"}


def test_pairs_come_from_the_requested_part_disjoint_from_sft(pairs_file, shared_data):
    sft = load_stage_dataset(
        DataArguments(dataset_name=str(shared_data / ALPACA_ZH), data_split="2,2,1", eval_split_size=0), "sft"
    )
    sft_prompts = set(sft["train"]["prompt"])
    lines = pairs_file.read_text(encoding="utf-8").splitlines()
    pair_prompts = {json.loads(line)["prompt"][0]["content"] for line in lines}
    assert pair_prompts and not pair_prompts & sft_prompts


def test_answers_equal_to_the_demonstration_are_skipped_and_counted(tiny_dir, tmp_path, monkeypatch):
    data = tmp_path / "sft.jsonl"
    data.write_text(json.dumps({"prompt": "你好", "completion": "同样的回答"}, ensure_ascii=False) + "\n", encoding="utf-8")
    monkeypatch.setattr("rlhf_recipes.tools.make_pairs.generate_answers", lambda model, tok, prompts, args: ["同样的回答"])
    args = MakePairsArguments(model_name_or_path=tiny_dir, dataset=str(data), output=str(tmp_path / "out.jsonl"),
                              max_prompt_length=64, max_new_tokens=8)
    assert make_pairs(args) == {"skipped_same_as_chosen": 1}
    assert (tmp_path / "out.jsonl").read_text() == ""


@pytest.mark.parametrize(
    ("overrides", "message"),
    [({"split_part": "eval"}, "split_part must be one of"),
     ({"max_new_tokens": 0}, "max_new_tokens must be a whole number >= 1; got 0"),
     ({"num_samples": 0}, "num_samples must be a whole number >= 1; got 0"),
     ({"temperature": 0.0}, "temperature must be positive")],
)
def test_bad_arguments_are_named(overrides, message):
    with pytest.raises(ConfigError, match=message):
        MakePairsArguments(model_name_or_path="m", dataset="d.json", output="o.jsonl", **overrides)


def test_a_part_with_no_share_is_refused(tiny_dir, shared_data, tmp_path):
    args = MakePairsArguments(model_name_or_path=tiny_dir, dataset=str(shared_data / ALPACA_ZH),
                              output=str(tmp_path / "o.jsonl"), data_split="1,0,0", split_part="reward")
    with pytest.raises(DataError, match="gives stage 'reward' no data"):
        make_pairs(args)


def test_pairs_from_a_mixture_match_the_stages_parts(tiny_dir, shared_data, tmp_path):
    mixer = {str(shared_data / ALPACA_ZH): 0.5, str(shared_data / "llamafactory_dpo_zh_demo.json"): 1.0}
    output = tmp_path / "pairs.jsonl"
    args = MakePairsArguments(model_name_or_path=tiny_dir, dataset_mixer=json.dumps(mixer), output=str(output),
                              data_split="2,2,1", split_part="reward", num_samples=6, max_new_tokens=4,
                              max_prompt_length=256)
    assert make_pairs(args)["written"] == 6
    pairs = [json.loads(line) for line in output.read_text(encoding="utf-8").splitlines()]
    stage_args = dict(dataset_mixer=mixer, data_split="2,2,1", eval_split_size=0)
    sft = load_stage_dataset(DataArguments(**stage_args), "sft")["train"]
    ppo = load_stage_dataset(DataArguments(**stage_args), "ppo")["train"]
    seen_elsewhere = [json.dumps(p, ensure_ascii=False) for p in list(sft["prompt"]) + list(ppo["prompt"])]
    assert not {json.dumps(p["prompt"], ensure_ascii=False) for p in pairs} & set(seen_elsewhere)


def test_no_data_is_refused(tiny_dir, tmp_path):
    args = MakePairsArguments(model_name_or_path=tiny_dir, output=str(tmp_path / "o.jsonl"))
    with pytest.raises(ConfigError, match="set --dataset"):
        make_pairs(args)


def test_prompt_plus_answer_beyond_the_model_positions_is_refused(tiny_dir, shared_data, tmp_path):
    args = MakePairsArguments(model_name_or_path=tiny_dir, dataset=str(shared_data / ALPACA_ZH),
                              output=str(tmp_path / "o.jsonl"), max_prompt_length=500, max_new_tokens=100)
    message = r"max_prompt_length \(500\) \+ max_new_tokens \(100\) exceeds the model's 512 positions"
    with pytest.raises(ConfigError, match=message):
        make_pairs(args)


def test_the_default_prompt_length_fits_a_512_position_model(tiny_dir, shared_data, tmp_path, capsys):
    args = MakePairsArguments(model_name_or_path=tiny_dir, dataset=str(shared_data / ALPACA_ZH),
                              output=str(tmp_path / "o.jsonl"), num_samples=2, max_new_tokens=400, do_sample=False)
    make_pairs(args)
    assert args.max_prompt_length == 112  # 512 positions less 400 new tokens, not the usual 512
    message = "prompts keep their last 112 tokens (the model's 512 positions less max_new_tokens 400)"
    assert message in capsys.readouterr().out
