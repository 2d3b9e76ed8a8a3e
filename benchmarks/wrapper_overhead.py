"""Overhead of our SFT and reward recipes over the raw TRL trainers they wrap.

What is measured
- The same job both ways: a tiny random-init OPT (`tiny:opt`, byte-level tokenizer), the same
  data file (conversational rows, which our data layer passes through unchanged), the same
  SFTConfig / RewardConfig, `max_steps` optimizer steps, then the final model + tokenizer saved.
  - ours: `rlhf_recipes.stages.sft.run_sft` / `rlhf_recipes.stages.reward.run_reward` (data layer, loaders,
    trainer, metrics/state files, final save);
  - raw: `datasets.load_dataset("json")` -> `trl.SFTTrainer` / `trl.RewardTrainer` ->
    `train()` -> `save_model()` + tokenizer, as a hand-written TRL script would.
  `eval_split_size=0` on our side: the raw job evaluates nothing, so ours holds out no eval
  rows and the reward stage skips its held-out evaluation (`eval_rm.json`), as it does for
  any run without an eval split.
- Wall and CPU time of the job inside a fresh process after all imports (so import time, which
  is the same libraries either way, is not counted), and the trainer's own `train_runtime`.
  With 1 torch thread, the CPU time is the figure other processes on a shared machine do not
  stretch.
- Repetitions interleaved (ours/raw order alternates), one subprocess each. Reported: median
  job seconds per side and the median of the per-repetition ratios ours / raw (wall and CPU).
  Goal <= 1.05.

Usage: python benchmarks/wrapper_overhead.py [--repeats 5] [--max-steps 40]
Writes benchmarks/results/wrapper_overhead.json and wrapper_overhead.md.
"""

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _machine import cpu_model

HERE = Path(__file__).resolve().parent
STAGES = ("sft", "reward")
COMMON = dict(per_device_train_batch_size=16, learning_rate=1e-3, max_length=128, use_cpu=True, seed=0,
              report_to="none", save_strategy="no", logging_steps=10, disable_tqdm=True)


def write_data(path: Path, stage: str, rows: int = 2000, seed: int = 0) -> None:
    """Unique conversational rows: 'max of four digits' questions with a right and a wrong answer."""
    rng = random.Random(seed)
    seen, lines = set(), []
    while len(lines) < rows:
        digits = [rng.randint(0, 9) for _ in range(4)]
        question = f"max {' '.join(map(str, digits))} ({len(lines)})"
        if question in seen:
            continue
        seen.add(question)
        right, wrong = str(max(digits)), str(min(digits))
        prompt = [{"role": "user", "content": question}]
        if stage == "sft":
            row = {"prompt": prompt, "completion": [{"role": "assistant", "content": right}]}
        else:
            row = {"prompt": prompt, "chosen": [{"role": "assistant", "content": right}],
                   "rejected": [{"role": "assistant", "content": wrong}]}
        lines.append(json.dumps(row))
    path.write_text("\n".join(lines))


def run_job(stage: str, side: str, data_file: str, output_dir: str, max_steps: int) -> dict:
    """The timed job, in this process; returns job seconds and the trainer's train_runtime."""
    from datasets import load_dataset
    from transformers import set_seed
    from trl import RewardConfig, RewardTrainer, SFTConfig, SFTTrainer

    from rlhf_recipes.data import DataArguments
    from rlhf_recipes.models import ModelArguments, build_byte_tokenizer, build_tiny_model
    from rlhf_recipes.stages.reward import run_reward
    from rlhf_recipes.stages.sft import run_sft

    config_cls = SFTConfig if stage == "sft" else RewardConfig
    args = config_cls(output_dir=output_dir, max_steps=max_steps, **COMMON)
    start, start_cpu = time.perf_counter(), time.process_time()
    if side == "ours":
        model_args = ModelArguments(model_name_or_path="tiny:opt")
        split = "1,0,0" if stage == "sft" else "0,1,0"
        data_args = DataArguments(dataset_name=data_file, data_split=split, eval_split_size=0)
        trainer = run_sft(model_args, data_args, args) if stage == "sft" else run_reward(model_args, data_args, args)[0]
    else:
        set_seed(args.seed)
        dataset = load_dataset("json", data_files=data_file, split="train")
        tokenizer = build_byte_tokenizer()
        model = build_tiny_model("tiny:opt", tokenizer, "causal-lm" if stage == "sft" else "seq-cls")
        trainer_cls = SFTTrainer if stage == "sft" else RewardTrainer
        trainer = trainer_cls(model=model, args=args, train_dataset=dataset, processing_class=tokenizer)
        trainer.train()
        trainer.save_model(output_dir)
        tokenizer.save_pretrained(output_dir)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - start_cpu
    runtime = next(r["train_runtime"] for r in trainer.state.log_history if "train_runtime" in r)
    return {"job_seconds": seconds, "job_cpu_seconds": cpu_seconds, "train_runtime": runtime,
            "global_step": trainer.state.global_step}


