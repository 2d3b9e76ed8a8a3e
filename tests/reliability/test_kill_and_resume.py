"""SIGKILL a real recipe subprocess, rerun the same command with --resume_from_checkpoint true,
and compare with an uninterrupted run: same global step, same samples in the same order, same
losses and final weights (so optimizer, scheduler, RNG and KL-controller state came back)."""

import json

import pytest
import torch

from rlhf_recipes.stages import reward
from rlhf_recipes.stages import sft
from rlhf_recipes.artifacts.checkpointing import MARKER, latest_checkpoint
from rlhf_recipes.ppo import run as ppo_run

from reliability_helpers import read_jsonl, run_until_killed, weights

pytestmark = pytest.mark.slow

# 12 rows, 2 micro-batches of 2 per step: 3 steps per epoch, so 6 steps cross an epoch boundary.
HF_STEPS = ["--max_samples", "12", "--max_length", "64", "--per_device_train_batch_size", "2",
            "--gradient_accumulation_steps", "2", "--max_steps", "6", "--save_strategy", "steps", "--save_steps", "2",
            "--save_total_limit", "1", "--eval_strategy", "no", "--logging_steps", "1", "--disable_tqdm", "true"]


def losses(output_dir) -> list[tuple[int, float]]:
    state = json.loads((output_dir / "trainer_state.json").read_text())
    return [(entry["step"], entry["loss"]) for entry in state["log_history"] if "loss" in entry]


def assert_same_run(straight, resumed, sequences_per_row=1):
    assert json.loads((resumed / "trainer_state.json").read_text())["global_step"] == 6
    order = read_jsonl(resumed / "data_order.jsonl")
    assert [line["step"] for line in order] == [1, 2, 3, 4, 5, 6]
    assert order == read_jsonl(straight / "data_order.jsonl")
    # epoch 1 sees each of the 12 rows once (a preference row is two sequences: chosen and rejected)
    assert len({sample for line in order[:3] for sample in line["samples"]}) == 12 * sequences_per_row
    expected = losses(straight)
    assert [step for step, _ in losses(resumed)] == [step for step, _ in expected] == [1, 2, 3, 4, 5, 6]
    assert [loss for _, loss in losses(resumed)] == pytest.approx([loss for _, loss in expected], rel=1e-5)
    for name, tensor in weights(straight).items():
        torch.testing.assert_close(weights(resumed)[name], tensor, rtol=1e-5, atol=1e-6)
    assert sorted(p.name for p in resumed.glob("checkpoint-*")) == ["checkpoint-6"]
    assert not list(resumed.glob(".tmp-*"))


def test_sft_killed_in_the_middle_of_a_save_resumes_from_the_previous_complete_checkpoint(tmp_path, short_pairs):
    args = ["--config", "recipes/tiny/sft.yaml", "--dataset_name", short_pairs, *HF_STEPS]
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    sft.main([*args, "--output_dir", str(straight)])

    run_until_killed(tmp_path, "save", 4, "recipes/sft.py", [*args, "--output_dir", str(killed)])

    # checkpoint-4 died half written (weights, no RNG/trainer state) in its staging directory
    staged = killed / ".tmp-checkpoint-4" / "checkpoint-4"
    assert (staged / "model.safetensors").is_file() and not (staged / "trainer_state.json").exists()
    assert not (killed / "checkpoint-4").exists()
    assert (killed / "checkpoint-2" / MARKER).is_file()
    assert latest_checkpoint(str(killed)) == str(killed / "checkpoint-2")

    sft.main([*args, "--output_dir", str(killed), "--resume_from_checkpoint", "true"])

    assert_same_run(straight, killed)


def test_reward_model_killed_between_steps_resumes_from_the_last_checkpoint(tmp_path, tiny_dirs, short_pairs):
    args = ["--config", "recipes/tiny/reward.yaml", "--model_name_or_path", tiny_dirs["sft"],
            "--dataset_name", short_pairs, "--eval_rm_num_samples", "4", *HF_STEPS]
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    reward.main([*args, "--output_dir", str(straight)])

    run_until_killed(tmp_path, "step", 3, "recipes/reward.py", [*args, "--output_dir", str(killed)])

    assert [line["step"] for line in read_jsonl(killed / "data_order.jsonl")] == [1, 2]
    assert latest_checkpoint(str(killed)) == str(killed / "checkpoint-2")

    reward.main([*args, "--output_dir", str(killed), "--resume_from_checkpoint", "true"])

    assert_same_run(straight, killed, sequences_per_row=2)
    assert json.loads((killed / "eval_rm.json").read_text())["accuracy"] == json.loads(
        (straight / "eval_rm.json").read_text())["accuracy"]


def test_ppo_killed_between_updates_resumes_with_the_same_prompts_kl_state_and_weights(tmp_path, tiny_dirs, short_pairs):
    args = ["--config", "recipes/tiny/ppo.yaml", "--sft_model_path", tiny_dirs["sft"],
            "--reward_model_path", tiny_dirs["reward"], "--dataset_name", short_pairs,
            "--ptx_dataset_name", short_pairs, "--eval_split_size", "4", "--max_steps", "5", "--save_steps", "2",
            "--save_total_limit", "1", "--per_device_train_batch_size", "4", "--num_mini_batches", "2",
            "--gradient_accumulation_steps", "1", "--num_ppo_epochs", "1", "--response_length", "6",
            "--max_prompt_length", "32", "--eval_strategy", "no", "--sample_every", "0", "--adaptive_kl", "true",
            "--target_kl", "0.01", "--kl_horizon", "100", "--disable_tqdm", "true"]
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    ppo_run.main([*args, "--output_dir", str(straight)])

    run_until_killed(tmp_path, "step", 3, "recipes/ppo.py", [*args, "--output_dir", str(killed)])

    assert latest_checkpoint(str(killed)) == str(killed / "checkpoint-2")

    ppo_run.main([*args, "--output_dir", str(killed), "--resume_from_checkpoint", "true"])

    # the record of step 3, written before the kill, was dropped on resume: each step appears once
    resumed, full = read_jsonl(killed / "ppo_log.jsonl"), read_jsonl(straight / "ppo_log.jsonl")
    assert [row["step"] for row in resumed] == [row["step"] for row in full] == [1, 2, 3, 4, 5]
    assert [row["prompt_indices"] for row in resumed] == [row["prompt_indices"] for row in full]
    assert [row["kl_coef"] for row in resumed] == pytest.approx([row["kl_coef"] for row in full])
    assert full[-1]["kl_coef"] != full[0]["kl_coef"]  # the adaptive controller moved: its state mattered
    for subdir in ("", "critic"):
        for name, tensor in weights(straight / subdir).items():
            torch.testing.assert_close(weights(killed / subdir)[name], tensor, rtol=1e-5, atol=1e-6)
