"""Two real CPU ranks (torchrun + gloo), with a full and with a LoRA critic: the run completes and both
ranks hold the same weights."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

WORKER = Path(__file__).with_name("ddp_worker.py")


@pytest.mark.slow
@pytest.mark.multiprocess
@pytest.mark.parametrize("mode", [[], ["lora_critic"]], ids=["full", "lora_critic"])
def test_two_cpu_ranks_complete_and_agree_on_the_final_weights(tmp_path, mode):
    torchrun = Path(sys.executable).with_name("torchrun")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [str(torchrun), "--standalone", "--nproc_per_node", "2", str(WORKER), str(tmp_path), *mode],
        capture_output=True, text=True, timeout=400, env=env,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in (0, 1)]
    assert [r["world_size"] for r in ranks] == [2, 2]
    for part in ("actor", "critic", "ema"):
        for name, weight in ranks[0][part].items():
            assert torch.equal(weight, ranks[1][part][name]), (part, name)
    # the ranks packed their minibatches into different numbers of microbatches (at most 4, fewer where rows
    # were short), yet synchronised once per minibatch
    counts = [r["packed_counts"] for r in ranks]
    assert len(counts[0]) == len(counts[1]) > 0 and set(counts[0] + counts[1]) <= {2, 3, 4}
    assert min(counts[0] + counts[1]) < 4 and counts[0] != counts[1], counts
    # they agree because they trained together, not because nothing moved
    for part, initial in (("actor", "initial"), ("critic", "initial_critic")):
        assert any(not torch.equal(w, ranks[0][initial][n]) for n, w in ranks[0][part].items()), part

    log = [json.loads(line) for line in open(tmp_path / "ppo_log.jsonl", encoding="utf-8")]
    assert [row["step"] for row in log] == [1, 2, 3]
    assert [row["skipped"] for row in log] == [False, True, False]  # rank 1's NaN skipped the update on both
    assert all(len(set(row["prompt_indices"])) == 16 for row in log)  # 8 distinct prompts per rank
    assert (tmp_path / "checkpoint-3" / "rng_state_0.pth").is_file()
    assert (tmp_path / "checkpoint-3" / "rng_state_1.pth").is_file()
