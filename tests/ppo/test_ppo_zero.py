"""PPO on 2 real CPU ranks under DDP and DeepSpeed ZeRO-2/3 (tests/ppo/zero_worker.py): the same tiny fp32 run
logs the same numbers under every engine, ZeRO-3 samples on weights gathered once per rollout, and a ZeRO-3 run
killed after its first checkpoint resumes to the uninterrupted run's end.

DDP starts with torchrun (the trainer's Accelerator(cpu=True) gives gloo); DeepSpeed with `accelerate launch
--config_file accelerate_configs/<config>.yaml --num_processes 2 --mixed_precision no`, as the docs say (no
ACCELERATE_USE_CPU: with it accelerate would drop DeepSpeed). Tolerance: the engines sum gradients in other
orders and ZeRO clips on its own flattened buffers, so fp32 results differ by rounding only: rel 1e-4.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from rlhf_recipes.artifacts.checkpointing import MARKER

pytestmark = [pytest.mark.slow, pytest.mark.multiprocess]

REPO_ROOT = Path(__file__).resolve().parents[2]
WORKER = str(Path(__file__).with_name("zero_worker.py"))
BIN = Path(sys.executable).parent
COMPARED = ("objective/scores", "objective/kl", "loss/policy", "loss/value")
TOLERANCE = dict(rel=1e-4, abs=1e-6)


def _command(engine: str, output_dir: Path, steps: int, *mode: str) -> list[str]:
    if engine == "ddp":
        return [str(BIN / "torchrun"), "--standalone", "--nproc_per_node", "2", WORKER, str(output_dir), str(steps), *mode]
    return [str(BIN / "accelerate"), "launch", "--config_file", f"accelerate_configs/{engine}.yaml", "--num_processes",
            "2", "--mixed_precision", "no", WORKER, str(output_dir), str(steps), *mode]


def _start(command: list[str], output_dir: Path) -> subprocess.Popen:
    """The launcher in its own process group, its output in a file (a full pipe would block the ranks)."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.pop("ACCELERATE_USE_CPU", None)
    output_dir.mkdir(parents=True, exist_ok=True)
    with open(output_dir.parent / f"{output_dir.name}.log", "a") as log:
        return subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)


def _output(output_dir: Path) -> str:
    return (output_dir.parent / f"{output_dir.name}.log").read_text()[-6000:]


def _finish(process: subprocess.Popen, output_dir: Path, timeout: int = 500) -> None:
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    assert process.returncode == 0, f"{' '.join(process.args)}:\n{_output(output_dir)}"


