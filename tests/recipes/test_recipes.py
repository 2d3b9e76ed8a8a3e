"""Every real-model recipe YAML parses, validates, and runs 2 steps of its stage with a size override.

The override keeps the recipe's model class and config type (`tiny:<family>`, or a saved tiny model of that
family where the recipe loads a directory in 4-bit), its LoRA/QLoRA, chat-template, data-mixing and PPO
settings, and shrinks what costs time on a CPU: 2 steps, a few rows, short sequences, small batches (PPO
keeps its minibatch structure), fp32. Hub datasets are replaced by the local file with the same schema,
and the pairs of the make-pairs recipe are made here by `make-pairs` with a tiny model.
"""

import json
from pathlib import Path

import pytest
from trl import RewardConfig, SFTConfig

from rlhf_recipes.stages import reward
from rlhf_recipes.stages import sft
from rlhf_recipes.data import DataArguments
from rlhf_recipes.tools.make_pairs import MakePairsArguments, make_pairs
from rlhf_recipes.models import ModelArguments, is_tiny, peft_config_for
from rlhf_recipes.config.parsing import parse_args
from rlhf_recipes.ppo import run as ppo_run
from rlhf_recipes.ppo.config import PPOConfig
from rlhf_recipes.artifacts.run_dir import PPO_LOG, RM_EVAL

REPO_ROOT = Path(__file__).resolve().parents[2]
RECIPES_DIR = REPO_ROOT / "recipes"
# recipe folder -> the tiny family with the real model's classes (ChatGLM3: the native GLM stand-in)
FAMILY = {
    "opt-1.3b": "opt",
    "opt-1.3b-lora": "opt",
    "qwen2.5-1.5b-zh": "qwen2",
    "qwen2.5-7b-zh": "qwen2",
    "glm-4-9b-qlora": "glm4",
    "chatglm3-6b-lora": "glm",
    "smollm2-135m": "llama",
}
CLASS_PREFIX = {"opt": "OPT", "qwen2": "Qwen2", "glm4": "Glm4", "glm": "Glm", "llama": "Llama"}
RM_STATIC_LOCAL = "../shared/data/rm_static_style_sample.jsonl"  # rm-static's schema, offline
STAGES = {
    "sft": (sft.main, [ModelArguments, DataArguments, SFTConfig]),
    "reward": (reward.main, [ModelArguments, DataArguments, RewardConfig, reward.RewardScriptArguments]),
    "ppo": (ppo_run.main, [ModelArguments, DataArguments, PPOConfig, ppo_run.PPOScriptArguments]),
}


def _stage_yamls(folder: str) -> list[Path]:
    """A folder's stage YAMLs; its pipeline.yaml (every stage in one run) is tested in tests/pipeline."""
    return [p for p in (RECIPES_DIR / folder).glob("*.yaml") if p.name != "pipeline.yaml"]


RECIPES = sorted(str(p.relative_to(REPO_ROOT)) for folder in FAMILY for p in _stage_yamls(folder))


def _stage(recipe: str) -> str:
    return Path(recipe).stem.split("_")[0]


def _parse(recipe: str, extra: list[str] | None = None):
    return parse_args(STAGES[_stage(recipe)][1], ["--config", recipe, *(extra or [])])


@pytest.fixture(autouse=True)
def _at_repo_root(monkeypatch):
    """Recipes name their data relative to the repository root, where they are run from."""
    monkeypatch.chdir(REPO_ROOT)


def test_every_recipe_folder_has_a_tiny_family_and_yamls():
    folders = {p.name for p in RECIPES_DIR.iterdir() if p.is_dir() and not p.name.startswith("tiny")}
    assert folders == set(FAMILY), "a real-model recipe folder without a tiny family would go untested"
    for folder in FAMILY:
        assert {_stage(str(p)) for p in _stage_yamls(folder)} <= set(STAGES)
        assert (RECIPES_DIR / folder / "README.md").is_file()


