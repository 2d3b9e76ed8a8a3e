"""The pipeline's bookkeeping with stand-in stage functions: finished steps are skipped on a
re-run, a step that runs makes every later step run, --overwrite reruns all, changed settings
rerun, a failed step is rerun; and the per-stage config files the real stages would read."""

import json

import pytest
import yaml

from rlhf_recipes.pipeline import runner as pipeline
from rlhf_recipes.config.parsing import ConfigError
from rlhf_recipes.pipeline.runner import Pipeline
from rlhf_recipes.pipeline.spec import load_spec, spec_from_dict

ORDER = ["data", "pretrain", "sft", "reward", "select", "ppo", "evaluate"]


def _spec(tmp_path, **changes):
    raw = {
        "output_dir": str(tmp_path / "run"),
        "seed": 3,
        "task": {"provider": "rlhf_recipes.demo.provider:MaxDigitTask", "num_pairs": 100},
        "model": {"model_name_or_path": "tiny:opt", "model_config_overrides": {"hidden_size": 32}},
        "stages": {"pretrain": {"max_steps": 1}, "sft": {"max_steps": 2}, "reward": {"learning_rate": 1e-3},
                   "ppo": {"max_steps": 1}},
        "selection": {"num_prompts": 5},
        "evaluation": {"num_prompts": 5},
    }
    raw.update(changes)
    return spec_from_dict(raw)


@pytest.fixture
def calls(monkeypatch):
    """Replaces every step with a recorder that leaves a file in the step's output."""
    made = []

    def stage(name):
        def run(config):
            settings = yaml.safe_load(open(config))
            made.append(name)
            (pipeline.Path(settings["output_dir"])).mkdir(parents=True, exist_ok=True)
            (pipeline.Path(settings["output_dir"]) / "weights.txt").write_text(name)
        return run

    def step(name):
        def run(spec, settings, task):
            made.append(name)
            if name == "select":
                return {"chosen": "final", "chosen_path": settings["sft_dir"], "candidates": []}
            return {"stages": {}} if name == "evaluate" else None
        return run

    for name in ("pretrain", "sft", "reward", "ppo"):
        monkeypatch.setitem(pipeline.STAGE_RUNNERS, name, stage(name))
    for name in ("data", "select", "evaluate"):
        monkeypatch.setitem(pipeline.STEP_RUNNERS, name, step(name))
    return made


def _statuses(run_dir):
    info = json.loads((run_dir / "run_info.json").read_text())
    return {entry["name"]: entry["status"] for entry in info["stages"]}


def test_first_run_runs_every_step_in_order_and_marks_each_finished(tmp_path, calls):
    run_dir = Pipeline(_spec(tmp_path)).run()
    assert calls == ORDER
    for stage in ("data", "pretrain", "sft", "reward", "ppo"):
        assert (run_dir / stage / "pipeline_done.json").is_file()
    assert (run_dir / "selection.json").is_file() and (run_dir / "evaluation.json").is_file()
    assert set(_statuses(run_dir).values()) == {"ran"}


def test_rerun_skips_finished_steps(tmp_path, calls):
    Pipeline(_spec(tmp_path)).run()
    calls.clear()
    run_dir = Pipeline(_spec(tmp_path)).run()
    assert calls == []
    assert set(_statuses(run_dir).values()) == {"skipped"}
    assert (run_dir / "sft" / "weights.txt").read_text() == "sft"


def test_an_unfinished_step_reruns_with_every_later_step(tmp_path, calls):
    run_dir = Pipeline(_spec(tmp_path)).run()
    (run_dir / "sft" / "pipeline_done.json").unlink()
    (run_dir / "sft" / "checkpoint-1").mkdir()
    calls.clear()
    Pipeline(_spec(tmp_path)).run()
    assert calls == ["sft", "reward", "select", "ppo", "evaluate"]
    assert not (run_dir / "sft" / "checkpoint-1").exists()  # old output removed before the rerun


def test_overwrite_reruns_everything(tmp_path, calls):
    Pipeline(_spec(tmp_path)).run()
    calls.clear()
    Pipeline(_spec(tmp_path), overwrite=True).run()
    assert calls == ORDER


