"""PPO speed and reward curve: rlhf_recipes.ppo.PPOTrainer vs trl 1.11's experimental PPOTrainer.

What is measured
- Seconds per PPO update (rollout generation + reference/value/reward passes + GAE + all PPO
  epochs and minibatches + logging), timed as the gap between consecutive `on_step_end`
  callbacks; the first `warmup` updates of every run are excluded.
- Generated tokens/s = batch x response_length / seconds per update (end-to-end throughput),
  and the seconds spent inside `policy.generate` per update ("-" where a trainer samples
  without `generate`, as ours does with its own KV-cache sampler).
- The reward curve: the mean reward of each update's rollout batch, from each trainer's log.

How
- One workload per config, written once to a temporary directory (byte-level tokenizer,
  random-init OPT policy and value model, prompts without digits) and loaded by every run,
  so all runs start from identical weights. The reward is `DigitReward` (fraction of the
  response that is digits), one nn.Module given to both trainers.
- Identical settings on both sides: batch, response length (no stop token: every response is
  `response_length` tokens), PPO epochs, minibatches (one optimizer step per minibatch),
  learning rate (constant), temperature, k1 KL coefficient, clip ranges, vf_coef, gamma, lam.
- Four variants, each a fresh subprocess: `trl_shipped` and `trl_gc_neutralised` in
  benchmarks/.venv-trl111 (made by setup_trl111.sh), `ours` and `floor` in the interpreter
  running this script. Repeat r uses seed r for every variant and rotates the variant order, so
  drifting load on the shared machine hits all variants alike.
- `floor` (_floor_worker.py) is no trainer: the bare model work one update needs with the same
  models and shapes (KV-cache sampling, reference, value and reward passes, and the epochs x
  minibatches of actor + critic forward/backward with fused Adam steps). Any trainer doing the
  same arithmetic at the same precision needs at least this time, so if floor / TRL > 0.6 the
  0.6x goal needs less arithmetic than TRL does (fewer epochs, a shared trunk, lower precision).
- Reported per variant: the median over all timed updates of all repeats (wall and CPU time
  of the process; every run uses `--threads` torch threads, default 1, so on a shared machine
  the CPU time is the contention-robust figure), and each repeat's median wall time. Ratios
  are ours / each other variant and floor / each TRL variant; the goal is
  ours <= 0.6 x trl_gc_neutralised.

Usage: python benchmarks/ppo_vs_trl.py [--configs tiny medium] [--repeats 3] [--ours-max-grad-norm 1.0] [--tag X]
Writes benchmarks/results/ppo_vs_trl<tag>.json and ppo_vs_trl<tag>.md.
"""

import argparse
import json
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import transformers

from rlhf_recipes.models import build_byte_tokenizer, build_tiny_model
from _machine import cpu_model

HERE = Path(__file__).resolve().parent
TRL_PYTHON = HERE / ".venv-trl111" / "bin" / "python"
WORKERS = {
    "trl_shipped": (str(TRL_PYTHON), HERE / "_trl111_worker.py"),
    "trl_gc_neutralised": (str(TRL_PYTHON), HERE / "_trl111_worker.py"),
    "ours": (sys.executable, HERE / "_ours_worker.py"),
    "floor": (sys.executable, HERE / "_floor_worker.py"),
}
TRL_VARIANTS = ("trl_shipped", "trl_gc_neutralised")

PPO_SETTINGS = dict(
    batch_size=16,
    num_ppo_epochs=4,
    num_mini_batches=4,
    learning_rate=3e-4,
    temperature=1.0,
    kl_coef=0.05,
    kl_estimator="k1",
    cliprange=0.2,
    cliprange_value=0.2,
    vf_coef=0.1,
    gamma=1.0,
    lam=0.95,
)

CONFIGS = {
    # FIELD_NOTES' tiny config, where per-update overheads dominate.
    "tiny": dict(
        model=dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, ffn_dim=256, word_embed_proj_dim=64),
        response_length=24,
        updates=40,
        warmup=5,
    ),
    # FIELD_NOTES' medium config, where the matrix work is a larger share.
    "medium": dict(
        model=dict(
            hidden_size=256, num_hidden_layers=4, num_attention_heads=4, ffn_dim=1024, word_embed_proj_dim=256
        ),
        response_length=64,
        updates=12,
        warmup=2,
    ),
}

