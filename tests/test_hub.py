"""Model cards and Hub pushes, with the upload intercepted at the huggingface_hub boundary."""

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from huggingface_hub import HfApi, ModelCard
from huggingface_hub.utils import filter_repo_objects
from trl import RewardConfig, SFTConfig

from rlhf_recipes.stages import reward
from rlhf_recipes.stages import sft
from rlhf_recipes.data import DataArguments
from rlhf_recipes.artifacts.hub import CardInfo, build_model_card, card_info_from_args, finish_and_push, push_to_hub
from rlhf_recipes.models import ModelArguments, load_model, load_tokenizer
from rlhf_recipes.ppo import run as ppo_run
from rlhf_recipes.artifacts.run_dir import MODEL_CARD, PPO_LOG, RM_EVAL, TRAIN_RESULTS
from rlhf_recipes.artifacts.saving import save_model_and_tokenizer


@pytest.fixture
def hub_calls(monkeypatch):
    """Replaces HfApi.create_repo/upload_folder; records each call and the files an upload would send."""
    calls = {"create_repo": [], "upload_folder": []}

    def create_repo(self, repo_id, **kwargs):
        calls["create_repo"].append({"repo_id": repo_id, **kwargs})
        return SimpleNamespace(repo_id=repo_id if "/" in repo_id else f"me/{repo_id}")

    def upload_folder(self, *, repo_id, folder_path, ignore_patterns=None, **kwargs):
        root = Path(folder_path)
        files = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
        sent = sorted(filter_repo_objects(files, ignore_patterns=ignore_patterns))
        calls["upload_folder"].append({"repo_id": repo_id, "files": sent, **kwargs})
        return SimpleNamespace(commit_url=f"https://hub.invalid/{repo_id}/commit/1")

    monkeypatch.setattr(HfApi, "create_repo", create_repo)
    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    return calls


@pytest.fixture
def saved_reward_dir(tmp_path) -> Path:
    """A reward stage's output directory: tiny model, a checkpoint, training metrics and eval_rm.json."""
    out = tmp_path / "reward"
    args = ModelArguments(model_name_or_path="tiny:opt")
    tokenizer = load_tokenizer(args)
    save_model_and_tokenizer(load_model(args, tokenizer, task="seq-cls"), tokenizer, str(out))
    (out / "checkpoint-2").mkdir()
    (out / "checkpoint-2" / "optimizer.pt").write_bytes(b"state")
    (out / TRAIN_RESULTS).write_text(json.dumps({"train_loss": 0.6931, "epoch": 1.0}))
    report = {
        "num_pairs": 20, "num_skipped_too_long": 0, "max_length": 512, "accuracy": 0.85, "mean_margin": 1.25,
        "chosen_mean": 0.75, "rejected_mean": -0.5,
        "pairs": [{"prompt": "问题：天空为什么是蓝色的？", "chosen": "因为瑞利散射。", "chosen_score": 1.5,
                   "rejected": "不知道。", "rejected_score": -2.0, "margin": 3.5}],
    }
    (out / RM_EVAL).write_text(json.dumps(report, ensure_ascii=False), encoding="utf-8")
    return out


def _reward_args(tmp_path, output_dir, argv_extra=()):
    recipe = tmp_path / "reward.yaml"
    recipe.write_text("model_name_or_path: runs/x/sft\nlearning_rate: 5.0e-6\n", encoding="utf-8")
    argv = ["--config", str(recipe), "--output_dir", str(output_dir), "--dataset_name", "Dahoas/rm-static", *argv_extra]
    model_args = ModelArguments(model_name_or_path="runs/x/sft", use_peft=True, lora_r=8)
    data_args = DataArguments(dataset_name="Dahoas/rm-static", data_split="2,4,4", eval_split_size=0.1)
    training_args = RewardConfig(output_dir=str(output_dir), use_cpu=True, bf16=False, learning_rate=5e-6,
                                 per_device_train_batch_size=4, gradient_accumulation_steps=2, report_to="none",
                                 activation_checkpointing=False)
    return model_args, data_args, training_args, argv


