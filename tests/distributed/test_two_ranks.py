"""The OPT-1.3b recipes on 2 real CPU ranks, launched as docs/recipes.md says (`accelerate launch
--config_file accelerate_configs/<config>.yaml`), with a tiny OPT and few rows instead of OPT-1.3b.

CPU-only changes to the documented command: `--num_processes 2` and `--mixed_precision no`. The stages
run through their own `main(argv)` inside tests/distributed/stage_probe.py, which records per rank
what the trainer really used (world size, DeepSpeed engine and ZeRO stage, trained-weight checksum).
Equal checksums on both ranks show the gradients were synchronised.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

REPO_ROOT = Path(__file__).resolve().parents[2]
ACCELERATE = str(Path(sys.executable).parent / "accelerate")
PROBE = str(Path(__file__).with_name("stage_probe.py"))
DATA = "../shared/data/rm_static_style_sample.jsonl"
QUICK = ["--max_steps", "2", "--max_samples", "16", "--report_to", "none", "--bf16", "false", "--dtype", "float32",
         "--dataset_name", DATA, "--eval_strategy", "no", "--save_strategy", "no", "--logging_steps", "1"]
pytestmark = [pytest.mark.slow, pytest.mark.multiprocess]


def _sft(output_dir: Path) -> list:
    return ["sft", ["--config", "recipes/opt-1.3b/sft.yaml", "--model_name_or_path", "tiny:opt",
                    "--output_dir", str(output_dir), "--max_length", "512", "--per_device_train_batch_size", "2",
                    "--eval_split_size", "0", *QUICK]]


def _reward(output_dir: Path) -> list:
    # 1024 positions: TRL leaves out pairs longer than max_length, and byte-level tokens are many
    return ["reward", ["--config", "recipes/opt-1.3b/reward.yaml", "--model_name_or_path", "tiny:opt",
                       "--model_config_overrides", '{"max_position_embeddings": 1024}', "--max_length", "1024",
                       "--output_dir", str(output_dir), "--per_device_train_batch_size", "2",
                       "--eval_split_size", "8", *QUICK]]


def _launch(config: str, stages: list, probe_dir: Path) -> dict[str, list[dict]]:
    command = [ACCELERATE, "launch", "--config_file", f"accelerate_configs/{config}", "--num_processes", "2",
               "--mixed_precision", "no", PROBE, str(probe_dir), json.dumps(stages)]
    result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600, env=dict(os.environ))
    assert result.returncode == 0, f"{' '.join(command)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    records = {}
    for stage, _ in stages:
        ranks = [json.loads((probe_dir / f"{stage}-rank{r}.json").read_text()) for r in (0, 1)]
        assert [r["process_index"] for r in ranks] == [0, 1]
        assert all(r["num_processes"] == 2 and r["global_step"] == 2 for r in ranks), ranks
        assert ranks[0]["checksum"] == pytest.approx(ranks[1]["checksum"], rel=1e-6), "ranks diverged"
        records[stage] = ranks
    return records


def test_sft_reward_and_ppo_with_the_ddp_config(tmp_path):
    ppo = ["ppo", ["--config", "recipes/opt-1.3b/ppo.yaml", "--sft_model_path", str(tmp_path / "sft"),
                   "--reward_model_path", str(tmp_path / "reward"), "--output_dir", str(tmp_path / "ppo"),
                   "--per_device_train_batch_size", "4", "--max_prompt_length", "64", "--response_length", "8",
                   "--activation_checkpointing", "false", *QUICK]]
    records = _launch("multi_gpu.yaml", [_sft(tmp_path / "sft"), _reward(tmp_path / "reward"), ppo], tmp_path / "probe")

    assert {r["distributed_type"] for rs in records.values() for r in rs} == {"MULTI_CPU"}
    assert records["sft"][0]["engine"] == records["ppo"][0]["engine"] == "DistributedDataParallel"
    assert records["ppo"][0]["world_batch_size"] == 8  # 4 rollouts per rank x 2 ranks
    assert (tmp_path / "ppo" / "critic" / "config.json").is_file()


def test_sft_and_reward_with_the_deepspeed_zero2_config(tmp_path):
    records = _launch("deepspeed_zero2.yaml", [_sft(tmp_path / "sft"), _reward(tmp_path / "reward")], tmp_path / "probe")

    for rank in records["sft"] + records["reward"]:
        assert (rank["distributed_type"], rank["engine"], rank["zero_stage"]) == ("DEEPSPEED", "DeepSpeedEngine", 2)
    assert json.loads((tmp_path / "reward" / "eval_rm.json").read_text())["num_pairs"] >= 1


def test_sft_with_the_deepspeed_zero3_offload_config_saves_whole_weights(tmp_path):
    records = _launch("deepspeed_zero3_offload.yaml", [_sft(tmp_path / "sft")], tmp_path / "probe")

    rank = records["sft"][0]
    assert (rank["engine"], rank["zero_stage"], rank["offload_optimizer"]) == ("DeepSpeedEngine", 3, "cpu")
    assert rank["optimizer"] == "DeepSpeedCPUAdam"
    saved = AutoModelForCausalLM.from_pretrained(tmp_path / "sft", dtype=torch.float32)
    assert float(sum(p.abs().sum() for p in saved.parameters())) == pytest.approx(rank["checksum"], rel=1e-4)
