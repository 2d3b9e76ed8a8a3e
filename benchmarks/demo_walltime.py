"""Does the demo show RLHF working for every seed, how long does it take, and how does a baseline compare?

    python benchmarks/demo_walltime.py --seeds 0 1 2 [--baseline_rev f1baf74] [--work_dir DIR] [--keep]

Runs `python -m rlhf_recipes.cli demo --seed N --overwrite` in a fresh process per seed (as a user
would), then reads each run directory: held-out gold metrics of SFT and PPO, the PPO - SFT margin,
the RM's checks, the chosen SFT checkpoint, wall time per stage, and wall and CPU time (user + system
of the child process) of the whole command.

With `--baseline_rev`, the same seeds also run from that git revision (checked out into a temporary
`git worktree`, run by the same interpreter with the worktree as working directory, so it imports
its own package), alternating which tree goes first from seed to seed so that a drift in the
machine's load does not favour one of them. On a shared CPU other processes stretch wall time, so
the comparison is made on CPU time; the load average before and after each run and the CPU model
are recorded with it. Results go to benchmarks/results/demo_seeds.json and .md.
"""

import argparse
import contextlib
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
from collections.abc import Iterator
from pathlib import Path

from _machine import cpu_model

REPO = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
METRICS = ("greedy_accuracy", "greedy_accuracy_hard", "sampled_accuracy", "sampled_repetition", "sampled_rm_score",
           "kl_to_sft")
CURRENT = "current"
BASELINE = "baseline"


def git_revision(tree: Path) -> str:
    """The tree's commit, short, with `+changes` when it has uncommitted changes to tracked files."""
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=tree, capture_output=True, text=True,
                            check=True).stdout.strip()
    dirty = subprocess.run(["git", "diff", "--quiet", "HEAD"], cwd=tree).returncode != 0
    return commit + ("+changes" if dirty else "")


@contextlib.contextmanager
def baseline_worktree(rev: str) -> Iterator[Path]:
    """A temporary detached `git worktree` of `rev`, removed afterwards."""
    path = Path(tempfile.mkdtemp(prefix="demo-baseline-")) / "tree"
    subprocess.run(["git", "worktree", "add", "--detach", str(path), rev], cwd=REPO, check=True, capture_output=True)
    try:
        yield path
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(path)], cwd=REPO, capture_output=True)
        shutil.rmtree(path.parent, ignore_errors=True)


def check_imports_own_package(tree: Path) -> None:
    """`python -m` run from `tree` must import `tree`'s package, not an installed copy of another tree."""
    found = subprocess.run([sys.executable, "-c", "import rlhf_recipes; print(rlhf_recipes.__file__)"], cwd=tree,
                           capture_output=True, text=True, check=True).stdout.strip()
    if not Path(found).resolve().is_relative_to(tree.resolve()):
        raise RuntimeError(f"From {tree}, Python imports rlhf_recipes from {found}, not from that tree.")


def run_seed(seed: int, run_dir: Path, tree: Path = REPO) -> dict:
    """One demo run of `tree`'s code in its own process; its outcome read back from the run directory."""
    load_before = os.getloadavg()
    cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    command = [sys.executable, "-m", "rlhf_recipes.cli", "demo", "--seed", str(seed), "--output_dir", str(run_dir),
               "--overwrite"]
    completed = subprocess.run(command, capture_output=True, text=True, cwd=tree)
    wall = time.perf_counter() - started
    cpu_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    user = cpu_after.ru_utime - cpu_before.ru_utime
    system = cpu_after.ru_stime - cpu_before.ru_stime
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
        "command_cpu_time_s": round(user + system, 1),
        "command_user_system_s": [round(user, 1), round(system, 1)],
        "load_average_1min_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
    }


def summarize(runs: list[dict]) -> dict:
    """Margins, PPO's held-out results and the CPU time of one tree's runs."""
    margins = [run["greedy_margin_points"] for run in runs]
    ppo = [run["metrics"]["ppo"] for run in runs]
    return {
        "greedy_margin_mean": statistics.mean(margins),
        "greedy_margin_min": min(margins),
        "greedy_margin_max": max(margins),
        "ppo_beats_sft_on_every_seed": all(m > 0 for m in margins),
        "ppo_greedy_accuracy_mean": statistics.mean(m["greedy_accuracy"] for m in ppo),
        "ppo_sampled_accuracy_mean": statistics.mean(m["sampled_accuracy"] for m in ppo),
        "ppo_sampled_repetition_max": max(m["sampled_repetition"] for m in ppo),
        "rm_ranked_first_mean": statistics.mean(run["rm_ranked_first"] for run in runs),
        "command_cpu_time_s_total": round(sum(run["command_cpu_time_s"] for run in runs), 1),
        "command_wall_time_s_total": round(sum(run["command_wall_time_s"] for run in runs), 1),
    }


def compare(current: list[dict], baseline: list[dict]) -> dict:
    """CPU and wall time of the current tree over the baseline's: per seed and for all seeds together."""
    def ratio(key: str, a: list[dict], b: list[dict]) -> float:
        return round(sum(run[key] for run in a) / sum(run[key] for run in b), 3)

    return {
        "cpu_time_ratio": ratio("command_cpu_time_s", current, baseline),
        "wall_time_ratio": ratio("command_wall_time_s", current, baseline),
        "cpu_time_ratio_per_seed": {str(c["seed"]): ratio("command_cpu_time_s", [c], [b])
                                    for c, b in zip(current, baseline, strict=True)},
    }


def _pct(value: float) -> str:
    return f"{100 * value:.1f}%"