def test_card_reports_models_data_hyperparameters_rm_eval_and_command(tmp_path, saved_reward_dir):
    model_args, data_args, training_args, argv = _reward_args(tmp_path, saved_reward_dir)
    info = card_info_from_args("reward", model_args, data_args, training_args, argv)
    card = build_model_card(str(saved_reward_dir), info, repo_id="me/opt-rm")

    metadata = ModelCard(card).data
    assert metadata.base_model == "runs/x/sft"
    assert metadata.datasets == ["Dahoas/rm-static"]
    assert metadata.library_name == "peft" and "reward" in metadata.tags
    assert "data_split: 2,4,4" in card and "part 2 of 3" in card
    assert "| learning_rate | 5e-06 |" in card and "| lora_r | 8 |" in card
    assert "| effective batch size | 8 |" in card
    assert "| 20 | 0.85 | 1.25 | 0.75 | -0.5 |" in card  # pairs, accuracy, margin, good mean, bad mean
    assert "因为瑞利散射。" in card and "| train_loss | 0.6931 |" in card
    assert f"rlhf-recipes reward --config {tmp_path / 'reward.yaml'}" in card
    assert "learning_rate: 5.0e-6" in card  # the recipe file itself is embedded
    assert "AutoPeftModelForSequenceClassification.from_pretrained(\"me/opt-rm\")" in card
    assert "## PPO metrics" not in card


def test_card_says_a_data_split_all_stage_read_its_data_whole(tmp_path):
    info = CardInfo(stage="ppo", base_model="runs/x/sft", datasets={"prompts.jsonl": None}, data_split="all")
    card = build_model_card(str(tmp_path), info)
    assert "every row, in file order" in card and "part" not in card


def test_card_has_ppo_metrics_first_and_last_update(tmp_path):
    rows = [{"step": 1, "objective/scores": -1.0, "objective/kl": 0.0},
            {"step": 2, "loss/policy": 0.1},
            {"step": 3, "objective/scores": 2.5, "objective/kl": 0.75}]
    (tmp_path / PPO_LOG).write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    info = CardInfo(stage="ppo", base_model="runs/opt/sft", datasets={"a.jsonl": 0.5, "b.json": None},
                    related_models={"reward model": "runs/opt/reward"})
    card = build_model_card(str(tmp_path), info)
    assert "2 logged updates (last step 3)" in card
    assert "| objective/scores | -1 | 2.5 |" in card and "| objective/kl | 0 | 0.75 |" in card
    assert "- Reward model: `runs/opt/reward`" in card and "`a.jsonl` (fraction 0.5 of its rows)" in card
    assert "datasets" not in ModelCard(card).data.to_dict()  # local files are not Hub dataset ids
    assert "## Reward-model evaluation" not in card and "## Training results" not in card


def test_unknown_stage_is_refused():
    with pytest.raises(ValueError, match="Unknown stage 'dpo'"):
        CardInfo(stage="dpo", base_model="x", datasets={})


def test_finish_without_push_writes_the_card_only(tmp_path, saved_reward_dir, hub_calls):
    model_args, data_args, training_args, argv = _reward_args(tmp_path, saved_reward_dir)
    assert finish_and_push("reward", model_args, data_args, training_args, argv) is None
    assert (saved_reward_dir / MODEL_CARD).read_text(encoding="utf-8").startswith("---\nbase_model: runs/x/sft")
    assert hub_calls == {"create_repo": [], "upload_folder": []}


def test_finish_with_push_uploads_model_tokenizer_and_card_without_checkpoints(tmp_path, saved_reward_dir, hub_calls):
    model_args, data_args, training_args, argv = _reward_args(tmp_path, saved_reward_dir)
    training_args.push_to_hub, training_args.hub_model_id, training_args.hub_private_repo = True, "me/opt-rm", True
    finish_and_push("reward", model_args, data_args, training_args, argv)

    assert hub_calls["create_repo"] == [{"repo_id": "me/opt-rm", "private": True, "exist_ok": True}]
    [upload] = hub_calls["upload_folder"]
    assert upload["repo_id"] == "me/opt-rm"
    assert {"config.json", "model.safetensors", "tokenizer.json", MODEL_CARD, RM_EVAL} <= set(upload["files"])
    assert not [f for f in upload["files"] if f.startswith("checkpoint-")]
    assert "# me/opt-rm" in (saved_reward_dir / MODEL_CARD).read_text(encoding="utf-8")


def test_repo_name_defaults_to_output_dir_name(tmp_path, hub_calls):
    output_dir = tmp_path / "opt-sft"
    training_args = SFTConfig(output_dir=str(output_dir), use_cpu=True, bf16=False, push_to_hub=True, report_to="none",
                              activation_checkpointing=False)
    model_args = ModelArguments(model_name_or_path="tiny:opt")
    finish_and_push("sft", model_args, DataArguments(dataset_name="data.jsonl"), training_args, [])
    assert hub_calls["create_repo"][0]["repo_id"] == "opt-sft"
    assert hub_calls["upload_folder"][0]["files"] == [MODEL_CARD]


