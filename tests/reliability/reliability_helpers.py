"""Helpers of the reliability tests: run a recipe in a real subprocess, freeze it at a chosen point
and SIGKILL it; read JSONL logs and saved weights."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

REPO_ROOT = Path(__file__).resolve().parents[2]
PAUSE_RUNNER = Path(__file__).with_name("pause_runner.py")
def run_until_killed(workdir: Path, when: str, step: int, script: str, args: list[str], timeout: int = 400) -> None:
    """Start `python script args` in a subprocess, wait until it is frozen at `when` (step|save) of
    `step` (see pause_runner.py), then SIGKILL it."""
    flag = workdir / f"frozen-{when}-{step}"
    log_path = workdir / "killed_run.log"
    env = dict(os.environ, OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    with open(log_path, "w", encoding="utf-8") as log:
        command = [sys.executable, str(PAUSE_RUNNER), when, str(step), str(flag), script, *args]
        process = subprocess.Popen(command, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT, env=env)
        try:
            deadline = time.monotonic() + timeout
            while not flag.exists():
                if process.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"{script} never reached the {when} of step {step}:\n{log_path.read_text()[-4000:]}")
                time.sleep(0.2)
        finally:
            process.kill()
            process.wait()


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def weights(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path / "model.safetensors"))


# Trainer settings for tiny CPU runs: TRL defaults to bf16 autocast and activation checkpointing.
CPU = dict(use_cpu=True, bf16=False, activation_checkpointing=False, report_to="none", disable_tqdm=True)
