"""Per-rank memory of PPO on 2 CPU ranks under DDP, ZeRO-2, ZeRO-3 and ZeRO-3 offload, and an ESTIMATE for
full-parameter Qwen2.5-7B PPO on 8 x 80 GB from the same accounting (issue 12, items 2 and 6).

Measured (benchmarks/_ppo_zero_memory_worker.py, one launch of 2 ranks per variant, fp32, one PPO update of 2
optimizer steps):
- a random-init Llama of ~54M parameters (vocab 32000, hidden 576, 10 layers, intermediate 1536, 9 heads / 3 KV
  heads, tied embeddings) as policy, and the same config with a scalar head as reward model; reference = the
  trainer's frozen copy of the policy, critic = its trainable copy of the reward model;
- per rank, the bytes of the tensors each model really holds (each storage once): parameters, gradients, Adam
  states (+ ZeRO's fp32 master partitions), other ZeRO buffers; trained models just before their second
  optimizer step, so gradients and Adam moments both exist;
- per rank, RSS after setup and peak RSS (VmHWM) while generating and over the rest of the updates;
- the generation span per update (ZeRO-3: gathering the actor once, sampling, releasing) against DDP.
On a CPU "offload" moves states from host memory to host memory: it cannot lower RSS here, only show that the
run works and what each rank holds.

Estimate (not measured): per-GPU memory of full-parameter PPO of Qwen2.5-7B-Instruct (actor) with a 7B critic and
reward model (recipes/qwen2.5-7b-zh/ppo.yaml), bf16 mixed precision, Adam, ZeRO-3 over 8 GPUs. Model states use
the per-parameter byte counts that the measured categories confirm (see the md), in bf16: weight 2 + gradient 2 +
fp32 master 4 + Adam moments 8 = 16 bytes per trained parameter, 2 per frozen one, all divided by the ranks.

Usage (a memory measurement: run it niced on a shared machine; times are reported as ratios within the run):
    nice -n 19 python benchmarks/ppo_zero_memory.py [--variants ddp zero2 zero3 zero3_offload]
Writes benchmarks/results/ppo_zero_memory.json and .md.
"""

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _machine import cpu_model

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent
WORKER = str(HERE / "_ppo_zero_memory_worker.py")
BIN = Path(sys.executable).parent
MIB, GIB = 1024**2, 1024**3

MODEL = dict(vocab_size=32000, hidden_size=576, intermediate_size=1536, num_hidden_layers=10, num_attention_heads=9,
             num_key_value_heads=3, tie_word_embeddings=True, max_position_embeddings=512)
PPO = dict(max_steps=1, per_device_train_batch_size=4, num_mini_batches=2, gradient_accumulation_steps=1,
           num_ppo_epochs=1, max_prompt_length=48, response_length=32, temperature=1.0, learning_rate=1e-5)
SMOKE_MODEL = dict(MODEL, vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=1,
                   num_attention_heads=4, num_key_value_heads=2)
VARIANTS = {"ddp": None, "zero2": "deepspeed_zero2", "zero3": "deepspeed_zero3",
            "zero3_offload": "deepspeed_zero3_offload"}

# Qwen/Qwen2.5-7B-Instruct config.json (published values)
QWEN25_7B = dict(vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
                 num_attention_heads=28, num_key_value_heads=4, tie_word_embeddings=False, num_labels=1)
# recipes/qwen2.5-7b-zh/ppo.yaml
RECIPE = dict(ranks=8, rollouts_per_rank=4, micro_batch=2, prompt=512, response=512)


def _free_port() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return str(sock.getsockname()[1])


def _command(variant: str, out_dir: Path, model: dict) -> list[str]:
    spec = json.dumps({"model": model, "ppo": PPO})
    if VARIANTS[variant] is None:
        return [str(BIN / "torchrun"), "--standalone", "--nproc_per_node", "2", WORKER, str(out_dir), spec]
    return [str(BIN / "accelerate"), "launch", "--config_file", f"accelerate_configs/{VARIANTS[variant]}.yaml",
            "--num_processes", "2", "--mixed_precision", "no", "--main_process_port", _free_port(), WORKER,
            str(out_dir), spec]