def test_only_the_main_process_writes_or_pushes(tmp_path, hub_calls):
    training_args = SimpleNamespace(process_index=1, output_dir=str(tmp_path / "out"), push_to_hub=True)
    assert finish_and_push("sft", None, None, training_args, []) is None
    assert not (tmp_path / "out").exists() and hub_calls["upload_folder"] == []


def test_failed_upload_names_the_repository_and_the_local_copy(tmp_path, monkeypatch):
    def refuse(self, repo_id, **kwargs):
        raise OSError("401 Unauthorized")

    monkeypatch.setattr(HfApi, "create_repo", refuse)
    with pytest.raises(RuntimeError, match=r"'me/model' failed: 401 Unauthorized\. The model is saved locally"):
        push_to_hub(str(tmp_path), "me/model")


@pytest.mark.parametrize("repo_id", ["", "a/b/c"])
def test_bad_repo_id_is_refused(tmp_path, repo_id):
    with pytest.raises(ValueError, match="hub_model_id must be"):
        push_to_hub(str(tmp_path), repo_id)


def test_missing_folder_is_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="is not a directory"):
        push_to_hub(str(tmp_path / "missing"), "me/model")



def test_ppo_stage_with_push_to_hub_uploads_the_policy_and_its_card(tmp_path, hub_calls, monkeypatch):
    monkeypatch.chdir(Path(__file__).resolve().parents[1])
    output_dir = tmp_path / "ppo"
    ppo_run.main([
        "--config", "recipes/opt-1.3b/ppo.yaml", "--sft_model_path", "tiny:opt", "--reward_model_path", "tiny:opt",
        "--dataset_name", "../shared/data/rm_static_style_sample.jsonl", "--max_samples", "8", "--eval_split_size", "0",
        "--output_dir", str(output_dir), "--max_steps", "1", "--per_device_train_batch_size", "2",
        "--max_prompt_length", "32", "--response_length", "4", "--bf16", "false", "--dtype", "float32",
        "--report_to", "none", "--save_strategy", "no", "--push_to_hub", "true", "--hub_model_id", "me/opt-ppo",
    ])

    [upload] = hub_calls["upload_folder"]
    assert upload["repo_id"] == "me/opt-ppo"
    assert {"model.safetensors", "config.json", MODEL_CARD, PPO_LOG, "critic/model.safetensors"} <= set(upload["files"])
    card = (output_dir / MODEL_CARD).read_text(encoding="utf-8")
    assert "## PPO metrics" in card and "| kl_coef | 0.1 |" in card and "| ptx_coef | 0 |" in card
    assert "rlhf-recipes ppo --config recipes/opt-1.3b/ppo.yaml" in card and "--hub_model_id me/opt-ppo" in card


def test_sft_then_reward_with_push_to_hub_upload_each_model_and_card(tmp_path, hub_calls, monkeypatch):
    pairs = tmp_path / "pairs.jsonl"
    rows = [{"prompt": f"Q{i}:", "chosen": f" yes {i}", "rejected": f" no {i}"} for i in range(16)]
    pairs.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    common = [
        "--dataset_name", str(pairs), "--data_split", "1,1,0", "--eval_split_size", "2", "--max_length", "64",
        "--max_steps", "1",
        "--per_device_train_batch_size", "2", "--save_strategy", "no", "--eval_strategy", "no",
        "--report_to", "none", "--push_to_hub", "true",
    ]
    sft_dir, reward_dir = tmp_path / "sft", tmp_path / "reward"
    sft.main(["--model_name_or_path", "tiny:opt", "--output_dir", str(sft_dir), "--hub_model_id", "me/sft", *common])
    reward.main(["--model_name_or_path", str(sft_dir), "--output_dir", str(reward_dir), "--hub_model_id", "me/rm", *common])

    sft_upload, reward_upload = hub_calls["upload_folder"]
    assert sft_upload["repo_id"] == "me/sft" and reward_upload["repo_id"] == "me/rm"
    assert {"model.safetensors", "config.json", "tokenizer.json", MODEL_CARD} <= set(sft_upload["files"])
    assert {"model.safetensors", "config.json", RM_EVAL, MODEL_CARD} <= set(reward_upload["files"])
    assert "rlhf-recipes reward --model_name_or_path" in (reward_dir / MODEL_CARD).read_text(encoding="utf-8")
