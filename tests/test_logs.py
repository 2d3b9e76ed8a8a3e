"""Quiet logs (`rlhf_recipes.logs`): one line per warning, once, rank 0 only, no bars or ANSI codes in a log
file, DeepSpeed left unimported; and the log of a real reward-stage run."""

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent


def _python(code: str, **env) -> subprocess.CompletedProcess:
    """`code` in a fresh interpreter with stdout/stderr piped (not a terminal), as in a log file."""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                            env={**os.environ, **env}, cwd=REPO_ROOT)
    assert result.returncode == 0, result.stderr
    return result


WARN_TWICE = """
import warnings
from rlhf_recipes import logs
logs.configure()
for _ in range(2):
    warnings.warn("prompts were cut")
logs.logger.warning("SFT train: 3 of 9 rows dropped.")
"""


def test_a_warning_is_one_line_once_per_process():
    result = _python(WARN_TWICE)
    assert result.stderr.splitlines() == ["UserWarning: prompts were cut", "SFT train: 3 of 9 rows dropped."]


def test_ranks_other_than_0_print_no_warnings_or_notices():
    assert _python(WARN_TWICE, RANK="1").stderr == ""


def test_deepspeed_stays_unimported_when_a_model_is_unwrapped():
    result = _python("""
import sys
import torch
from accelerate.utils import extract_model_from_parallel
from transformers import TrainingArguments
from rlhf_recipes import logs
args = TrainingArguments(output_dir="/tmp/unused", use_cpu=True)
logs.configure(args)
extract_model_from_parallel(torch.nn.Linear(2, 2))
print("deepspeed" in sys.modules, args.disable_tqdm)
""")
    assert result.stdout.split() == ["False", "True"]  # no DeepSpeed; no progress bars when not on a terminal


@pytest.mark.slow
def test_a_reward_run_logs_plain_single_lines(tmp_path, save_tiny_model):
    """A new score head on a causal-LM checkpoint, dropped rows and metrics: one plain line each."""
    model_dir = save_tiny_model(tmp_path / "sft")
    command = [str(VENV_BIN / "rlhf-recipes"), "reward", "--config", "recipes/tiny/reward.yaml",
               "--model_name_or_path", model_dir, "--output_dir", str(tmp_path / "rm"), "--max_steps", "2",
               "--save_strategy", "no", "--eval_rm_show_pairs", "0"]
    result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300, env=dict(os.environ))
    log = result.stdout + result.stderr
    assert result.returncode == 0, log
    for noise in ("\x1b[", "\r", "FutureWarning", "Setting accelerator", "LOAD REPORT", "Traceback"):
        assert noise not in log, f"{noise!r} in the log:\n{log}"
    lines = log.splitlines()
    head_lines = [line for line in lines if "score.weight" in line]
    assert len(head_lines) == 1 and "newly initialised" in head_lines[0], log
    dropped = [line for line in lines if "rows dropped" in line]
    assert dropped and len(dropped) == len(set(dropped)), log
    metrics = [ast.literal_eval(line) for line in lines if line.startswith("{")]
    assert any("train_loss" in entry for entry in metrics), log
