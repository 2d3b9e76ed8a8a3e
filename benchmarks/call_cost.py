"""What one PPO training call costs on SmolLM2-135M-Instruct: a fixed part per call plus a part per position.

A PPO microbatch is one forward and one backward of the actor (and of the critic). Measured here on the
actor the way `PPOTrainer._update` calls it (`ppo.rollout.response_logits`: attention mask, position ids, the
LM head on the response positions only, log-probs at temperature 0.7, entropy without gradient, backward),
for one row of L positions, the last 40% of them the response, L in `--lengths`. Each length is timed
`--repeats` times (CPU seconds of this process, the fastest kept) after one warm-up call, and
`seconds = fixed + per_position * L` is fitted by least squares.

The fixed part is reading every weight once per call (forward, backward, gradient write), which does not
shrink with the rows: it is why `ppo.microbatches` packs short rows into fewer calls and why a microbatch of
two rows costs less than two of one.

Usage: OMP_NUM_THREADS=1 python benchmarks/call_cost.py [--lengths 50 100 200 400] [--repeats 3]
Writes benchmarks/results/call_cost.json and .md.
"""

import argparse
import json
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM

from _machine import cpu_model
from rlhf_recipes.models.generation import logprobs_from_logits
from rlhf_recipes.models.gguf import resolve_model_path
from rlhf_recipes.ppo.losses import entropy_from_logits
from rlhf_recipes.ppo.rollout import response_logits

RESULTS = Path(__file__).resolve().parent / "results"


def one_call(model, length: int) -> float:
    """CPU seconds of one forward + backward over one row of `length` positions."""
    response = max(1, int(0.4 * length))
    ids = torch.randint(0, model.config.vocab_size, (1, length))
    mask = torch.ones_like(ids)
    start = time.process_time()
    logits = response_logits(model, ids, mask, response, keep_only=True).float() / 0.7
    logprobs = logprobs_from_logits(logits, ids[:, -response:])
    with torch.no_grad():
        entropy_from_logits(logits)
    logprobs.sum().backward()
    seconds = time.process_time() - start
    model.zero_grad(set_to_none=True)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[50, 100, 200, 400])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(resolve_model_path("smollm2-135m-instruct"), dtype=torch.float32)
    model.train()
    one_call(model, args.lengths[0])  # warm-up
    rows = [{"positions": length, "cpu_s": min(one_call(model, length) for _ in range(args.repeats))}
            for length in args.lengths]
    x = torch.tensor([r["positions"] for r in rows], dtype=torch.float64)
    y = torch.tensor([r["cpu_s"] for r in rows], dtype=torch.float64)
    slope = float(((x - x.mean()) * (y - y.mean())).sum() / ((x - x.mean()) ** 2).sum())
    fixed = float(y.mean() - slope * x.mean())
    result = {
        "machine": cpu_model(), "threads": torch.get_num_threads(), "torch": torch.__version__,
        "command": "OMP_NUM_THREADS=1 python benchmarks/call_cost.py " + " ".join(
            ["--lengths", *map(str, args.lengths), "--repeats", str(args.repeats)]),
        "rows": rows, "fixed_s_per_call": fixed, "s_per_position": slope,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "call_cost.json").write_text(json.dumps(result, indent=1) + "\n")
    lines = [
        "# One PPO training call on SmolLM2-135M-Instruct: fixed cost per call vs cost per position", "",
        f"{result['machine']}, {result['threads']} thread(s), torch {result['torch']}, fp32 · "
        f"command: `{result['command']}`", "",
        "| positions in the call (1 row) | forward + backward CPU s | CPU ms per position |", "|---|---|---|",
        *[f"| {r['positions']} | {r['cpu_s']:.3f} | {1000 * r['cpu_s'] / r['positions']:.1f} |" for r in rows], "",
        f"Least-squares fit: **{fixed:.3f} s per call + {1000 * slope:.2f} ms per position**. A call of a 100-token "
        f"row spends {100 * fixed / (fixed + 100 * slope):.0f}% of its time on the fixed part.", "",
    ]
    (RESULTS / "call_cost.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
