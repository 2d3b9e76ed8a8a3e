"""PPO on real lengths: rlhf_recipes.ppo.PPOTrainer vs trl 1.11's experimental PPOTrainer (issue 16, item 1).

The workload `ppo_vs_trl.py` measures has prompts of one length and no stop token, so both trainers must do
the same arithmetic. Here the lengths are real:
- policy and reference: SmolLM2-135M-Instruct (the `smollm2-135m-instruct` alias, converted once by
  `rlhf_recipes.models.gguf`), its real tokenizer and chat template; responses of up to `--response_length`
  tokens (default 128) that stop at `<|im_end|>` (its EOS) on both sides;
- value and reward model: SmolLM2-135M-Instruct with a one-label sequence-classification head (the same
  size as the policy; `--reward_model DIR` scores with a trained one instead, e.g. the reward stage of
  `benchmarks/smollm2_hh.py`);
- prompts: the conversations of ../shared/data/hh_rlhf_helpful_base_test_sample.jsonl up to their last
  assistant turn, through the chat template with the generation prompt, at their real lengths (those longer
  than `--max_prompt_length` tokens are left out, so neither trainer truncates).
Both sides get the same settings (rollout batch, minibatches with one optimizer step each, rollout chunk,
epochs, learning rate, KL, temperature, stop token), the same prompt token ids and the same weights from disk,
as in `ppo_vs_trl.py`, whose runner, timing and summary this script reuses (seeds = repeats, variant order
rotated). trl 1.11 takes each minibatch as one microbatch, since its own gradient_accumulation_steps would change
its rollout size and optimizer steps (`_trl111_worker.trl_batch_args`); ours does the same by default
(`--gradient_accumulation_steps 1`; more splits our minibatches for memory, same gradient), and by default does not
clip gradients either (`--max_grad_norm 0`), since trl 1.11 never does. Every worker must time exactly `--updates`
updates, or the harness stops with a message.

Besides time per update, each run records the share of computed token positions that are real tokens
(`_position_count.py`): over every forward pass after sampling (reference, values, reward, PPO epochs), the
rows x columns each pass computes and how many of them are prompt or response tokens rather than padding;
and where an update's time goes (`UpdateTimer`): sampling, the rollout passes after it, training.

Usage: OMP_NUM_THREADS=1 python benchmarks/ppo_vs_trl_real.py [--variants ours trl_gc_neutralised] [--repeats 3]
           [--updates 12] [--warmup 2] [--batch_size 16] [--response_length 128] [--tag X] [--tiny]
           [--device cpu|cuda] [--dtype float32|bfloat16]
Writes benchmarks/results/ppo_vs_trl_real<tag>.json and .md. Needs benchmarks/.venv-trl111 for the trl
variants (`bash benchmarks/setup_trl111.sh`). One update of SmolLM2 at batch 8, response 128 takes minutes on
one CPU thread. `--tiny` runs the same harness on a random-init tiny OPT in about a minute (a plumbing check;
its times mean nothing): `--tiny --variants ours trl_gc_neutralised --repeats 1 --updates 2 --warmup 1
--batch_size 8 --response_length 4 --results-dir /tmp/ppo_real_tiny`.
"""

import argparse
import json
import os
import shlex
import statistics
import sys
import tempfile
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

import ppo_vs_trl as base
from rlhf_recipes.data.adapters import DropRow, hh_rlhf
from rlhf_recipes.models.gguf import resolve_model_path
from _machine import cpu_model

HH_TEST = base.HERE.parent.parent / "shared" / "data" / "hh_rlhf_helpful_base_test_sample.jsonl"
VARIANTS = ("ours", "trl_gc_neutralised", "trl_shipped")


def hh_prompts(tokenizer, max_prompt_length: int) -> list[dict]:
    """HH-RLHF prompts through the chat template: rows {"prompt": text, "input_ids"}, none over the cap."""
    rows = []
    for line in HH_TEST.read_text(encoding="utf-8").splitlines():
        try:
            messages = hh_rlhf(json.loads(line))["prompt"]
        except DropRow:
            continue
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        ids = tokenizer(text)["input_ids"]  # as our trainer tokenizes a text prompt
        if len(ids) <= max_prompt_length:
            rows.append({"prompt": text, "input_ids": ids})
    return rows


