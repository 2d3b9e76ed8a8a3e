"""The pipeline recipe files: the tiny one is the demo's built-in settings, every stage config that the
tiny, tiny-hh and SmolLM2 pipelines resolve is accepted by that stage's real parser, and the SmolLM2 one
chains its LoRA stages' merged models, evaluates the base model and carries its probe prompts as written."""

import json
from pathlib import Path

import pytest
import yaml
from trl import RewardConfig, SFTConfig

from rlhf_recipes.data import DataArguments
from rlhf_recipes.demo.run import DEMO_PIPELINE
from rlhf_recipes.models import ModelArguments
from rlhf_recipes.config.parsing import parse_args
from rlhf_recipes.pipeline.resolve import Resolver
from rlhf_recipes.pipeline.runner import run_pipeline
from rlhf_recipes.pipeline.spec import load_spec, spec_from_dict
from rlhf_recipes.ppo import PPOConfig
from rlhf_recipes.ppo.run import PPOScriptArguments
from rlhf_recipes.stages.reward import RewardScriptArguments

RECIPES = Path(__file__).resolve().parents[2] / "recipes"
PARSERS = {
    "pretrain": [ModelArguments, DataArguments, SFTConfig],
    "sft": [ModelArguments, DataArguments, SFTConfig],
    "reward": [ModelArguments, DataArguments, RewardConfig, RewardScriptArguments],
    "ppo": [ModelArguments, DataArguments, PPOConfig, PPOScriptArguments],
}


def test_tiny_pipeline_yaml_is_the_demo():
    assert yaml.safe_load((RECIPES / "tiny" / "pipeline.yaml").read_text()) == DEMO_PIPELINE


@pytest.mark.parametrize("recipe", ["tiny", "tiny-hh", "smollm2-135m"])
def test_resolved_stage_configs_parse_with_the_stage_parsers(recipe, tmp_path):
    spec = load_spec(str(RECIPES / recipe / "pipeline.yaml"), {"output_dir": str(tmp_path / "run")})
    resolver = Resolver(spec)
    selection = {"chosen_path": str(tmp_path / "run" / "sft" / "checkpoint-30")}
    for stage in spec.stages:
        path = tmp_path / f"{stage}.yaml"
        path.write_text(yaml.safe_dump(resolver.stage_settings(stage, selection)))
        parsed = parse_args(PARSERS[stage], ["--config", str(path)])
        training_args = parsed[2]
        assert training_args.output_dir == str(tmp_path / "run" / stage)
        assert training_args.seed == spec.seed
    assert resolver.evaluate_settings(selection)["reference_dir"] == selection["chosen_path"]


SMOLLM2_PROBES = [
    "How does a telescope work?",
    "Why do birds migrate south for the winter?",
    "What should I do if I can't fall asleep at night?",
    "天空为什么是蓝色的？",
    "请给我三条保持健康的建议。",
]


def test_smollm2_pipeline_uses_the_recipe_files_merged_models_and_its_probes(tmp_path):
    spec = load_spec(str(RECIPES / "smollm2-135m" / "pipeline.yaml"), {"output_dir": str(tmp_path / "run")})
    run, resolver = tmp_path / "run", Resolver(spec)
    for stage in ("sft", "reward", "ppo"):  # the stage YAMLs' settings, only output and model paths replaced
        own = yaml.safe_load((RECIPES / "smollm2-135m" / f"{stage}.yaml").read_text())
        resolved = resolver.stage_settings(stage, {"chosen_path": str(run / "sft" / "merged")})
        changed = {k for k in own if resolved.get(k) != own[k]}
        assert changed <= {"output_dir", "model_name_or_path", "sft_model_path", "reward_model_path"}, changed
    reward = resolver.stage_settings("reward", None)
    assert reward["model_name_or_path"] == str(run / "sft" / "merged")  # LoRA + merge_lora: the merged model
    ppo = resolver.stage_settings("ppo", {"chosen_path": str(run / "sft" / "merged")})
    assert ppo["reward_model_path"] == str(run / "reward" / "merged")
    assert resolver.select_settings()["sft_dir"] == str(run / "sft" / "merged")
    evaluate = resolver.evaluate_settings({"chosen_path": str(run / "sft" / "merged")})
    assert evaluate["policies"] == {"base": "smollm2-135m-instruct", "sft": str(run / "sft" / "merged"),
                                    "ppo": str(run / "ppo" / "merged")}
    assert evaluate["reward_dir"] == str(run / "reward" / "merged")
    assert evaluate["probe_prompts"] == SMOLLM2_PROBES