@pytest.mark.parametrize("recipe", RECIPES)
def test_recipe_parses_and_validates_as_written(recipe):
    model_args, data_args, training_args, *_ = _parse(recipe)
    folder = Path(recipe).parent.name
    names = [model_args.model_name_or_path, getattr(training_args, "sft_model_path", None)]
    assert not any(is_tiny(name) for name in names if name), "recipes name real models"
    assert Path(training_args.output_dir).parts[:2] == ("runs", folder)
    for source in [data_args.dataset_name] if data_args.dataset_name else list(data_args.dataset_mixer):
        assert source.startswith(("../shared/data/", "runs/", "Dahoas/")), source
        if source.startswith("../shared/data/"):
            assert Path(source).is_file(), f"{recipe} reads {source}, which does not exist"
    if model_args.load_in_4bit:
        assert model_args.use_peft, "4-bit recipes are QLoRA"
    if model_args.use_peft and _stage(recipe) != "ppo" and folder != "chatglm3-6b-lora":
        assert model_args.merge_lora, "later stages need the merged weights of a LoRA stage"


def test_chatglm3_recipe_keeps_its_remote_code_module_names():
    model_args, _, training_args = _parse("recipes/chatglm3-6b-lora/sft.yaml")
    assert training_args.trust_remote_code
    assert model_args.model_name_or_path == "THUDM/chatglm3-6b"
    config = peft_config_for(model_args, "CAUSAL_LM")
    assert set(config.target_modules) == {"query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"}


@pytest.fixture(scope="module")
def glm_pairs(tiny_models, short_copies, tmp_path_factory) -> str:
    """The pairs of recipes/glm-4-9b-qlora/reward.yaml, made as its comment says, by a tiny 'weaker model'."""
    _, data_args, _ = _parse("recipes/glm-4-9b-qlora/sft.yaml")
    output = tmp_path_factory.mktemp("glm_pairs") / "pairs.jsonl"
    args = MakePairsArguments(
        model_name_or_path=tiny_models("qwen2"), output=str(output),
        dataset_mixer={short_copies(name): fraction for name, fraction in data_args.dataset_mixer.items()},
        data_split=data_args.data_split, split_part="reward", max_new_tokens=4, max_prompt_length=256,
    )
    assert make_pairs(args)["written"] >= 12
    return str(output)


def _small_data(data_args: DataArguments, short_copies, glm_pairs_path) -> list[str]:
    """The recipe's sources as short copies (Dahoas/rm-static: the local file of the same schema)."""
    if data_args.dataset_mixer:
        return ["--dataset_mixer", json.dumps({short_copies(n): f for n, f in data_args.dataset_mixer.items()})]
    if data_args.dataset_name == "Dahoas/rm-static":
        return ["--dataset_name", short_copies(RM_STATIC_LOCAL)]
    if data_args.dataset_name.startswith("runs/"):  # written by make-pairs before the reward stage
        return ["--dataset_name", glm_pairs_path()]
    return ["--dataset_name", short_copies(data_args.dataset_name)]


def _size_override(recipe: str, tiny_models, short_copies, output_dir: Path, glm_pairs_path) -> list[str]:
    stage, folder = _stage(recipe), Path(recipe).parent.name
    family = FAMILY[folder]
    model_args, data_args, training_args, *_ = _parse(recipe)
    four_bit = model_args.load_in_4bit
    # fp32 on the CPU, except QLoRA: TRL casts a 4-bit model's trainable weights (the reward head too) to bf16
    argv = ["--output_dir", str(output_dir), "--max_steps", "2", "--report_to", "none", "--bf16", "false",
            "--eval_split_size", "2", *([] if four_bit else ["--dtype", "float32"]),
            *_small_data(data_args, short_copies, glm_pairs_path)]
    if folder == "chatglm3-6b-lora":  # the stand-in has q/k/v projections, not ChatGLM's fused query_key_value
        argv += ["--lora_target_modules", "all-linear"]
    if stage == "ppo":
        batch = training_args.num_mini_batches * training_args.gradient_accumulation_steps
        if training_args.stop_token not in (None, "eos"):  # the byte-level stand-in has no chat special tokens
            argv += ["--stop_token", "eos"]
        # a LoRA critic's recipe reads a merged QLoRA reward model: a 4-bit checkpoint
        reward_four_bit = four_bit and training_args.critic_use_peft
        return argv + [
            "--sft_model_path", tiny_models(family, four_bit=four_bit),
            "--reward_model_path", tiny_models(family, "seq-cls", four_bit=reward_four_bit),
            "--per_device_train_batch_size", str(batch), "--max_prompt_length", "128", "--response_length", "16",
        ]
    model = tiny_models(family) if four_bit else f"tiny:{family}"
    # TRL leaves out preference pairs longer than max_length: the tiny reward model gets 1024 positions
    size = ["--max_length", "256"]
    if stage == "reward":
        size = ["--max_length", "1024", "--model_config_overrides", '{"max_position_embeddings": 1024}']
    return argv + ["--model_name_or_path", model, *size, "--per_device_train_batch_size", "2",
                   "--per_device_eval_batch_size", "2", "--gradient_accumulation_steps", "1"]


