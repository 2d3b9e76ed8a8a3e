"""config.paths: the package's one "local path or Hub id?" test and the existence checks built on it."""

import pytest

from rlhf_recipes.config.errors import ConfigError
from rlhf_recipes.config.paths import STEP_1, check_local_path, check_model_reference, looks_like_local_path


@pytest.mark.parametrize("name", ["./m", "../m", "/abs/m", "~/m", "a/b/c", ".hidden", "train.jsonl"])
def test_names_spelled_like_paths_are_local(name):
    assert looks_like_local_path(name, (".jsonl",))


@pytest.mark.parametrize("name", ["gpt2", "Qwen/Qwen2.5-0.5B", "tiny:opt", "train.jsonl"])
def test_hub_ids_are_not_local(name):
    assert not looks_like_local_path(name)  # without data suffixes, train.jsonl could be a Hub repo name


def test_dir_slash_name_is_local_once_dir_exists(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert not looks_like_local_path("runs/sft")
    (tmp_path / "runs").mkdir()
    assert looks_like_local_path("runs/sft")


def test_a_missing_step_output_names_the_step(tmp_path):
    missing = str(tmp_path / "sft")
    with pytest.raises(ConfigError, match=rf"sft_model_path: local path '{missing}' does not exist\. Run step 1 "):
        check_local_path("sft_model_path", missing, STEP_1)
    check_local_path("sft_model_path", str(tmp_path))  # exists: no error


def test_offline_only_cached_hub_models_pass(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(ConfigError, match="neither a local path nor a model in the Hugging Face cache"):
        check_model_reference("model_name_or_path", "org/model")
    (tmp_path / "models--org--model").mkdir()
    check_model_reference("model_name_or_path", "org/model")
    check_model_reference("model_name_or_path", "tiny:opt")  # not a Hub id: never looked up
    # A packaged GGUF alias is converted locally, never looked up on the Hub (the SmolLM2 recipes run offline).
    check_model_reference("model_name_or_path", "smollm2-135m-instruct")
    check_model_reference("model_name_or_path", "SmolLM2-135M-Instruct")
