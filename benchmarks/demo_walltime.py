"""Does the demo show RLHF working for every seed, and how long does it take?

    python benchmarks/demo_walltime.py --seeds 0 1 2 [--work_dir /tmp/demo-bench] [--keep]

Runs `rlhf-recipes demo --seed N --overwrite` in a fresh process per seed (as a user would),
then reads each run directory: held-out gold metrics of SFT and PPO, the PPO - SFT margin, the
RM's checks, the chosen SFT checkpoint, wall time per stage and for the whole command. The
machine's load average is recorded before and after each run, because on a shared CPU other
processes stretch wall time. Results go to benchmarks/results/demo_seeds.json and .md.
"""

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
METRICS = ("greedy_accuracy", "greedy_accuracy_hard", "sampled_accuracy", "sampled_repetition", "sampled_rm_score",
           "kl_to_sft")


def run_seed(seed: int, run_dir: Path) -> dict:
    """One demo run in its own process; its outcome read back from the run directory."""
    load_before = os.getloadavg()
    cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    command = [sys.executable, "-m", "rlhf_recipes.cli", "demo", "--seed", str(seed), "--output_dir", str(run_dir),
               "--overwrite"]
    completed = subprocess.run(command, capture_output=True, text=True)
    wall = time.perf_counter() - started
    cpu_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (cpu_after.ru_utime - cpu_before.ru_utime) + (cpu_after.ru_stime - cpu_before.ru_stime)
    if completed.returncode != 0:
        raise RuntimeError(f"seed {seed} failed:\n{completed.stdout[-3000:]}\n{completed.stderr[-3000:]}")
    evaluation = json.loads((run_dir / "evaluation.json").read_text())
    info = json.loads((run_dir / "run_info.json").read_text())
    selection = json.loads((run_dir / "selection.json").read_text())
    rm_eval = json.loads((run_dir / "reward" / "eval_rm.json").read_text())
    stages = evaluation["stages"]
    return {
        "seed": seed,
        "metrics": {stage: {k: stages[stage][k] for k in METRICS} for stage in stages},
        "greedy_margin_points": 100 * (stages["ppo"]["greedy_accuracy"] - stages["sft"]["greedy_accuracy"]),
        "sampled_margin_points": 100 * (stages["ppo"]["sampled_accuracy"] - stages["sft"]["sampled_accuracy"]),
        "rm_pair_accuracy": rm_eval["accuracy"],
        "rm_ranked_first": evaluation["rm_ranked_first"],
        "sft_checkpoint": selection["chosen"],
        "stage_wall_time_s": {entry["name"]: round(entry["wall_time_s"], 1) for entry in info["stages"]},
        "pipeline_wall_time_s": round(info["total_wall_time_s"], 1),
        "command_wall_time_s": round(wall, 1),
        "command_cpu_time_s": round(cpu, 1),
        "load_average_1min_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
    }


def _pct(value: float) -> str:
    return f"{100 * value:.1f}%"


def markdown(results: dict) -> str:
    runs = results["runs"]
    lines = [
        "# Demo: PPO vs SFT on 200 held-out prompts, per seed",
        "",
        f"Machine: {results['machine']}. Command per seed: `{results['command']}`.",
        "",
        "| seed | greedy acc SFT -> PPO | margin | T=1 acc SFT -> PPO | repetition T=1 SFT -> PPO | RM score T=1 SFT -> PPO "
        "| KL to SFT (PPO) | RM pair acc | RM ranked-first | SFT checkpoint |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for run in runs:
        sft, ppo = run["metrics"]["sft"], run["metrics"]["ppo"]
        lines.append(
            f"| {run['seed']} | {_pct(sft['greedy_accuracy'])} -> {_pct(ppo['greedy_accuracy'])} "
            f"| {run['greedy_margin_points']:+.1f} pts "
            f"| {_pct(sft['sampled_accuracy'])} -> {_pct(ppo['sampled_accuracy'])} "
            f"| {_pct(sft['sampled_repetition'])} -> {_pct(ppo['sampled_repetition'])} "
            f"| {sft['sampled_rm_score']:+.2f} -> {ppo['sampled_rm_score']:+.2f} | {ppo['kl_to_sft']:.3f} "
            f"| {_pct(run['rm_pair_accuracy'])} | {_pct(run['rm_ranked_first'])} | {run['sft_checkpoint']} |"
        )
    summary = results["summary"]
    lines += [
        "",
        f"Greedy-accuracy margin (PPO - SFT): mean {summary['greedy_margin_mean']:+.1f} points, "
        f"min {summary['greedy_margin_min']:+.1f}, max {summary['greedy_margin_max']:+.1f}.",
        "",
        "## Wall time (seconds)",
        "",
    ]
    stages = list(runs[0]["stage_wall_time_s"])
    lines.append(
        "| seed | " + " | ".join(stages) + " | pipeline | whole command | its CPU time | load avg (1 min) before/after |"
    )
    lines.append("|---|" + "---|" * (len(stages) + 4))
    for run in runs:
        times = " | ".join(f"{run['stage_wall_time_s'][s]:.1f}" for s in stages)
        load = run["load_average_1min_before_after"]
        lines.append(
            f"| {run['seed']} | {times} | {run['pipeline_wall_time_s']:.1f} | {run['command_wall_time_s']:.1f} "
            f"| {run['command_cpu_time_s']:.1f} | {load[0]} / {load[1]} |"
        )
    lines += [
        "",
        "A load average above the core count means other processes shared the CPU during the run; the command's",
        "CPU time (user + system, one torch thread) is then the better estimate of its wall time on an idle machine.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--work_dir", help="Where the run directories go (default: a temporary directory).")
    parser.add_argument("--keep", action="store_true", help="Keep the run directories.")
    parser.add_argument("--results_dir", default=str(RESULTS))
    args = parser.parse_args(argv)
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="demo-bench-"))
    runs = []
    for seed in args.seeds:
        print(f"seed {seed} ...", flush=True)
        runs.append(run_seed(seed, work / f"seed{seed}"))
        print(json.dumps(runs[-1], indent=1), flush=True)
    margins = [run["greedy_margin_points"] for run in runs]
    results = {
        "machine": f"{platform.platform()}, {os.cpu_count()} CPU cores, Python {platform.python_version()}",
        "command": "rlhf-recipes demo --seed N --overwrite",
        "runs": runs,
        "summary": {
            "greedy_margin_mean": statistics.mean(margins),
            "greedy_margin_min": min(margins),
            "greedy_margin_max": max(margins),
            "ppo_beats_sft_on_every_seed": all(m > 0 for m in margins),
        },
    }
    out = Path(args.results_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "demo_seeds.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "demo_seeds.md").write_text(markdown(results))
    print(markdown(results))
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