def prepare_workload(workdir: Path, reward_model: str | None, max_prompt_length: int, seed: int = 0) -> dict:
    """The policy, value and reward models, tokenizer and prompts in workdir, as `load_workload` reads them;
    returns the prompt lengths' summary."""
    source = resolve_model_path("smollm2-135m-instruct")
    tokenizer = AutoTokenizer.from_pretrained(source)
    tokenizer.save_pretrained(workdir / "tokenizer")
    AutoModelForCausalLM.from_pretrained(source).save_pretrained(workdir / "policy")
    torch.manual_seed(seed)
    for name, path in (("value", source), ("reward", reward_model or source)):
        model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1)
        model.config.pad_token_id = tokenizer.pad_token_id
        model.save_pretrained(workdir / name)
    rows = hh_prompts(tokenizer, max_prompt_length)
    (workdir / "prompts.jsonl").write_text("\n".join(json.dumps(row) for row in rows))
    lengths = sorted(len(row["input_ids"]) for row in rows)
    return {"prompts": len(rows), "median_tokens": statistics.median(lengths), "min": lengths[0], "max": lengths[-1]}


def position_shares(runs: list[dict]) -> dict:
    """Real-token share of computed positions, pooled over a variant's repeats, per model and in total."""
    names = runs[0]["positions"].keys()
    pooled = {name: {key: sum(r["positions"][name][key] for r in runs) for key in ("positions", "real")}
              for name in names}
    return {name: {**c, "real_share": c["real"] / c["positions"] if c["positions"] else None}
            for name, c in pooled.items()}


def phases(runs: list[dict], warmup: int) -> dict:
    """Median seconds per timed update (wall and CPU) of sampling, the rollout passes after it (reference,
    value, reward, advantages) and training (PPO epochs and optimizer steps), pooled over repeats
    (`UpdateTimer`'s split)."""
    out = {}
    for clock, total_key, sampling_key, training_key in (
        ("wall", "update_seconds", "generate_seconds", "training_seconds"),
        ("cpu", "update_cpu_seconds", "sampling_cpu_seconds", "training_cpu_seconds"),
    ):
        rows = [(r[total_key][k], r[sampling_key][k], r[training_key][k])
                for r in runs for k in range(warmup, len(r[total_key]))]
        out[clock] = {
            "sampling": statistics.median(s for _, s, _ in rows),
            "rollout_passes": statistics.median(t - s - g for t, s, g in rows),
            "training": statistics.median(g for _, _, g in rows),
        }
    return out


def run(args) -> dict:
    settings = dict(base.PPO_SETTINGS, batch_size=args.batch_size, stop_token="eos",
                    learning_rate=args.learning_rate, temperature=args.temperature,
                    gradient_accumulation_steps=args.gradient_accumulation_steps,
                    local_rollout_forward_batch_size=args.local_rollout_forward_batch_size,
                    max_prompt_length=args.max_prompt_length, device=args.device, dtype=args.dtype)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="ppo-bench-real-") as tmp:
        scratch = Path(tmp)
        if args.tiny:
            base.prepare_workload(scratch / "workload", base.CONFIGS["tiny"]["model"])
            prompts = {"tiny": "random-init OPT h64 L2, byte tokenizer, DigitReward: a plumbing check, no timing"}
        else:
            prompts = prepare_workload(scratch / "workload", args.reward_model, args.max_prompt_length)
        print(f"== real: {prompts}", flush=True)
        runs = {variant: [] for variant in args.variants}
        for repeat in range(args.repeats):
            order = args.variants[repeat % len(args.variants) :] + args.variants[: repeat % len(args.variants)]
            for variant in order:
                spec = dict(settings, workdir=str(scratch / "workload"), response_length=args.response_length,
                            updates=args.updates, seed=repeat, threads=args.threads, max_grad_norm=args.max_grad_norm)
                result = base.run_variant(variant, spec, scratch)
                check_update_count(variant, result, args.updates)
                runs[variant].append(result)
                seconds = statistics.median(result["update_seconds"][args.warmup :])
                share = result["positions"]["total"]["real_share"]
                print(f"  repeat {repeat} {variant:>19}: median {seconds:.2f} s/update, real-token share {share:.3f}",
                      flush=True)
    environment = base.environment() if any(v.startswith("trl") for v in args.variants) else {
        "machine": cpu_model(), "git": base.git_state()}  # with a trl variant: versions of both venvs too
    if args.device == "cuda":
        environment["machine"] += f"; GPU: {torch.cuda.get_device_name(0)}"
    return {
        "environment": environment,
        "settings": {**settings, "response_length": args.response_length, "updates": args.updates,
                     "warmup": args.warmup, "repeats": args.repeats, "threads": args.threads,
                     "ours_max_grad_norm": args.max_grad_norm, "reward_model": args.reward_model or "untrained head"},
        "prompts": prompts,
        "command": "OMP_NUM_THREADS=1 python benchmarks/ppo_vs_trl_real.py " + shlex.join(sys.argv[1:]),
        "load_average_1_5_15min": {"before": load_before, "after": os.getloadavg()},
        **summarise(runs, args.warmup, args.batch_size * args.response_length),
    }


