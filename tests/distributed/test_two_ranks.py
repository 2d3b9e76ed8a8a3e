"""The OPT-1.3b recipes on 2 real CPU ranks, launched as docs/recipes.md says (`accelerate launch
--config_file accelerate_configs/<config>.yaml`), with a tiny OPT and few rows instead of OPT-1.3b.

CPU-only changes to the documented command: `--num_processes 2` and `--mixed_precision no`. The stages
run through their own `main(argv)` inside tests/distributed/stage_probe.py, which records per rank
what the trainer really used (world size, DeepSpeed engine and ZeRO stage, trained-weight checksum).
Equal checksums on both ranks show the gradients were synchronised.
"""

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from subprocess import PIPE

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

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


def _command(config: str, stages: list, probe_dir: Path, *flags: str) -> list[str]:
    return [ACCELERATE, "launch", "--config_file", f"accelerate_configs/{config}", "--num_processes", "2",
            "--mixed_precision", "no", *flags, PROBE, str(probe_dir), json.dumps(stages)]


def _start(command: list[str]) -> subprocess.Popen:
    """The launcher in its own process group, so that a hung run can be ended with all its ranks."""
    return subprocess.Popen(command, cwd=REPO_ROOT, stdout=PIPE, stderr=PIPE, text=True, env=dict(os.environ),
                            start_new_session=True)


def _check(process: subprocess.Popen, command: list[str]) -> None:
    try:
        stdout, stderr = process.communicate(timeout=600)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        stdout, stderr = process.communicate()
    assert process.returncode == 0, f"{' '.join(command)} failed:\n{stdout[-3000:]}\n{stderr[-5000:]}"


def _records(stages: list, probe_dir: Path) -> dict[str, list[dict]]:
    records = {}
    for stage, _ in stages:
        ranks = [json.loads((probe_dir / f"{stage}-rank{r}.json").read_text()) for r in (0, 1)]
        assert [r["process_index"] for r in ranks] == [0, 1]
        assert all(r["num_processes"] == 2 and r["global_step"] == 2 for r in ranks), ranks
        assert ranks[0]["checksum"] == pytest.approx(ranks[1]["checksum"], rel=1e-6), "ranks diverged"
        records[stage] = ranks
    return records


def _launch(config: str, stages: list, probe_dir: Path) -> dict[str, list[dict]]:
    command = _command(config, stages, probe_dir)
    _check(_start(command), command)
    return _records(stages, probe_dir)


def test_sft_reward_and_ppo_with_the_ddp_config(tmp_path):
    ppo = ["ppo", ["--config", "recipes/opt-1.3b/ppo.yaml", "--sft_model_path", str(tmp_path / "sft"),
                   "--reward_model_path", str(tmp_path / "reward"), "--output_dir", str(tmp_path / "ppo"),
                   "--per_device_train_batch_size", "4", "--max_prompt_length", "64", "--response_length", "8",
                   *QUICK]]
    records = _launch("multi_gpu.yaml", [_sft(tmp_path / "sft"), _reward(tmp_path / "reward"), ppo], tmp_path / "probe")

    assert {r["distributed_type"] for rs in records.values() for r in rs} == {"MULTI_CPU"}
    assert records["sft"][0]["engine"] == records["ppo"][0]["engine"] == "DistributedDataParallel"
    assert records["ppo"][0]["world_batch_size"] == 8  # 4 rollouts per rank x 2 ranks
    assert (tmp_path / "ppo" / "critic" / "config.json").is_file()


def test_sft_and_reward_with_the_deepspeed_zero2_config(tmp_path):
    stages = [_sft(tmp_path / "sft"), _reward(tmp_path / "reward")]
    records = _launch("deepspeed_zero2.yaml", stages, tmp_path / "probe")

    for rank in records["sft"] + records["reward"]:
        assert (rank["distributed_type"], rank["engine"], rank["zero_stage"]) == ("DEEPSPEED", "DeepSpeedEngine", 2)
    assert json.loads((tmp_path / "reward" / "eval_rm.json").read_text())["num_pairs"] >= 1


def test_sft_with_the_deepspeed_zero3_offload_config_saves_whole_weights(tmp_path, monkeypatch):
    """With the Trainer's torch AdamW (stage_probe.py): no DeepSpeed op is compiled, none is needed."""
    extensions = tmp_path / "torch_extensions"
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(extensions))
    records = _launch("deepspeed_zero3_offload.yaml", [_sft(tmp_path / "sft")], tmp_path / "probe")

    rank = records["sft"][0]
    assert (rank["engine"], rank["zero_stage"], rank["offload_optimizer"]) == ("DeepSpeedEngine", 3, "cpu")
    assert rank["optimizer"] == "AdamW"
    assert not extensions.exists() or not any(extensions.iterdir()), "a DeepSpeed op was built"
    saved = AutoModelForCausalLM.from_pretrained(tmp_path / "sft", dtype=torch.float32)
    assert float(sum(p.abs().sum() for p in saved.parameters())) == pytest.approx(rank["checksum"], rel=1e-4)


def _tiny_ppo(output_dir: Path) -> list:
    """recipes/tiny/ppo.yaml as written (its data split, PPO-ptx monitoring), on random tiny models: the critic
    is a copy of the reward model, the reference a copy of the policy (copied shard by shard under ZeRO-3)."""
    return ["ppo", ["--config", "recipes/tiny/ppo.yaml", "--sft_model_path", "tiny:opt", "--reward_model_path",
                    "tiny:opt", "--output_dir", str(output_dir), "--per_device_train_batch_size", "4",
                    "--max_prompt_length", "64", "--response_length", "8", "--max_steps", "2", "--eval_strategy", "no",
                    "--save_strategy", "no"]]