def results_table(runs: list[dict], summary: dict) -> list[str]:
    lines = [
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
    lines += [
        "",
        f"Greedy-accuracy margin (PPO - SFT): mean {summary['greedy_margin_mean']:+.1f} points, "
        f"min {summary['greedy_margin_min']:+.1f}, max {summary['greedy_margin_max']:+.1f}. "
        f"PPO means: greedy {_pct(summary['ppo_greedy_accuracy_mean'])}, "
        f"T=1 {_pct(summary['ppo_sampled_accuracy_mean'])}; RM ranked-first mean {_pct(summary['rm_ranked_first_mean'])}.",
    ]
    return lines


def time_table(labelled_runs: list[tuple[str, dict]]) -> list[str]:
    stages = list(labelled_runs[0][1]["stage_wall_time_s"])
    lines = [
        "| tree | seed | " + " | ".join(stages)
        + " | pipeline | whole command | its CPU time (user + sys) | load avg (1 min) before/after |",
        "|---|---|" + "---|" * (len(stages) + 4),
    ]
    for label, run in labelled_runs:
        times = " | ".join(f"{run['stage_wall_time_s'].get(s, float('nan')):.1f}" for s in stages)
        load = run["load_average_1min_before_after"]
        lines.append(
            f"| {label} | {run['seed']} | {times} | {run['pipeline_wall_time_s']:.1f} | {run['command_wall_time_s']:.1f} "
            f"| {run['command_cpu_time_s']:.1f} | {load[0]} / {load[1]} |"
        )
    return lines


def markdown(results: dict) -> str:
    trees = results["trees"]
    lines = [
        "# Demo: PPO vs SFT on 200 held-out prompts, per seed",
        "",
        f"CPU: {results['cpu_model']}. Machine: {results['machine']}. Command per seed: `{results['command']}`.",
        "",
        f"## {trees[CURRENT]['label']}",
        "",
        *results_table(results["runs"], results["summary"]),
    ]
    labelled = [(trees[CURRENT]["label"], run) for run in results["runs"]]
    if "baseline_runs" in results:
        comparison = results["comparison"]
        per_seed = ", ".join(f"seed {s}: {r:.2f}" for s, r in comparison["cpu_time_ratio_per_seed"].items())
        lines += [
            "",
            f"## {trees[BASELINE]['label']}",
            "",
            *results_table(results["baseline_runs"], results["baseline_summary"]),
            "",
            "## Time: current over baseline",
            "",
            f"CPU time {comparison['cpu_time_ratio']:.2f}x ({results['summary']['command_cpu_time_s_total']:.1f} s over "
            f"{results['baseline_summary']['command_cpu_time_s_total']:.1f} s for all seeds; {per_seed}); wall time "
            f"{comparison['wall_time_ratio']:.2f}x. Runs alternate between the trees, in the order "
            f"{', '.join(f'{label} {seed}' for label, seed in results['run_order'])}.",
        ]
        runs = {(CURRENT, run["seed"]): run for run in results["runs"]}
        runs |= {(BASELINE, run["seed"]): run for run in results["baseline_runs"]}
        labelled = [(trees[label]["label"], runs[label, seed]) for label, seed in results["run_order"]]
    lines += [
        "",
        "## Wall time (seconds)",
        "",
        *time_table(labelled),
        "",
        "A load average above the core count means other processes shared the CPU during the run; the command's",
        "CPU time (user + system, one torch thread) is then the better estimate of its wall time on an idle machine.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--baseline_rev", help="A git revision to measure in the same run (e.g. f1baf74).")
    parser.add_argument("--work_dir", help="Where the run directories go (default: a temporary directory).")
    parser.add_argument("--keep", action="store_true", help="Keep the run directories.")
    parser.add_argument("--results_dir", default=str(RESULTS))
    args = parser.parse_args(argv)
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="demo-bench-"))
    trees = {CURRENT: {"label": f"Current tree ({git_revision(REPO)})"}}
    with contextlib.ExitStack() as stack:
        paths = {CURRENT: REPO}
        if args.baseline_rev:
            paths[BASELINE] = stack.enter_context(baseline_worktree(args.baseline_rev))
            commit = git_revision(paths[BASELINE])
            named = args.baseline_rev if commit.startswith(args.baseline_rev) else f"{args.baseline_rev}, {commit}"
            trees[BASELINE] = {"label": f"Baseline ({named})"}
        for path in paths.values():
            check_imports_own_package(path)
        ordered = []
        for index, seed in enumerate(args.seeds):
            for label in list(paths)[:: 1 if index % 2 == 0 else -1]:
                print(f"{label} seed {seed} ...", flush=True)
                ordered.append((label, run_seed(seed, work / label / f"seed{seed}", paths[label])))
                print(json.dumps(ordered[-1][1], indent=1), flush=True)
    runs = {label: [run for tree, run in ordered if tree == label] for label in paths}
    results = {
        "cpu_model": cpu_model(),
        "machine": f"{platform.platform()}, {os.cpu_count()} CPU cores, Python {platform.python_version()}",
        "command": "python -m rlhf_recipes.cli demo --seed N --overwrite",
        "trees": trees,
        "runs": runs[CURRENT],
        "summary": summarize(runs[CURRENT]),
    }
    if BASELINE in runs:
        results |= {
            "baseline_runs": runs[BASELINE],
            "baseline_summary": summarize(runs[BASELINE]),
            "comparison": compare(runs[CURRENT], runs[BASELINE]),
            "run_order": [(label, run["seed"]) for label, run in ordered],
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