def summarise(runs: dict, warmup: int, tokens_per_update: int) -> dict:
    """Per variant: `ppo_vs_trl.summarise` (medians over timed updates), real-token shares, the phase split and
    `all_updates` (means over every update, warm-up included, and training CPU seconds per 1000 positions the
    policy computes in training); `ours_over`: ratio_wall and ratio_cpu (medians), ratio_cpu_all_updates."""
    summary = {
        variant: {**base.summarise(variant_runs, warmup, tokens_per_update), "positions": position_shares(variant_runs),
                  "phases": phases(variant_runs, warmup), "all_updates": all_updates(variant_runs)}
        for variant, variant_runs in runs.items()
    }
    ours_over = {}
    for baseline, r in base.ratios(summary, "ours", base.TRL_VARIANTS).items():
        ours_over[baseline] = {
            "ratio_wall": r["seconds_per_update"], "ratio_cpu": r["cpu_seconds_per_update"],
            "ratio_cpu_all_updates": summary["ours"]["all_updates"]["cpu_seconds_per_update"]
            / summary[baseline]["all_updates"]["cpu_seconds_per_update"],
        }
    return {"variants": summary, "ours_over": ours_over, "runs": runs}


def all_updates(runs: list[dict]) -> dict:
    """Means over every update of every repeat (warm-up included: with few updates the medians rest on 2-3
    rollouts whose sampled lengths differ between the trainers), and training CPU per 1000 policy positions."""
    def mean(key):
        return statistics.fmean(x for r in runs for x in r[key])

    training_cpu = sum(sum(r["training_cpu_seconds"]) for r in runs)
    policy_positions = sum(r["positions"]["policy"]["positions"] for r in runs)
    return {
        "updates": sum(len(r["update_seconds"]) for r in runs),
        "seconds_per_update": mean("update_seconds"),
        "cpu_seconds_per_update": mean("update_cpu_seconds"),
        "sampling_cpu_seconds_per_update": mean("sampling_cpu_seconds"),
        "training_cpu_seconds_per_update": mean("training_cpu_seconds"),
        "policy_training_positions_per_update": policy_positions / sum(len(r["update_seconds"]) for r in runs),
        "training_cpu_seconds_per_1k_policy_positions": 1000 * training_cpu / policy_positions,
    }


def check_update_count(variant: str, result: dict, updates: int) -> None:
    """Stop with a clear message if a worker timed another number of PPO updates than asked for (a worker
    whose batch arithmetic maps `--updates` onto fewer trainer steps would otherwise leave no timed update)."""
    timed = len(result["update_seconds"])
    if timed != updates:
        sys.exit(f"{variant} timed {timed} PPO updates, not --updates {updates}: its worker maps batch size and "
                 "updates onto its trainer's config differently (total_episodes / rollout batch); nothing written.")


def cpu_has_native_bf16() -> bool:
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    return "avx512_bf16" in flags or "amx_bf16" in flags