def _check_ppo_recipe(config: str, stage: int, tmp_path: Path) -> None:
    ranks = _launch(config, [_tiny_ppo(tmp_path / "ppo")], tmp_path / "probe")["ppo"]
    for rank in ranks:
        assert (rank["distributed_type"], rank["engine"], rank["zero_stage"]) == ("DEEPSPEED", "DeepSpeedEngine", stage)
        assert rank["critic_engine"] == {"engine": "DeepSpeedEngine", "zero_stage": stage}
    assert ranks[0]["world_batch_size"] == 8
    saved, info = AutoModelForCausalLM.from_pretrained(tmp_path / "ppo", dtype=torch.float32, output_loading_info=True)
    assert not info["missing_keys"] and not info["mismatched_keys"], info
    checksum = float(sum(p.detach().abs().sum() for p in saved.parameters()))
    assert checksum == pytest.approx(ranks[0]["checksum"], rel=1e-4)
    _, info = AutoModelForSequenceClassification.from_pretrained(tmp_path / "ppo" / "critic", output_loading_info=True)
    assert not info["missing_keys"] and not info["mismatched_keys"], info


def test_ppo_recipe_zero2_trains_one_engine_per_model_and_saves_a_loadable_model(tmp_path):
    _check_ppo_recipe("deepspeed_zero2.yaml", 2, tmp_path)


def test_ppo_recipe_zero3_copies_the_zero_init_models_and_saves_a_loadable_model(tmp_path):
    """zero3_init_flag: from_pretrained builds the models partitioned; the copied reference and critic must be too."""
    _check_ppo_recipe("deepspeed_zero3.yaml", 3, tmp_path)


def _launch_two_machines(config: str, stages: list, probe_dir: Path) -> dict[str, list[dict]]:
    """The config's two commands (--machine_rank 0 and 1), one rank per "machine", node 0 = 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = str(sock.getsockname()[1])
    commands = [_command(config, stages, probe_dir, "--machine_rank", rank, "--main_process_ip", "127.0.0.1",
                         "--main_process_port", port) for rank in ("0", "1")]
    machines = [_start(command) for command in commands]
    for process, command in zip(machines, commands, strict=True):
        _check(process, command)
    records = _records(stages, probe_dir)
    for ranks in records.values():
        assert [(r["node_rank"], r["local_rank"]) for r in ranks] == [(0, 0), (1, 0)]
    return records


def test_sft_with_the_multi_node_config_as_two_machines_on_localhost(tmp_path):
    ranks = _launch_two_machines("multi_node.yaml", [_sft(tmp_path / "sft")], tmp_path / "probe")["sft"]
    assert {(r["engine"], r["zero_stage"]) for r in ranks} == {("DeepSpeedEngine", 2)}


@pytest.mark.parametrize(("config", "stage"), [("deepspeed_zero2.yaml", 2), ("deepspeed_zero3.yaml", 3)])
def test_ppo_recipe_zero_lora_actor_lora_critic_and_ptx(tmp_path, config, stage):
    """LoRA actor (reference = adapter disabled), LoRA critic sharing the reward model's weights, PPO-ptx."""
    stages = [_tiny_ppo(tmp_path / "ppo")]
    stages[0][1] += ["--use_peft", "true", "--critic_use_peft", "true", "--lora_r", "4", "--ptx_coef", "0.5"]
    ranks = _launch(config, stages, tmp_path / "probe")["ppo"]
    assert {(r["zero_stage"], r["critic_engine"]["zero_stage"]) for r in ranks} == {(stage, stage)}
    log = [json.loads(line) for line in (tmp_path / "ppo" / "ppo_log.jsonl").read_text().splitlines()]
    assert [row["step"] for row in log] == [1, 2] and all(row["loss/ptx"] > 0 for row in log)
    actor = load_file(tmp_path / "ppo" / "adapter_model.safetensors")
    assert float(sum(w.abs().sum() for w in actor.values())) == pytest.approx(ranks[0]["checksum"], rel=1e-4)
    critic = load_file(tmp_path / "ppo" / "critic" / "adapter_model.safetensors")
    assert any(name.endswith("score.weight") and w.numel() > 0 for name, w in critic.items()), sorted(critic)
    assert all(w.numel() > 0 for w in [*actor.values(), *critic.values()]), "a ZeRO-3 shard was saved ungathered"


def test_ppo_zero2_with_the_multi_node_config_as_two_machines_on_localhost(tmp_path):
    ranks = _launch_two_machines("multi_node.yaml", [_tiny_ppo(tmp_path / "ppo")], tmp_path / "probe")["ppo"]
    assert {(r["engine"], r["zero_stage"]) for r in ranks} == {("DeepSpeedEngine", 2)}
    assert {r["critic_engine"]["zero_stage"] for r in ranks} == {2}
    assert ranks[0]["world_batch_size"] == 8


def test_ppo_with_the_multi_node_ddp_config_as_two_machines_on_localhost(tmp_path):
    ppo = ["ppo", ["--config", "recipes/opt-1.3b/ppo.yaml", "--sft_model_path", "tiny:opt", "--reward_model_path",
                   "tiny:opt", "--output_dir", str(tmp_path / "ppo"), "--per_device_train_batch_size", "4",
                   "--max_prompt_length", "64", "--response_length", "8", *QUICK]]
    ranks = _launch_two_machines("multi_node_ddp.yaml", [ppo], tmp_path / "probe")["ppo"]
    assert {(r["distributed_type"], r["engine"]) for r in ranks} == {("MULTI_CPU", "DistributedDataParallel")}
    assert ranks[0]["world_batch_size"] == 8