def run_variant(variant: str, root: Path, model: dict) -> list[dict]:
    out_dir = root / variant
    out_dir.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "ACCELERATE_USE_CPU"}
    env.update(OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    started = time.perf_counter()
    done = subprocess.run(_command(variant, out_dir, model), cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                          timeout=1800)
    if done.returncode != 0:
        raise RuntimeError(f"{variant} failed:\n{done.stdout[-3000:]}\n{done.stderr[-6000:]}")
    ranks = [json.loads((out_dir / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["num_processes"] for r in ranks] == [2, 2]
    print(f"{variant}: {time.perf_counter() - started:.0f} s", flush=True)
    return ranks


# ----------------------------------------------------------------------------- summary of the measurement

def _model_bytes(held: dict) -> int:
    """Parameters, gradients and optimizer states; ZeRO's communication buffers are reported apart (allocated at
    DeepSpeed's default sizes, most of their pages never touched on a CPU)."""
    return sum(held.get(k, 0) for k in ("params", "grads", "optimizer"))


def summarise(variant: str, ranks: list[dict]) -> dict:
    per_rank = []
    for rank in ranks:
        held = rank["held"]
        trained = sum(_model_bytes(held[m]) for m in ("actor", "critic"))
        frozen = sum(held[m]["params"] for m in ("ref", "reward"))
        rss = rank["rss"]
        per_rank.append({
            "trained_bytes": trained, "frozen_bytes": frozen, "model_optimizer_bytes": trained + frozen,
            "by_category": {c: sum(held[m].get(c, 0) for m in held) for c in
                            ("params", "grads", "optimizer", "zero_buffers")},
            "peak_rss": max(rss["peak_generation"], rss["peak_other"]), "peak_rss_generation": rss["peak_generation"],
            "rss_after_setup": rss["after_setup"], "rss_baseline": rss["baseline"],
        })
    rank0 = ranks[0]
    return {
        "variant": variant, "distributed_type": rank0["distributed_type"], "actor": rank0["actor"],
        "zero_stage": rank0["zero_stage"], "offload": rank0["offload"], "optimizer": rank0["optimizer"],
        "trained_parameters": rank0["held"]["actor"]["numel"] + rank0["held"]["critic"]["numel"],
        "frozen_parameters": rank0["held"]["ref"]["numel"] + rank0["held"]["reward"]["numel"],
        "per_rank": per_rank,
        "generation_s": [statistics.mean(r["time"]["generation"]) for r in ranks],
        "sampling_s": [statistics.mean(r["time"]["sampling"]) for r in ranks],
        "step_s": rank0["time"]["step"], "rollout_s": rank0["time"]["rollout"],
        "response_length": rank0["response_length"], "held_rank0": rank0["held"],
    }


# ----------------------------------------------------------------------------- the 7B estimate

def qwen_parameter_counts() -> dict:
    """Parameters of Qwen2.5-7B as causal LM and as sequence classifier, counted on the meta device."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM, Qwen2ForSequenceClassification

    config = Qwen2Config(**QWEN25_7B)
    with torch.device("meta"):
        return {"actor": sum(p.numel() for p in Qwen2ForCausalLM(config).parameters()),
                "critic": sum(p.numel() for p in Qwen2ForSequenceClassification(config).parameters())}


def estimate_7b(counts: dict) -> dict:
    """Per-GPU bytes, ZeRO-3 over RECIPE['ranks'] GPUs, bf16 mixed precision (assumptions in the md)."""
    n, c = RECIPE["ranks"], QWEN25_7B
    h, layers, vocab = c["hidden_size"], c["num_hidden_layers"], c["vocab_size"]
    head_dim = h // c["num_attention_heads"]
    p_actor, p_critic = counts["actor"], counts["critic"]
    seq = RECIPE["prompt"] + RECIPE["response"]
    kv_cache = 2 * layers * c["num_key_value_heads"] * head_dim * 2 * RECIPE["rollouts_per_rank"] * seq
    b = RECIPE["micro_batch"]
    # activation checkpointing: each layer's bf16 input kept, one layer recomputed at a time (Korthikanti et al.
    # 2022, 34 s*b*h bytes per layer without the attention-score term, which SDPA/flash attention does not store)
    checkpointed = layers * seq * b * h * 2 + 34 * seq * b * h
    logits = 3 * b * RECIPE["response"] * vocab * 4  # fp32 logits, log-softmax and their gradient (actor only)
    parts = {
        "actor: bf16 weight + grad shards, fp32 master + Adam shards (16 B/param / N)": 16 * p_actor / n,
        "critic: the same (16 B/param / N)": 16 * p_critic / n,
        "reference + reward model: bf16 weight shards (2 B/param / N)": 2 * (p_actor + p_critic) / n,
        "actor gathered whole once per rollout for sampling (2 B/param, during generation)": 2 * p_actor,
        f"KV cache, {RECIPE['rollouts_per_rank']} rollouts x {seq} tokens (during generation)": kv_cache,
        f"activations, actor + critic, microbatch {b} x {seq}, checkpointing (during training)": 2 * checkpointed
        + logits,
        "ZeRO-3 working buffers: live gathered params (max 1e9 x 2 B) + fp32 upcast of one gradient sub-group":
            2 * 1e9 + 4 * min(1e9, p_actor / n),
        "CUDA context, NCCL, allocator fragmentation (rough)": 4 * GIB,
    }
    states = sum(v for k, v in parts.items() if "B/param / N" in k)
    common = states + parts["CUDA context, NCCL, allocator fragmentation (rough)"]
    generation = common + sum(v for k, v in parts.items() if "during generation" in k)
    training = common + sum(v for k, v in parts.items() if "during training" in k or "ZeRO-3 working" in k)
    return {"parameters": counts, "ranks": n, "parts_bytes": parts, "model_states_bytes": states,
            "peak_generation_bytes": generation, "peak_training_bytes": training,
            "peak_bytes": max(generation, training), "gpu_bytes": 80 * 1e9}


# ----------------------------------------------------------------------------- report

def _rank_spread(row: dict, key: str) -> float:
    a, b = (r[key] for r in row["per_rank"])
    return abs(a - b) / max(a, b)


def markdown(result: dict) -> str:
    rows = result["variants"]
    ddp = rows.get("ddp")
    lines = [
        "# PPO memory per rank: DDP vs DeepSpeed ZeRO-2/3/3-offload (2 CPU ranks)",
        "",
        f"Measured {result['date']} on {result['cpu']} ({result['cores']} cores), `nice -n 19`, one torch thread per "
        f"rank, load average {result['load_before']} before and {result['load_after']} after (other jobs shared the "
        "cores: the times are ratios within this run, not speeds). Command: `nice -n 19 python "
        "benchmarks/ppo_zero_memory.py`"
        + (" (interrupted for time; the finished variants' rank files summarised with `--collect`, load averages "
           "taken then)." if result.get("collected_from") else "."),
        "",
        f"Workload: random-init Llama, {result['parameters_per_model'] / 1e6:.1f}M parameters per model (policy; the "
        "reward model is the same config with a scalar head); actor and critic trained (AdamW), reference and reward "
        f"model frozen; fp32; {PPO['per_device_train_batch_size']} rollouts per rank, prompt <= "
        f"{PPO['max_prompt_length']} + {PPO['response_length']} sampled tokens, {PPO['num_mini_batches']} minibatches "
        f"(optimizer steps) per update, {PPO['max_steps']} update(s)."
        + (f" Failed (see the json): {', '.join(result['failed'])}." if result["failed"] else ""),
        "",
        "## Per rank (rank 0; rank 1 differs by at most "
        f"{max(_rank_spread(r, 'model_optimizer_bytes') for r in rows.values()):.1%} in model + optimizer bytes and "
        f"{max(_rank_spread(r, 'peak_rss') for r in rows.values()):.1%} in peak RSS)",
        "",
        "| launch config | engine, ZeRO stage | params | grads | Adam states (+ fp32 master) | other ZeRO buffers "
        "| model + optimizer bytes | vs DDP | peak RSS | RSS after setup | generation s/update | of which gather + "
        "re-hook |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, row in rows.items():
        r0 = row["per_rank"][0]
        cat = r0["by_category"]
        ratio = r0["model_optimizer_bytes"] / ddp["per_rank"][0]["model_optimizer_bytes"] if ddp else float("nan")
        gen = statistics.mean(row["generation_s"])
        overhead = gen - statistics.mean(row["sampling_s"])
        engine = row["actor"] + (f", ZeRO-{row['zero_stage']}" if row["zero_stage"] else "")
        engine += f", offload {row['offload']}" if row["offload"] not in (None, "none") else ""
        config = VARIANTS[name] + ".yaml" if VARIANTS[name] else "torchrun (DDP, = multi_gpu.yaml)"
        lines.append(
            f"| {config} | {engine} | {cat['params'] / MIB:.0f} MiB | {cat['grads'] / MIB:.0f} MiB | "
            f"{cat['optimizer'] / MIB:.0f} MiB | {cat['zero_buffers'] / MIB:.0f} MiB | "
            f"**{r0['model_optimizer_bytes'] / MIB:.0f} MiB** | {ratio:.2f} | {r0['peak_rss'] / MIB:.0f} MiB | "
            f"{r0['rss_after_setup'] / MIB:.0f} MiB | {gen:.2f} | {overhead:.2f} |"
        )
    est = result["estimate_7b"]
    lines += [
        "",
        "Bytes per trained parameter held by one rank (actor, from the categories above; fp32 run):",
        "",
        "| launch config | params | grads | optimizer | total | other ZeRO buffers (not in the total) |",
        "|---|---|---|---|---|---|",
    ]
    for name, row in rows.items():
        actor = row["held_rank0"]["actor"]
        per = {k: actor.get(k, 0) / actor["numel"] for k in ("params", "grads", "optimizer", "zero_buffers")}
        total = per["params"] + per["grads"] + per["optimizer"]
        lines.append(f"| {name} | {per['params']:.2f} | {per['grads']:.2f} | {per['optimizer']:.2f} | "
                     f"**{total:.2f}** | {per['zero_buffers']:.2f} |")
    lines += [
        "",
        "Reading the tables:",
        "- `model + optimizer bytes` = what this rank holds for the four models at the accounting point (each "
        "storage once): trained actor and critic (parameters, gradients, optimizer) plus the frozen reference and "
        "reward model. `other ZeRO buffers` (left out of it) are DeepSpeed's communication buffers, allocated per "
        "trained engine at its default sizes (e.g. the 5e8-element reduce bucket): on a CPU most of their pages are "
        "never touched (the peak RSS stays below the sum), on a GPU they are real memory (in bf16 about 1 GB per "
        "engine; counted in the estimate's working buffers). Under DDP the reducer's gradient buckets (one more "
        "gradient copy) are not reachable from "
        "Python and are left out; they are inside the peak RSS.",
        "- ZeRO in fp32 keeps a separate fp32 master partition beside the (fp32) module weights, so a trained "
        "parameter costs 4/N + 4/N + (4 + 8)/N bytes under ZeRO-3 instead of DDP's 4 + 4 + 8; with bf16 weights "
        "(the GPU configs) the master copy is the usual 4 of the 16 bytes of mixed-precision Adam.",
        "- Peak RSS includes ~0.5-0.7 GB of libraries per process (baseline in the json) and, under ZeRO-3, the "
        "actor gathered whole for sampling. On a CPU, offload moves states from host RAM to host RAM: its RSS "
        "cannot be lower here (on a GPU it moves them off the device).",
        "- Generation span: sampling of the rollout, plus under ZeRO-3 one gather of the actor's weights and the "
        "re-registration of its hooks (`engines.whole_weights`, the last column). The variants ran one after "
        "another while other jobs' load changed (load averages above), so compare the gather overhead within a "
        "row, not sampling times across rows; sampling alone (s/update): "
        + ", ".join(f"{n} {statistics.mean(r['sampling_s']):.2f}" for n, r in rows.items()) + ".",
        "",
        "## ESTIMATE (not measured): full-parameter Qwen2.5-7B PPO on 8 x 80 GB, ZeRO-3",
        "",
        f"`recipes/qwen2.5-7b-zh/ppo.yaml`: actor Qwen2.5-7B ({est['parameters']['actor'] / 1e9:.2f}B parameters), "
        f"critic and reward model 7B with a scalar head ({est['parameters']['critic'] / 1e9:.2f}B), reference = "
        f"frozen copy of the actor; bf16 mixed precision, Adam; ZeRO-3 over {est['ranks']} GPUs; "
        f"{RECIPE['rollouts_per_rank']} rollouts per GPU of {RECIPE['prompt']} + {RECIPE['response']} tokens, "
        f"training microbatch {RECIPE['micro_batch']}, activation checkpointing. Per GPU:",
        "",
        "| part | GB |",
        "|---|---|",
    ]
    lines += [f"| {part} | {value / 1e9:.1f} |" for part, value in est["parts_bytes"].items()]
    lines += [
        f"| **model states (sharded)** | **{est['model_states_bytes'] / 1e9:.1f}** |",
        f"| **peak while generating** | **{est['peak_generation_bytes'] / 1e9:.1f}** |",
        f"| **peak while training** | **{est['peak_training_bytes'] / 1e9:.1f}** |",
        "",
        f"Estimated peak {est['peak_bytes'] / 1e9:.0f} GB of 80 GB per GPU. The model-state rows are the accounting "
        "measured above scaled to bf16 and 8 ranks (ZeRO-3 held ~1/N of each category per rank here); the "
        "generation row is the whole-actor gather that `engines.whole_weights` does once per rollout (measured "
        "here as the ZeRO-3 generation peak); activation, KV-cache and buffer rows are formulas, the last row a "
        "guess. Not verified on a GPU. Without the whole-actor gather (per-layer gathering while sampling) the "
        "generation peak would drop by ~15 GB but every generated token would gather all 28 layers.",
    ]
    return "\n".join(lines) + "\n"


def render(source: Path, results: Path) -> None:
    """The md from a results json, its totals recounted as `_model_bytes` counts them (ZeRO buffers apart)."""
    result = json.loads(source.read_text())
    for row in result["variants"].values():
        for rank in row["per_rank"]:
            rank["model_optimizer_bytes"] = sum(rank["by_category"][k] for k in ("params", "grads", "optimizer"))
            rank["trained_bytes"] = rank["model_optimizer_bytes"] - rank["frozen_bytes"]
    result.setdefault("failed", {})
    results.mkdir(parents=True, exist_ok=True)
    (results / "ppo_zero_memory.json").write_text(json.dumps(result, indent=1))
    (results / "ppo_zero_memory.md").write_text(markdown(result))
    print(markdown(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--results", default=str(HERE / "results"))
    parser.add_argument("--smoke", action="store_true", help="a 1-layer model instead, to check the script quickly")
    parser.add_argument("--render", metavar="JSON", help="only rewrite the md (and json) from a results json")
    parser.add_argument("--collect", metavar="RUN_DIR",
                        help="only summarise the rank files under RUN_DIR/<variant>/ of an earlier, interrupted run")
    args = parser.parse_args()
    if args.render:
        return render(Path(args.render), Path(args.results))
    load_before = " ".join(f"{x:.2f}" for x in os.getloadavg())
    rows, failed = {}, {}
    if args.collect:
        for variant in args.variants:
            files = [Path(args.collect) / variant / f"rank{r}.json" for r in (0, 1)]
            if all(f.is_file() for f in files):
                rows[variant] = summarise(variant, [json.loads(f.read_text()) for f in files])
            else:
                failed[variant] = "not finished in the collected run"
    with tempfile.TemporaryDirectory(prefix="ppo-zero-memory-") as root:
        for variant in [] if args.collect else args.variants:
            try:
                model = SMOKE_MODEL if args.smoke else MODEL
                rows[variant] = summarise(variant, run_variant(variant, Path(root), model))
            except (RuntimeError, subprocess.TimeoutExpired) as error:  # report the others, say which failed
                failed[variant] = str(error)[-4000:]
                print(failed[variant], file=sys.stderr)
    counts = qwen_parameter_counts()
    if not rows:
        raise SystemExit("every variant failed")
    policy_numel = next(iter(rows.values()))["held_rank0"]["actor"]["numel"]
    result = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "cpu": cpu_model(), "cores": os.cpu_count(),
        "load_before": load_before, "load_after": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "model": SMOKE_MODEL if args.smoke else MODEL, "ppo": PPO, "parameters_per_model": policy_numel,
        "variants": rows, "failed": failed, "collected_from": args.collect,
        "estimate_7b": estimate_7b(counts),
    }
    results = Path(args.results)
    results.mkdir(parents=True, exist_ok=True)
    (results / "ppo_zero_memory.json").write_text(json.dumps(result, indent=1))
    (results / "ppo_zero_memory.md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
