"""Where a PPO update's time goes, ours vs trl 1.11 (gc neutralised): py-spy samples per category.

What is measured
- One run of each worker of `ppo_vs_trl.py` (same workload, settings and seed) under
  `py-spy record --format raw` at `--rate` Hz. Only samples inside the trainer's `train()` count.
- Every sample goes to the first category in CATEGORIES whose frame appears in its stack
  (e.g. a forward pass inside `generate` counts as generation), else to "other".
- Reported: seconds per update of each category (samples / rate / updates) and its share, and
  the hottest functions (inclusive share) of our trainer, for concrete profiling findings.
Sampling adds some overhead and the machine may be shared: compare shares, not absolute times.

Usage: python benchmarks/profile_ppo.py [--config tiny] [--updates 30] [--rate 200]
Needs py-spy (`pip install py-spy`). Writes benchmarks/results/ppo_profile_<config>.json and .md.
"""

import argparse
import collections
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import ppo_vs_trl as bench

HERE = Path(__file__).resolve().parent
CATEGORIES = [  # (label, regex on a frame "function (file)"), first match wins
    ("generation (generate / our KV-cache sampler)",
     r"^GenerationMixin\.generate |^sample \(rlhf_recipes/models/generation\.py\)"),
    ("backward", r"^_engine_run_backward "),
    ("optimizer step + zero_grad", r"^Optimizer\.(profile_hook_step|zero_grad)|^AcceleratedOptimizer\.(step|zero_grad) "),
    ("gradient clipping", r"clip_grad_norm_ |get_total_norm |clip_grads_with_norm_ "),
    ("accelerate unwrap_model", r"^Accelerator\.unwrap_model "),
    ("model forward passes (no grad and train)", r"^Module\._call_impl "),
]
TRAIN_FRAME = r"^PPOTrainer\.train "


def record(variant: str, spec: dict, scratch: Path, rate: int) -> Path:
    raw = scratch / f"{variant}.raw"
    command, _ = bench.worker_command(variant, spec, scratch)
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    subprocess.run([py_spy, "record", "--rate", str(rate), "--format", "raw", "--output", str(raw), "--", *command],
                   check=True, capture_output=True)
    return raw


def stacks(raw: Path):
    """(frames without line numbers, count) for samples inside the trainer's train()."""
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = [re.sub(r":\d+\)$", ")", f) for f in stack.split(";")]
        inside = [i for i, f in enumerate(frames) if re.match(TRAIN_FRAME, f)]
        if inside:
            yield frames[inside[0]:], int(count)


def analyse(raw: Path, rate: int, updates: int) -> dict:
    per_category, inclusive, total = collections.Counter(), collections.Counter(), 0
    for frames, count in stacks(raw):
        total += count
        label = next((lab for lab, pattern in CATEGORIES if any(re.search(pattern, f) for f in frames)), "other")
        per_category[label] += count
        for frame in set(frames):
            inclusive[frame] += count
    seconds = {label: per_category[label] / rate / updates for label, _ in [*CATEGORIES, ("other", "")]}
    return {
        "samples": total,
        "seconds_per_update": total / rate / updates,
        "category_seconds_per_update": seconds,
        "category_share": {k: per_category[k] / total for k in seconds},
        "hottest_inclusive": [(f, n / total) for f, n in inclusive.most_common(40)],
    }


def markdown(result: dict) -> str:
    ours, trl = result["ours"], result["trl_gc_neutralised"]
    lines = [
        f"# PPO profile ({result['config']}): ours vs trl 1.11 (gc neutralised)",
        "",
        f"{result['date']} · py-spy at {result['rate']} Hz · {result['updates']} updates each · "
        f"sampled s/update: ours {ours['seconds_per_update']:.3f}, TRL {trl['seconds_per_update']:.3f}",
        "",
        "| category | ours s/update | ours share | TRL s/update | TRL share |",
        "|---|---|---|---|---|",
    ]
    for label in ours["category_seconds_per_update"]:
        lines.append(
            f"| {label} | {ours['category_seconds_per_update'][label]:.3f} | {ours['category_share'][label]:.1%} | "
            f"{trl['category_seconds_per_update'][label]:.3f} | {trl['category_share'][label]:.1%} |"
        )
    lines += ["", "## Our trainer: hottest functions (inclusive share of train())", "", "| share | function |", "|---|---|"]
    lines += [f"| {share:.1%} | `{frame}` |" for frame, share in ours["hottest_inclusive"]]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="tiny", choices=list(bench.CONFIGS))
    parser.add_argument("--updates", type=int, default=30)
    parser.add_argument("--rate", type=int, default=200)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--results-dir", type=Path, default=HERE / "results")
    args = parser.parse_args()
    config = bench.CONFIGS[args.config]
    result = {"config": args.config, "updates": args.updates, "rate": args.rate,
              "date": time.strftime("%Y-%m-%d %H:%M %Z")}
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        bench.prepare_workload(scratch / "workload", config["model"])
        spec = dict(bench.PPO_SETTINGS, workdir=str(scratch / "workload"), response_length=config["response_length"],
                    updates=args.updates, seed=0, threads=args.threads, max_grad_norm=1.0)
        for variant in ("ours", "trl_gc_neutralised"):
            result[variant] = analyse(record(variant, spec, scratch, args.rate), args.rate, args.updates)
    bench.write_results(args.results_dir, f"ppo_profile_{args.config}", result, markdown(result))


if __name__ == "__main__":
    main()