def _run(engine: str, output_dir: Path, steps: int = 5, *mode: str) -> list[dict]:
    _finish(_start(_command(engine, output_dir, steps, *mode), output_dir), output_dir)
    ranks = [json.loads((output_dir / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["num_processes"] for r in ranks] == [2, 2]
    assert ranks[0]["sum/actor"] == pytest.approx(ranks[1]["sum/actor"], rel=1e-9), "ranks diverged"
    return ranks


def _log(output_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (output_dir / "ppo_log.jsonl").read_text().splitlines()]


def _assert_same_updates(log: list[dict], expected: list[dict]) -> None:
    assert [row["step"] for row in log] == [row["step"] for row in expected]
    assert [row["prompt_indices"] for row in log] == [row["prompt_indices"] for row in expected]
    for name in COMPARED:
        assert [row[name] for row in log] == pytest.approx([row[name] for row in expected], **TOLERANCE), name


def _assert_same_run_as_ddp(output_dir: Path, rank: dict, ddp_dir: Path, ddp: dict) -> None:
    """The sharded run logged DDP's 5 updates and ended with its weights, each model at its own learning
    rate and schedule (both linear to 0: the first of 5 updates runs at 4/5 of the peak)."""
    log, ddp_log = _log(output_dir), _log(ddp_dir)
    assert ddp_log[-1]["step"] == 5
    _assert_same_updates(log, ddp_log)
    for part in ("actor", "critic"):
        assert rank[f"sum/{part}"] == pytest.approx(ddp[f"sum/{part}"], **TOLERANCE), part
    assert [row["lr/actor"] for row in log] == pytest.approx([row["lr/actor"] for row in ddp_log])
    assert log[0]["lr/critic"] == pytest.approx(1e-3 * 4 / 5)
    assert log[0]["lr/actor"] == pytest.approx(3e-3 * 4 / 5)


def _kill_after_first_checkpoint(command: list[str], output_dir: Path, timeout: float) -> None:
    """Start a 2-rank run whose worker pauses after its first checkpoint (conftest.PauseAfterSave), then
    SIGKILL both ranks and the launcher."""
    process = _start(command, output_dir)
    deadline = time.monotonic() + timeout
    pids = [output_dir / f"saved-{r}" for r in (0, 1)]
    while not all(p.exists() for p in pids):
        assert process.poll() is None, _output(output_dir)
        if time.monotonic() > deadline:
            os.killpg(process.pid, signal.SIGKILL)
            pytest.fail(f"no checkpoint within {timeout} s")
        time.sleep(0.5)
    for pid in pids:
        os.kill(int(pid.read_text()), signal.SIGKILL)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("ddp")
    ranks = _run("ddp", output_dir)
    assert {(r["distributed_type"], r["actor"], r["critic"]) for r in ranks} == {
        ("MULTI_CPU", "DistributedDataParallel", "DistributedDataParallel")
    }
    return output_dir, ranks[0]


@pytest.mark.parametrize(("config", "stage"), [("deepspeed_zero2", 2), ("deepspeed_zero3", 3),
                                               ("deepspeed_zero3_offload", 3)])
def test_ppo_zero_engines_log_the_same_5_updates_as_ddp(tmp_path, ddp_run, config, stage):
    ddp_dir, ddp = ddp_run
    ranks = _run(config, tmp_path)

    for rank in ranks:
        assert (rank["distributed_type"], rank["actor"], rank["critic"], rank["zero_stage"]) == (
            "DEEPSPEED", "DeepSpeedEngine", "DeepSpeedEngine", stage)
        assert rank["ref_sharded"] is (stage == 3)  # a ZeRO-3 inference engine holds a shard; ZeRO-2 a whole copy
    _assert_same_run_as_ddp(tmp_path, ranks[0], ddp_dir, ddp)


def test_ppo_zero3_gathers_the_actor_once_per_rollout_and_saves_whole_weights(tmp_path):
    ranks = _run("deepspeed_zero3", tmp_path, 3)

    for rank in ranks:
        assert rank["whole_weight_gathers"] == 3  # one per rollout
        assert rank["fetches_while_sampling"] == 0  # no per-layer, per-token gathers
        assert rank["fetches_otherwise"] > 0  # training forwards do gather layer by layer: the counter counts
    saved = AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.float32)
    assert float(sum(p.detach().double().abs().sum() for p in saved.parameters())) == pytest.approx(
        ranks[0]["sum/actor"], rel=1e-6)


def test_ppo_zero3_killed_after_its_first_checkpoint_resumes_to_the_uninterrupted_end(tmp_path):
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    expected = _run("deepspeed_zero3", straight)[0]

    _kill_after_first_checkpoint(_command("deepspeed_zero3", killed, 5, "pause_after_first_save"), killed, 400)
    checkpoint = killed / "checkpoint-2"
    assert (checkpoint / MARKER).is_file()
    for part in ("actor", "critic"):  # each rank's shard of the weights and optimizer states
        files = {p.name for p in (checkpoint / f"{part}_engine" / "state").iterdir()}
        assert {f"zero_pp_rank_{r}_mp_rank_00_optim_states.pt" for r in (0, 1)} <= files, files
    assert not (killed / "rank0.json").exists()

    resumed = _run("deepspeed_zero3", killed, 5, "resume")[0]

    assert resumed["global_step"] == 5
    _assert_same_updates(_log(killed), _log(straight))
    for part in ("actor", "critic"):
        assert resumed[f"sum/{part}"] == pytest.approx(expected[f"sum/{part}"], rel=1e-6), part