_WORDS = (
    "tell me about the sea and sky why do cats sleep so much write a short note on bread "
    "what is a good name for a dog explain rain to a child list some colours please"
).split()


def make_prompts(n: int, seed: int) -> list[str]:
    """`n` prompts of 3 to 8 lowercase words, none containing a digit."""
    rng = random.Random(seed)
    return [" ".join(rng.choices(_WORDS, k=rng.randint(3, 8))) for _ in range(n)]


def prepare_workload(workdir: Path, model_sizes: dict, seed: int = 0) -> None:
    """Write the tokenizer, random-init policy and value model, and the prompts (text for ours,
    token ids for TRL 1.11, which takes tokenized prompts only)."""
    tokenizer = build_byte_tokenizer()
    torch.manual_seed(seed)
    build_tiny_model("tiny:opt", tokenizer, "causal-lm", model_sizes).save_pretrained(workdir / "policy")
    build_tiny_model("tiny:opt", tokenizer, "seq-cls", model_sizes).save_pretrained(workdir / "value")
    tokenizer.save_pretrained(workdir / "tokenizer")
    lines = [json.dumps({"prompt": p, "input_ids": tokenizer(p)["input_ids"]}) for p in make_prompts(512, seed)]
    (workdir / "prompts.jsonl").write_text("\n".join(lines))


def worker_command(variant: str, spec: dict, scratch: Path) -> tuple[list[str], Path]:
    """The command that runs `variant`'s worker on `spec` (written to scratch), and its output file."""
    python, worker = WORKERS[variant]
    spec_path, out_path = scratch / f"{variant}-spec.json", scratch / f"{variant}-out.json"
    spec_path.write_text(json.dumps({**spec, "gc": "neutralised" if variant == "trl_gc_neutralised" else "shipped"}))
    return [python, str(worker), str(spec_path), str(out_path)], out_path


def write_results(results_dir: Path, stem: str, results: dict, text: str) -> None:
    """`<stem>.json` and `<stem>.md` in results_dir; the markdown is also printed."""
    results_dir.mkdir(parents=True, exist_ok=True)
    (results_dir / f"{stem}.json").write_text(json.dumps(results, indent=1))
    (results_dir / f"{stem}.md").write_text(text)
    print(text)