def markdown(results: dict) -> str:
    load = results["load_average_1_5_15min"]
    lines = [
        "# PPO on real lengths: rlhf_recipes vs trl 1.11 (SmolLM2-135M-Instruct, HH-RLHF prompts)",
        "",
        f"{results['environment']['machine']} · git {results['environment']['git']['head']} · "
        f"load average (1/5/15 min) before {fmt(load['before'])}, after {fmt(load['after'])}",
        "",
        f"Command: `{results['command']}`",
        "",
        f"Settings (both): {json.dumps(results['settings'])}",
        f"Prompts: {json.dumps(results['prompts'])}",
        "",
        "| variant | wall s/update | CPU s/update | real-token share (all passes after sampling) | "
        "policy | ref | value | reward | final reward (last 10) | ours / this (wall; CPU) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for variant, v in results["variants"].items():
        shares = {name: c["real_share"] for name, c in v["positions"].items()}
        ratio = results["ours_over"].get(variant)
        lines.append(
            f"| {variant} | {v['seconds_per_update']:.2f} | {v['cpu_seconds_per_update']:.2f} | "
            f"{shares['total']:.3f} | " + " | ".join(
                "-" if shares.get(n) is None else f"{shares[n]:.3f}" for n in ("policy", "ref", "value", "reward"))
            + f" | {v.get('final_reward', float('nan')):.3f} | "
            + (f"{ratio['ratio_wall']:.2f}x; {ratio['ratio_cpu']:.2f}x" if ratio else "") + " |"
        )
    lines += ["", "Where the time goes (median s per timed update, wall / CPU): sampling; rollout passes after it "
              "(reference, value, reward, advantages); training (PPO epochs, optimizer steps).", "",
              "| variant | sampling | rollout passes | training | all updates incl. warm-up: CPU s/update | "
              "policy positions per update in training | training CPU s per 1000 of them |", "|---|---|---|---|---|---|---|"]
    for variant, v in results["variants"].items():
        ph, every = v["phases"], v["all_updates"]
        lines.append(f"| {variant} | " + " | ".join(
            f"{ph['wall'][part]:.1f} / {ph['cpu'][part]:.1f}" for part in ("sampling", "rollout_passes", "training"))
            + f" | {every['cpu_seconds_per_update']:.1f} | {every['policy_training_positions_per_update']:.0f} | "
            f"{every['training_cpu_seconds_per_1k_policy_positions']:.1f} |")
    for baseline, r in results["ours_over"].items():
        lines.append(f"\nOurs / {baseline}, mean CPU over all updates (warm-up included): "
                     f"{r['ratio_cpu_all_updates']:.2f}x.")
    curves = {variant: v["reward_curve"] for variant, v in results["variants"].items()}
    lines += ["", "Reward curve (mean rollout score per update, mean over repeats; update 1 is warm-up too):", "",
              "| update | " + " | ".join(curves) + " |", "|---" * (len(curves) + 1) + "|"]
    lines += [f"| {k + 1} | " + " | ".join(f"{c[k]:.3f}" for c in curves.values()) + " |"
              for k in range(min(map(len, curves.values())))]
    lines += ["", f"Scores come from the reward model `{results['settings']['reward_model']}` (an untrained head scores "
              "nothing a user wants). trl 1.11 builds its masks from `input_ids != pad_token_id`; SmolLM2's pad is its "
              "EOS `<|im_end|>`, so trl masks every `<|im_end|>` (also those closing the prompt's turns) and reads the "
              "score at the token before the stop token, where ours reads it at the stop token: the two curves are "
              "not on one scale."]
    return "\n".join(lines) + "\n"


def fmt(load) -> str:
    return "/".join(f"{x:.2f}" for x in load)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS[:2]), choices=VARIANTS)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--updates", type=int, default=12)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--gradient_accumulation_steps", type=int, default=1,
                        help="ours: at most this many microbatches per minibatch (memory; rows grouped by length and "
                             "packed); 1 = trl 1.11's microbatch, the whole minibatch")
    parser.add_argument("--local_rollout_forward_batch_size", type=int, default=4,
                        help="rows per no-grad pass after sampling, both sides")
    parser.add_argument("--response_length", type=int, default=128)
    parser.add_argument("--learning_rate", type=float, default=1e-5,
                        help="both sides; full fine-tuning of a pretrained 135M model (ppo_vs_trl.py's 3e-4 is for "
                             "random-init tiny models and wrecks a chat model within updates)")
    parser.add_argument("--temperature", type=float, default=0.7, help="sampling, both sides (trl 1.11's default)")
    parser.add_argument("--max_prompt_length", type=int, default=256)
    parser.add_argument("--reward_model", default=None, help="a trained SmolLM2-135M reward model directory")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="both sides")
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32",
                        help="the dtype all four models are loaded in, both sides (trl 1.11 ignores its bf16 flag)")
    parser.add_argument("--max_grad_norm", type=float, default=0.0,
                        help="ours (0 = no clipping); trl 1.11 never clips")
    parser.add_argument("--results-dir", type=Path, default=base.HERE / "results")
    parser.add_argument("--tag", default="")
    parser.add_argument("--resummarise", type=Path, metavar="JSON",
                        help="recompute a results JSON's summary and markdown from its runs, in place (no run)")
    parser.add_argument("--tiny", action="store_true",
                        help="a random-init tiny OPT workload instead of SmolLM2: checks the harness in seconds")
    args = parser.parse_args()
    if args.resummarise:
        results = json.loads(args.resummarise.read_text())
        s = results["settings"]
        results.update(summarise(results["runs"], s["warmup"], s["batch_size"] * s["response_length"]))
        base.write_results(args.resummarise.parent, args.resummarise.stem, results, markdown(results))
        return
    if not 0 <= args.warmup < args.updates:
        parser.error(f"--warmup ({args.warmup}) must be below --updates ({args.updates}): no update would be timed")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: torch sees no CUDA device here; run on a GPU machine or use --device cpu")
    if args.device == "cpu" and args.dtype == "bfloat16" and not (args.tiny or cpu_has_native_bf16()):
        parser.error("--dtype bfloat16 on a CPU without avx512_bf16/amx_bf16 is emulated (about 20x slower than "
                     "float32 here): use --dtype float32, or --device cuda")
    if not base.TRL_PYTHON.exists() and any(v.startswith("trl") for v in args.variants):
        sys.exit(f"{base.TRL_PYTHON} missing: run `bash benchmarks/setup_trl111.sh` first.")
    results = run(args)
    base.write_results(args.results_dir, f"ppo_vs_trl_real{args.tag}", results, markdown(results))


if __name__ == "__main__":
    main()