def run_child(stage: str, side: str, data_file: Path, max_steps: int, threads: int) -> dict:
    """One job in a fresh process, on a fresh copy of the data file (so `datasets`' cache of an
    earlier repetition cannot serve the raw side: every run reads its data like a first run)."""
    with tempfile.TemporaryDirectory() as tmp:
        out, data_copy = Path(tmp) / "result.json", Path(tmp) / data_file.name
        shutil.copyfile(data_file, data_copy)
        cmd = [sys.executable, __file__, "--child", stage, side, str(data_copy), str(Path(tmp) / "run"), str(out),
               "--max-steps", str(max_steps)]
        env = dict(os.environ, OMP_NUM_THREADS=str(threads))
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            raise RuntimeError(f"{stage}/{side} failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
        return json.loads(out.read_text())


def markdown(results: dict) -> str:
    env = results["environment"]
    lines = [
        "# Wrapper overhead: our SFT / reward recipes vs raw TRL trainers",
        "",
        f"{env['date']} · {env['machine']} · trl {env['trl']}, transformers {env['transformers']}, "
        f"torch {env['torch']} · {results['repeats']} interleaved repetitions, {results['max_steps']} steps, "
        f"{results['threads']} torch thread(s)",
        "",
        "| stage | raw TRL job s (median) | ours job s (median) | ours / raw, wall (paired ratios) | "
        "raw / ours CPU s | ours / raw, CPU | train_runtime raw / ours | goal <= 1.05 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for stage, s in results["stages"].items():
        met = "met" if max(s["ratio"], s["cpu_ratio"]) <= 1.05 else "NOT met"
        lines.append(
            f"| {stage} | {s['raw_job_seconds']:.2f} | {s['ours_job_seconds']:.2f} | {s['ratio']:.3f} "
            f"({', '.join(f'{r:.2f}' for r in s['paired_ratios'])}) | "
            f"{s['raw_job_cpu_seconds']:.2f} / {s['ours_job_cpu_seconds']:.2f} | {s['cpu_ratio']:.3f} | "
            f"{s['raw_train_runtime']:.2f} / {s['ours_train_runtime']:.2f} | {met} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--max-steps", type=int, default=40)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--results-dir", type=Path, default=HERE / "results")
    parser.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        stage, side, data_file, output_dir, out = args.child
        Path(out).write_text(json.dumps(run_job(stage, side, data_file, output_dir, args.max_steps)))
        return

    import torch
    import transformers
    import trl

    cpu = cpu_model()
    results = {
        "environment": {"date": time.strftime("%Y-%m-%d %H:%M %Z"), "machine": f"{cpu}, {len(os.sched_getaffinity(0))} cores",
                        "trl": trl.__version__, "transformers": transformers.__version__, "torch": torch.__version__},
        "repeats": args.repeats, "max_steps": args.max_steps, "threads": args.threads, "stages": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        for stage in STAGES:
            data_file = Path(tmp) / f"{stage}.jsonl"
            write_data(data_file, stage)
            runs = {"ours": [], "raw": []}
            for repeat in range(args.repeats):
                for side in (("ours", "raw") if repeat % 2 == 0 else ("raw", "ours")):
                    runs[side].append(run_child(stage, side, data_file, args.max_steps, args.threads))
                    print(f"{stage} {repeat} {side}: {runs[side][-1]}", flush=True)
            paired = [o["job_seconds"] / r["job_seconds"] for o, r in zip(runs["ours"], runs["raw"])]
            paired_cpu = [o["job_cpu_seconds"] / r["job_cpu_seconds"] for o, r in zip(runs["ours"], runs["raw"])]
            results["stages"][stage] = {
                "ours_job_seconds": statistics.median(r["job_seconds"] for r in runs["ours"]),
                "raw_job_seconds": statistics.median(r["job_seconds"] for r in runs["raw"]),
                "ours_job_cpu_seconds": statistics.median(r["job_cpu_seconds"] for r in runs["ours"]),
                "raw_job_cpu_seconds": statistics.median(r["job_cpu_seconds"] for r in runs["raw"]),
                "paired_cpu_ratios": paired_cpu,
                "cpu_ratio": statistics.median(paired_cpu),
                "ours_train_runtime": statistics.median(r["train_runtime"] for r in runs["ours"]),
                "raw_train_runtime": statistics.median(r["train_runtime"] for r in runs["raw"]),
                "paired_ratios": paired,
                "ratio": statistics.median(paired),
                "runs": runs,
            }
    args.results_dir.mkdir(parents=True, exist_ok=True)
    (args.results_dir / "wrapper_overhead.json").write_text(json.dumps(results, indent=1))
    (args.results_dir / "wrapper_overhead.md").write_text(markdown(results))
    print(markdown(results))


if __name__ == "__main__":
    main()