def run_variant(variant: str, spec: dict, scratch: Path) -> dict:
    command, out_path = worker_command(variant, spec, scratch)
    start = time.perf_counter()
    proc = subprocess.run(command, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{variant} failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    result = json.loads(out_path.read_text())
    result["process_seconds"] = time.perf_counter() - start
    return result


def summarise(runs: list[dict], warmup: int, tokens_per_update: int) -> dict:
    def pooled(key):
        return [s for r in runs for s in r[key][warmup:]]

    wall, cpu = statistics.median(pooled("update_seconds")), statistics.median(pooled("update_cpu_seconds"))
    summary = {
        "seconds_per_update": wall,
        "cpu_seconds_per_update": cpu,
        "seconds_per_update_per_repeat": [statistics.median(r["update_seconds"][warmup:]) for r in runs],
        "generate_seconds_per_update": statistics.median(pooled("generate_seconds")),
        "tokens_per_second": tokens_per_update / wall,
        "tokens_per_cpu_second": tokens_per_update / cpu,
        "timed_updates": len(pooled("update_seconds")),
    }
    if "rollout_seconds" in runs[0]:
        summary["rollout_seconds_per_update"] = statistics.median(pooled("rollout_seconds"))
    if "reward" in runs[0]:  # the floor trains no PPO objective, so it has no reward curve
        summary["reward_curve"] = [statistics.fmean(step) for step in zip(*(r["reward"] for r in runs))]
        summary["final_reward"] = statistics.fmean(statistics.fmean(r["reward"][-10:]) for r in runs)
    return summary


def ratios(summary: dict, numerator: str, baselines) -> dict:
    """numerator / baseline seconds per update (wall and CPU), for each baseline present."""
    if numerator not in summary:
        return {}
    return {
        baseline: {key: summary[numerator][key] / summary[baseline][key]
                   for key in ("seconds_per_update", "cpu_seconds_per_update")}
        for baseline in baselines if baseline in summary
    }


def benchmark_config(
    name: str, config: dict, variants: list[str], repeats: int, threads: int, max_grad_norm: float
) -> dict:
    print(f"== {name}: {config}", flush=True)
    with tempfile.TemporaryDirectory(prefix=f"ppo-bench-{name}-") as tmp:
        scratch = Path(tmp)
        prepare_workload(scratch / "workload", config["model"])
        runs = {variant: [] for variant in variants}
        for repeat in range(repeats):
            order = variants[repeat % len(variants) :] + variants[: repeat % len(variants)]
            for variant in order:
                spec = dict(
                    PPO_SETTINGS,
                    workdir=str(scratch / "workload"),
                    response_length=config["response_length"],
                    updates=config["updates"],
                    seed=repeat,
                    threads=threads,
                    max_grad_norm=max_grad_norm,
                )
                result = run_variant(variant, spec, scratch)
                runs[variant].append(result)
                timed = result["update_seconds"][config["warmup"] :]
                reward = f", final reward {statistics.fmean(result['reward'][-10:]):.3f}" if "reward" in result else ""
                print(f"  repeat {repeat} {variant:>19}: median {statistics.median(timed):.3f} s/update{reward}",
                      flush=True)
    tokens = PPO_SETTINGS["batch_size"] * config["response_length"]
    summary = {variant: summarise(variant_runs, config["warmup"], tokens) for variant, variant_runs in runs.items()}
    return {
        "config": config,
        "variants": summary,
        "ours_over": ratios(summary, "ours", (*TRL_VARIANTS, "floor")),
        "floor_over": ratios(summary, "floor", TRL_VARIANTS),
        "runs": runs,
    }


def trl_versions() -> dict:
    out = subprocess.run(
        [str(TRL_PYTHON), "-c", "import json, torch, transformers, trl; print(json.dumps({'trl': trl.__version__, "
         "'transformers': transformers.__version__, 'torch': torch.__version__}))"],
        capture_output=True, text=True, check=True,
    )
    return json.loads(out.stdout)


def environment() -> dict:
    import trl

    cpu = cpu_model()
    return {
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "machine": f"{cpu}, {len(__import__('os').sched_getaffinity(0))} cores visible, {platform.system()}",
        "python": platform.python_version(),
        "ours": {"torch": torch.__version__, "transformers": transformers.__version__, "trl": trl.__version__},
        "trl_venv": trl_versions(),
        "git": git_state(),
    }


def git_state() -> dict:
    """HEAD and the uncommitted files of the package: the trainer measured is the working tree's."""
    def git(*args):
        return subprocess.run(["git", *args], cwd=HERE, capture_output=True, text=True).stdout

    return {"head": git("rev-parse", "--short", "HEAD").strip(),
            "uncommitted": git("status", "--porcelain", "--", "../rlhf_recipes").splitlines()}


def markdown(results: dict) -> str:
    env = results["environment"]
    lines = [
        "# PPO: rlhf_recipes vs trl 1.11 experimental PPOTrainer",
        "",
        f"{env['date']} · {env['machine']} · torch threads per run: {results['threads']} · "
        f"ours: torch {env['ours']['torch']}, transformers {env['ours']['transformers']} · "
        f"TRL side: trl {env['trl_venv']['trl']}, transformers {env['trl_venv']['transformers']} · "
        f"git {env['git']['head']}, {len(env['git']['uncommitted'])} uncommitted files in rlhf_recipes/",
        "",
        f"PPO settings (both): {json.dumps(PPO_SETTINGS)}; no stop token; {results['repeats']} repeats "
        f"(seed = repeat), variant order rotated; our gradient clipping max_grad_norm="
        f"{results['ours_max_grad_norm'] or 'off'} (TRL 1.11 never clips).",
        "",
        "| config | variant | wall s/update (median) | per-repeat medians | CPU s/update | generate s/update | "
        "tokens/s (wall) | final reward (last 10) | ours / this (wall; CPU) | floor / this (wall; CPU) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, res in results["configs"].items():
        cfg = res["config"]
        label = (f"{name} (h{cfg['model']['hidden_size']}, L{cfg['model']['num_hidden_layers']}, "
                 f"resp {cfg['response_length']}, {cfg['updates'] - cfg['warmup']} timed + {cfg['warmup']} warm-up)")
        for variant, s in res["variants"].items():
            generate = f"{s['generate_seconds_per_update']:.3f}" if s["generate_seconds_per_update"] else "-"
            reward = f"{s['final_reward']:.2f}" if "final_reward" in s else "-"
            lines.append(
                f"| {label} | {variant} | {s['seconds_per_update']:.3f} | "
                f"{', '.join(f'{x:.3f}' for x in s['seconds_per_update_per_repeat'])} | "
                f"{s['cpu_seconds_per_update']:.3f} | {generate} | "
                f"{s['tokens_per_second']:.0f} | {reward} | "
                f"{ratio_text(res['ours_over'].get(variant))} | {ratio_text(res['floor_over'].get(variant))} |"
            )
    lines += floor_paragraph(results)
    lines += ["", "## Reward curves (mean over repeats; every 5th update)", ""]
    for name, res in results["configs"].items():
        variants = [v for v, s in res["variants"].items() if v != "trl_shipped" and "reward_curve" in s]
        curves = {v: res["variants"][v]["reward_curve"] for v in variants}
        steps = range(0, len(next(iter(curves.values()))), 5)
        lines += [f"**{name}**", "", "| update | " + " | ".join(variants) + " |", "|---" * (len(variants) + 1) + "|"]
        lines += [f"| {k + 1} | " + " | ".join(f"{curves[v][k]:.3f}" for v in variants) + " |" for k in steps]
        lines.append("")
    return "\n".join(lines)


def ratio_text(ratio: dict | None) -> str:
    return "" if ratio is None else f"{ratio['seconds_per_update']:.2f}x; {ratio['cpu_seconds_per_update']:.2f}x"


def floor_paragraph(results: dict) -> list[str]:
    """What the floor says about the 0.6x goal, per config (CPU-time ratios)."""
    found = []
    for name, res in results["configs"].items():
        floor_over, ours_over = res["floor_over"].get("trl_gc_neutralised"), res["ours_over"].get("floor")
        if floor_over and ours_over:
            found.append(f"{name}: floor / TRL gc-neutralised {floor_over['cpu_seconds_per_update']:.2f}x, "
                         f"ours / floor {ours_over['cpu_seconds_per_update']:.2f}x")
    if not found:
        return []
    return [
        "",
        "`floor` is no trainer but the bare model work of one update with the same models and shapes: KV-cache "
        "sampling, one reference, value and reward pass, and the epochs x minibatches of actor + critic "
        "forward/backward with fused Adam steps (_floor_worker.py). By CPU time: " + "; ".join(found) + ". "
        "Where floor / TRL > 0.6, the 0.6x goal cannot be met without doing less arithmetic than TRL "
        "(fewer epochs, a shared actor-critic trunk, lower precision).",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--variants", nargs="+", default=list(WORKERS), choices=list(WORKERS))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads in every run (the box is shared)")
    parser.add_argument("--ours-max-grad-norm", type=float, default=1.0,
                        help="our gradient clipping (TRL 1.11 never clips); 0 disables it")
    parser.add_argument("--results-dir", type=Path, default=HERE / "results")
    parser.add_argument("--tag", default="", help="suffix of the result files, e.g. _noclip")
    args = parser.parse_args()
    if not TRL_PYTHON.exists() and any(v.startswith("trl") for v in args.variants):
        sys.exit(f"{TRL_PYTHON} missing: run `bash benchmarks/setup_trl111.sh` first.")
    results = {
        "environment": environment(),
        "threads": args.threads,
        "repeats": args.repeats,
        "ours_max_grad_norm": args.ours_max_grad_norm,
        "ppo_settings": PPO_SETTINGS,
        "configs": {
            name: benchmark_config(name, CONFIGS[name], args.variants, args.repeats, args.threads,
                                   args.ours_max_grad_norm)
            for name in args.configs
        },
    }
    write_results(args.results_dir, f"ppo_vs_trl{args.tag}", results, markdown(results))


if __name__ == "__main__":
    main()
