"""The pipeline recipe files: the tiny one is the demo's built-in settings, and every stage
config that the tiny and tiny-hh pipelines resolve is accepted by that stage's real parser."""

from pathlib import Path

import pytest
import yaml
from trl import RewardConfig, SFTConfig

from rlhf_recipes.data import DataArguments
from rlhf_recipes.demo.run import DEMO_PIPELINE
from rlhf_recipes.models import ModelArguments
from rlhf_recipes.config.parsing import parse_args
from rlhf_recipes.pipeline.resolve import Resolver
from rlhf_recipes.pipeline.spec import load_spec
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


@pytest.mark.parametrize("recipe", ["tiny", "tiny-hh"])
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