def test_changed_settings_rerun_that_step_and_the_later_ones(tmp_path, calls):
    Pipeline(_spec(tmp_path)).run()
    calls.clear()
    changed = _spec(tmp_path)
    changed.stages["reward"]["learning_rate"] = 5e-4
    Pipeline(changed).run()
    assert calls == ["reward", "select", "ppo", "evaluate"]


def test_a_failed_step_leaves_no_marker_and_runs_again(tmp_path, calls, monkeypatch):
    def broken(config):
        raise RuntimeError("out of memory")

    recorder = pipeline.STAGE_RUNNERS["reward"]
    monkeypatch.setitem(pipeline.STAGE_RUNNERS, "reward", broken)
    with pytest.raises(RuntimeError):
        Pipeline(_spec(tmp_path)).run()
    assert not (tmp_path / "run" / "reward" / "pipeline_done.json").exists()
    calls.clear()
    monkeypatch.setitem(pipeline.STAGE_RUNNERS, "reward", recorder)
    Pipeline(_spec(tmp_path)).run()
    assert calls == ["reward", "select", "ppo", "evaluate"]


def test_stage_configs_chain_the_models_and_the_task_files(tmp_path, calls):
    run_dir = Pipeline(_spec(tmp_path)).run()
    configs = {s: yaml.safe_load((run_dir / "configs" / f"{s}.yaml").read_text()) for s in ("pretrain", "sft", "reward", "ppo")}
    assert configs["pretrain"]["model_name_or_path"] == "tiny:opt"
    assert configs["pretrain"]["model_config_overrides"] == {"hidden_size": 32}
    assert configs["pretrain"]["tokenizer_name_or_path"] == str(run_dir / "data" / "tokenizer")
    assert configs["sft"]["model_name_or_path"] == str(run_dir / "pretrain")
    assert "model_config_overrides" not in configs["sft"]
    assert configs["reward"]["model_name_or_path"] == str(run_dir / "sft")
    assert configs["ppo"]["sft_model_path"] == str(run_dir / "sft")
    assert configs["ppo"]["reward_model_path"] == str(run_dir / "reward")
    assert configs["sft"]["dataset_name"].endswith("data/sft.jsonl") and configs["sft"]["data_split"] == "1,0,0"
    assert configs["reward"]["dataset_name"].endswith("data/pairs.jsonl")
    assert configs["ppo"]["ptx_dataset_name"].endswith("data/ptx.jsonl")
    assert configs["ppo"]["data_split"] == configs["ppo"]["ptx_data_split"] == "all"
    assert {c["seed"] for c in configs.values()} == {3}
    assert configs["sft"]["max_steps"] == 2


def test_stage_config_files_are_merged_under_inline_fields(tmp_path, calls):
    (tmp_path / "sft.yaml").write_text("learning_rate: 0.1\nmax_steps: 7\n")
    path = tmp_path / "pipeline.yaml"
    raw = {"output_dir": str(tmp_path / "run"), "task": {"provider": "rlhf_recipes.demo.provider:MaxDigitTask"}, "stages": {
        "sft": {"config": "sft.yaml", "max_steps": 9}, "reward": {}, "ppo": {}}}
    path.write_text(yaml.safe_dump(raw))
    run_dir = Pipeline(load_spec(str(path))).run()
    sft = yaml.safe_load((run_dir / "configs" / "sft.yaml").read_text())
    assert sft["learning_rate"] == 0.1 and sft["max_steps"] == 9


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"stages": {"sft": {}, "reward": {}}}, "'ppo' stage"),
        ({"stages": {"sft": {}, "reward": {}, "ppo": {}, "dpo": {}}}, "dpo"),
        ({"task": None}, "pretrain"),
        ({"task": {"provider": "rlhf_recipes.demo.provider:NoSuchTask"}}, "cannot be imported"),
        ({"task": {"provider": "rlhf_recipes.demo.provider:MaxDigitTask", "num_pears": 1}}, "num_pears"),
        ({"learning_rate": 1.0}, "learning_rate"),
        ({"evaluation": {"probe_prompts": "How does a telescope work?"}}, "probe_prompts"),
        ({"evaluation": {"probe_prompts": ["Why?", "  "]}}, "probe_prompts"),
        ({"evaluation": {"probe_prompts": [[{"role": "user"}]]}}, "probe_prompts"),
    ],
)
def test_invalid_pipelines_are_rejected_before_running(tmp_path, change, message):
    with pytest.raises(ConfigError, match=message):
        _spec(tmp_path, **change)