def _architecture(path: Path) -> str:
    return json.loads((path / "config.json").read_text())["architectures"][0]


@pytest.mark.slow
@pytest.mark.parametrize("recipe", RECIPES)
def test_recipe_runs_two_steps_with_a_size_override(recipe, tiny_models, short_copies, tmp_path, request, monkeypatch):
    stage, folder = _stage(recipe), Path(recipe).parent.name
    output_dir = tmp_path / "out"
    glm_pairs = lambda: request.getfixturevalue("glm_pairs")  # noqa: E731 (built only for the recipe that reads it)
    argv = ["--config", recipe, *_size_override(recipe, tiny_models, short_copies, output_dir, glm_pairs)]
    model_args, _, training_args, *_ = _parse(recipe)
    if model_args.load_in_4bit:
        # CPU only: after a no-grad eval-mode forward (PPO's rollout), bitsandbytes repacks 4-bit weights for its
        # AVX512-BF16 inference kernel, and the next training forward then fails; CUDA never takes this path.
        monkeypatch.setattr("bitsandbytes.nn.modules.has_avx512bf16", lambda: False)

    STAGES[stage][0](argv)

    assert json.loads((output_dir / "trainer_state.json").read_text())["global_step"] == 2
    head = "ForSequenceClassification" if stage == "reward" else "ForCausalLM"
    if stage == "reward" and model_args.value_head:  # ChatGLM3: a value head on the causal LM (models/value_head.py)
        head = "CausalLMWithValueHead"
    final = output_dir / "merged" if model_args.merge_lora else output_dir
    if model_args.use_peft:
        assert (output_dir / "adapter_config.json").is_file()
    if final != output_dir or not model_args.use_peft:
        assert _architecture(final) in (CLASS_PREFIX[FAMILY[folder]] + head, head)
    if model_args.load_in_4bit and model_args.merge_lora:
        assert json.loads((final / "config.json").read_text())["quantization_config"]["load_in_4bit"]
    if stage == "reward":
        assert json.loads((output_dir / RM_EVAL).read_text())["num_pairs"] >= 1
    if stage == "ppo":
        updates = [json.loads(line) for line in (output_dir / PPO_LOG).read_text().splitlines()]
        assert [u["step"] for u in updates if "objective/scores" in u] == [1, 2]
        if training_args.critic_use_peft:  # the adapter and head, on the (4-bit) reward model it was trained on
            adapter = json.loads((output_dir / "critic" / "adapter_config.json").read_text())
            assert adapter["task_type"] == "SEQ_CLS" and "score" in adapter["modules_to_save"]
            assert not (output_dir / "critic" / "model.safetensors").exists()
        else:
            assert _architecture(output_dir / "critic").endswith("ForSequenceClassification")


def test_recipe_folders_document_how_each_file_was_tested():
    for folder in FAMILY:
        readme = (RECIPES_DIR / folder / "README.md").read_text(encoding="utf-8")
        for path in (RECIPES_DIR / folder).glob("*.yaml"):
            assert path.name in readme, f"{folder}/README.md does not mention {path.name}"
        assert "tests/recipes" in readme
