"""Two CPU ranks (torchrun, gloo): every rank's files land in the staged checkpoint before it is
committed, and each rank logs the samples it trained on."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rlhf_recipes.artifacts.checkpointing import MARKER, complete_checkpoints

from reliability_helpers import REPO_ROOT, read_jsonl

pytestmark = [pytest.mark.slow, pytest.mark.multiprocess]


def test_two_ranks_commit_complete_checkpoints_and_log_disjoint_samples(tmp_path, short_pairs):
    output_dir = tmp_path / "sft"
    command = [
        str(Path(sys.executable).parent / "torchrun"), "--nproc_per_node", "2", "recipes/sft.py",
        "--config", "recipes/tiny/sft.yaml", "--dataset_name", short_pairs, "--output_dir", str(output_dir),
        "--max_samples", "16", "--max_length", "64", "--per_device_train_batch_size", "2", "--max_steps", "4",
        "--save_strategy", "steps", "--save_steps", "2", "--save_total_limit", "1", "--eval_strategy", "no",
        "--disable_tqdm", "true",
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=400, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    assert [path for _, path in complete_checkpoints(str(output_dir))] == [str(output_dir / "checkpoint-4")]
    checkpoint = output_dir / "checkpoint-4"
    assert {"rng_state_0.pth", "rng_state_1.pth", MARKER} <= set(os.listdir(checkpoint))  # both ranks, then marked
    assert json.loads((checkpoint / "trainer_state.json").read_text())["global_step"] == 4
    assert not list(output_dir.glob(".tmp-*"))
    ranks = [read_jsonl(output_dir / f"data_order.rank{rank}.jsonl") for rank in (0, 1)]
    assert [[line["step"] for line in lines] for lines in ranks] == [[1, 2, 3, 4]] * 2
    for first, second in zip(*ranks, strict=True):
        assert len(first["samples"]) == len(second["samples"]) == 2
        assert not set(first["samples"]) & set(second["samples"])  # each rank trains on its own share
