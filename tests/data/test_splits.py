"""`data_split` parts (disjoint, sized, deterministic), the eval hold-out and `max_samples`."""

import json
import os
import subprocess
import sys

import pytest

from rlhf_recipes.data import DataArguments, DataError, build_stage_dataset, load_stage_dataset

STAGE_SIZES = {"sft": 20, "reward": 40, "ppo": 40}  # 2,4,4 of 100 rows


@pytest.fixture
def hundred_rows(tmp_path, write_jsonl):
    rows = [{"prompt": f"question {i}", "chosen": f"good {i}", "rejected": f"bad {i}"} for i in range(100)]
    return str(write_jsonl(tmp_path / "pairs.jsonl", rows))


def prompts(data) -> set[str]:
    return set(data["train"]["prompt"]) | set(data["eval"]["prompt"])


def test_parts_are_disjoint_cover_the_data_and_follow_the_proportions(hundred_rows):
    args = DataArguments(dataset_name=hundred_rows, eval_split_size=0)
    parts = {stage: load_stage_dataset(args, stage) for stage in STAGE_SIZES}
    assert {stage: len(data["train"]) for stage, data in parts.items()} == STAGE_SIZES
    sft, reward, ppo = (prompts(parts[stage]) for stage in STAGE_SIZES)
    assert not sft & reward and not sft & ppo and not reward & ppo
    assert sft | reward | ppo == {f"question {i}" for i in range(100)}


def test_parts_are_deterministic_and_depend_on_the_seed(hundred_rows):
    def sft_prompts(seed):
        return load_stage_dataset(DataArguments(dataset_name=hundred_rows, split_seed=seed), "sft")["train"]["prompt"]

    assert sft_prompts(1) == sft_prompts(1)
    assert set(sft_prompts(1)) != set(sft_prompts(2))


def test_parts_are_the_same_in_another_process(hundred_rows):
    code = (
        "import json, sys; from rlhf_recipes.data import DataArguments, load_stage_dataset; "
        "d = load_stage_dataset(DataArguments(dataset_name=sys.argv[1], split_seed=7), 'reward'); "
        "print(json.dumps([list(d['train']['prompt']), list(d['eval']['prompt'])]))"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}  # set iteration order must not matter either
    other = subprocess.run([sys.executable, "-c", code, hundred_rows], capture_output=True, text=True, check=True, env=env)
    here = load_stage_dataset(DataArguments(dataset_name=hundred_rows, split_seed=7), "reward")
    assert json.loads(other.stdout.strip().splitlines()[-1]) == [list(here["train"]["prompt"]), list(here["eval"]["prompt"])]


def test_stage_with_weight_zero_is_an_error(hundred_rows):
    with pytest.raises(DataError, match="data_split gives stage 'sft' no data \\(weight 0 in 0,1,1\\)"):
        load_stage_dataset(DataArguments(dataset_name=hundred_rows, data_split="0,1,1"), "sft")


def test_stage_whose_part_rounds_to_no_rows_is_an_error(tmp_path, write_jsonl):
    path = write_jsonl(tmp_path / "three.jsonl", [{"prompt": f"p{i}", "completion": f"c{i}"} for i in range(3)])
    with pytest.raises(DataError, match="leaves stage 'sft' no rows of the 3 available"):
        load_stage_dataset(DataArguments(dataset_name=str(path), data_split="1,50,50"), "sft")


def test_data_split_all_gives_every_stage_every_row_in_file_order(hundred_rows):
    rows = [json.loads(line) for line in open(hundred_rows, encoding="utf-8")]
    for stage in ("sft", "reward", "ppo"):
        data = load_stage_dataset(DataArguments(dataset_name=hundred_rows, data_split="all", eval_split_size=0), stage)
        assert data["train"]["prompt"] == [row["prompt"] for row in rows]


def test_whole_dataset_for_one_stage(hundred_rows):
    data = load_stage_dataset(DataArguments(dataset_name=hundred_rows, data_split="0,1,0", eval_split_size=0.1), "reward")
    assert (len(data["train"]), len(data["eval"])) == (90, 10)
    assert not set(data["train"]["prompt"]) & set(data["eval"]["prompt"])


@pytest.mark.parametrize(("eval_split_size", "expected"), [(0.05, 2), (0.1, 4), (7, 7), (0, 0)])
def test_eval_hold_out_fraction_or_count(hundred_rows, eval_split_size, expected):
    data = load_stage_dataset(DataArguments(dataset_name=hundred_rows, eval_split_size=eval_split_size), "ppo")
    assert len(data["eval"]) == expected
    assert len(data["train"]) == 40 - expected
    assert data["eval"].column_names == ["prompt"]


def test_eval_hold_out_leaving_nothing_to_train_on(hundred_rows):
    with pytest.raises(DataError, match="eval_split_size=40 holds out 40 of only 40 rows"):
        load_stage_dataset(DataArguments(dataset_name=hundred_rows, eval_split_size=40), "ppo")


def test_max_samples_caps_train_only(hundred_rows):
    data, report = build_stage_dataset(DataArguments(dataset_name=hundred_rows, max_samples=5), "reward")
    uncapped = load_stage_dataset(DataArguments(dataset_name=hundred_rows), "reward")
    assert data["train"]["prompt"] == uncapped["train"]["prompt"][:5]
    assert data["eval"]["prompt"] == uncapped["eval"]["prompt"]
    assert report.sizes == {"rows": 100, "stage_part": 40, "train": 5, "eval": 2}


def test_real_hh_pool_split_sizes(shared_data):
    args = DataArguments(dataset_name=str(shared_data / "hh_rlhf_helpful_train_pool.jsonl"))
    data, report = build_stage_dataset(args, "reward")
    # 3971 rows kept; the reward part is rows round(0.2 * 3971) .. round(0.6 * 3971) = 794 .. 2383
    assert report.sizes == {"rows": 3971, "stage_part": 1589, "train": 1509, "eval": 80}
    assert len(data["train"]) + len(data["eval"]) == 1589