def test_only_a_pretrained_first_model_with_its_own_tokenizer_is_the_base(tmp_path):
    selection = {"chosen_path": str(tmp_path / "sft")}
    policies = {recipe: Resolver(load_spec(str(RECIPES / recipe / "pipeline.yaml"))).evaluate_settings(selection)["policies"]
                for recipe in ("tiny", "tiny-hh")}
    assert list(policies["tiny"]) == ["pretrained", "sft", "ppo"]  # stage 0 is the demo's base
    assert list(policies["tiny-hh"]) == ["sft", "ppo"]  # tiny:opt is built at random: no base to show


def _short_rows(source: Path, target: Path, rows: int, max_bytes: int = 700) -> str:
    """The first `rows` rows of a JSONL file that are under `max_bytes`: short enough for a byte-level tiny model."""
    kept = [line for line in source.read_text(encoding="utf-8").splitlines() if len(line.encode()) < max_bytes][:rows]
    target.write_text("\n".join(kept) + "\n", encoding="utf-8")
    return str(target)


@pytest.mark.slow
def test_smollm2_pipeline_runs_end_to_end_with_a_tiny_llama_in_its_place(tmp_path, save_tiny_model, shared_data,
                                                                          monkeypatch):
    """The recipe's LoRA stages chain through their merged models, and base, SFT and PPO answer every probe."""
    monkeypatch.chdir(RECIPES.parent)
    folder = RECIPES / "smollm2-135m"
    raw = yaml.safe_load((folder / "pipeline.yaml").read_text(encoding="utf-8"))
    base = save_tiny_model(tmp_path / "base", family="llama")
    pool = _short_rows(shared_data / "hh_rlhf_helpful_train_pool.jsonl", tmp_path / "pool.jsonl", 60)
    test = _short_rows(shared_data / "hh_rlhf_helpful_base_test_sample.jsonl", tmp_path / "test.jsonl", 4)
    small = {"dataset_name": pool, "max_steps": 2, "per_device_train_batch_size": 2}
    raw["model"]["model_name_or_path"] = base
    raw["stages"]["sft"].update(small, model_name_or_path=base)
    raw["stages"]["reward"].update(small, max_length=512, eval_split_size=2, per_device_eval_batch_size=2)
    raw["stages"]["ppo"].update(small, per_device_train_batch_size=4, local_rollout_forward_batch_size=4,
                                max_prompt_length=128, response_length=8)
    raw["selection"].update(dataset_name=pool, num_prompts=2, max_new_tokens=4, max_prompt_length=128)
    raw["evaluation"].update(dataset_name=test, num_prompts=2, max_new_tokens=8, max_prompt_length=128,
                             num_examples=2)
    run_dir = run_pipeline(spec_from_dict(raw, base_dir=str(folder), overrides={"output_dir": str(tmp_path / "run")}))

    for stage in ("sft", "reward", "ppo"):
        assert (run_dir / stage / "adapter_config.json").is_file() and (run_dir / stage / "merged" / "config.json").is_file()
    assert yaml.safe_load((run_dir / "configs" / "reward.yaml").read_text())["model_name_or_path"] == str(
        run_dir / "sft" / "merged")
    evaluation = json.loads((run_dir / "evaluation.json").read_text())
    assert list(evaluation["stages"]) == ["base", "sft", "ppo"]
    probes = json.loads((run_dir / "probes.json").read_text())
    assert [record["prompt"] for record in probes["probes"]] == SMOLLM2_PROBES
    assert all(set(record["answers"]) == {"base", "sft", "ppo"} for record in probes["probes"])
    html = (run_dir / "report.html").read_text(encoding="utf-8")
    assert "<th>prompt</th><th>base</th><th>SFT</th><th>PPO</th>" in html and "天空为什么是蓝色的？" in html
