"""Memory of the reference RLHF workload: OPT-1.3b actor + OPT-350m critic and reward model.

What is measured (on this CPU, one subprocess per variant)
- One PPO step of rlhf_recipes.ppo.PPOTrainer at batch 2, prompt 256 + response 256 tokens
  (no stop token, so every response runs to 256 tokens; the logged response length is
  reported to prove it), bf16 weights, random init
  from the published facebook/opt-1.3b and facebook/opt-350m configs (no download).
- `lora`: actor with LoRA (reference = the same model with the adapter disabled), critic
  OPT-350m with LoRA (+ its trainable score head), reward model OPT-350m frozen.
- `full`: no LoRA: trainable actor and critic, a frozen copy of the actor as reference.
  Measured only with --measure-full and when its estimate fits in the available RAM.
- Peak RSS during the step (psutil, sampled every 20 ms in a thread), the process's
  lifetime peak (resource.getrusage ru_maxrss), RSS after imports and before any model exists
  (the baseline), RSS after models and trainer are set up, parameter bytes per model,
  trainable parameters, optimizer-state bytes.

What is estimated (for a GPU)
- weights + gradients + Adam states + activations + logits + KV cache, stated assumptions:
  bf16 weights; LoRA adapters, their grads and Adam states in fp32; full fine-tuning as
  mixed-precision Adam (ZeRO paper: 2 + 2 + 12 bytes/param, K = 12); activations per layer
  s*b*h*(34 + 5*a*s/h) bytes (Korthikanti et al. 2022, no recomputation; with SDPA/flash
  attention the 5*a*s/h term is not stored); actor and critic activations alive together
  (one backward of pg_loss + vf_coef * vf_loss); 1 GiB CUDA context and allocator slack.
- ZeRO-2 / ZeRO-3 per-GPU model states for full fine-tuning at N = 1, 2, 4, 8:
  ZeRO-2 2P + (2 + K)P/N, ZeRO-3 (2 + 2 + K)P/N for the trained models; the frozen
  reference and reward model are replicated (2P) under ZeRO-2 and sharded (2P/N) under ZeRO-3.

Usage: python benchmarks/memory_opt13b.py [--measure-full]
Writes benchmarks/results/memory_opt13b.json and memory_opt13b.md.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from _machine import cpu_model

GIB = 1024**3
HERE = Path(__file__).resolve().parent

# Published configs of facebook/opt-1.3b and facebook/opt-350m (config.json on the Hub).
OPT_COMMON = dict(vocab_size=50272, max_position_embeddings=2048, activation_function="relu",
                  pad_token_id=1, bos_token_id=2, eos_token_id=2, enable_bias=True)
OPT_1_3B = dict(OPT_COMMON, hidden_size=2048, num_hidden_layers=24, num_attention_heads=32, ffn_dim=8192,
                word_embed_proj_dim=2048, do_layer_norm_before=True)
OPT_350M = dict(OPT_COMMON, hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, ffn_dim=4096,
                word_embed_proj_dim=512, do_layer_norm_before=False)

BATCH, PROMPT, RESPONSE = 2, 256, 256
LORA = dict(r=16, lora_alpha=32, lora_dropout=0.0,
            target_modules=["q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"])
ADAM_K = 12  # fp32 master weights, momentum and variance: bytes of optimizer state per parameter


# ----------------------------------------------------------------------------- analytical estimate

def opt_param_count(cfg: dict, lm_head: bool) -> int:
    """Parameters of an OPT model from its config (the LM head is tied to the embeddings)."""
    h, f, L, v, p, e = (cfg[k] for k in ("hidden_size", "ffn_dim", "num_hidden_layers", "vocab_size",
                                         "max_position_embeddings", "word_embed_proj_dim"))
    layer = 4 * (h * h + h) + (h * f + f) + (f * h + h) + 4 * h  # attention, MLP, two layer norms
    embeddings = v * e + (p + 2) * h
    projections = 2 * e * h if e != h else 0
    final_norm = 2 * h if cfg["do_layer_norm_before"] else 0
    head = 0 if lm_head else e  # sequence classification: score = Linear(word_embed_proj_dim, 1, bias=False)
    return L * layer + embeddings + projections + final_norm + head


def lora_param_count(cfg: dict, r: int) -> int:
    h, f, L = cfg["hidden_size"], cfg["ffn_dim"], cfg["num_hidden_layers"]
    return L * r * (4 * (h + h) + (h + f) + (f + h))


def activation_bytes(cfg: dict, flash: bool) -> float:
    """Stored activations of one forward over BATCH x (PROMPT + RESPONSE) tokens, 16-bit, no recomputation."""
    s, b, h, a, L = PROMPT + RESPONSE, BATCH, cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_hidden_layers"]
    return L * s * b * h * (34 + (0 if flash else 5 * a * s / h))


def gpu_estimate(lora: bool) -> dict:
    """Bytes on one GPU for one PPO step of the reference workload (assumptions in the module doc)."""
    actor, critic = opt_param_count(OPT_1_3B, True), opt_param_count(OPT_350M, False)
    reward = critic
    parts = {}
    if lora:
        trained = lora_param_count(OPT_1_3B, LORA["r"]) + lora_param_count(OPT_350M, LORA["r"]) + OPT_350M["word_embed_proj_dim"]
        parts["weights (bf16 actor = reference, critic, reward)"] = 2 * (actor + critic + reward)
        parts["LoRA weights + grads + Adam (fp32, 16 B/param)"] = 16 * trained
    else:
        parts["frozen weights (bf16 reference, reward)"] = 2 * (actor + reward)
        parts["trained weights + grads + Adam (2 + 2 + 12 B/param)"] = (2 + 2 + ADAM_K) * (actor + critic)
    parts["activations actor + critic (no flash)"] = activation_bytes(OPT_1_3B, False) + activation_bytes(OPT_350M, False)
    tokens = BATCH * (PROMPT + RESPONSE)
    parts["response logits: bf16 + fp32 copy, and their gradients"] = BATCH * RESPONSE * OPT_1_3B["vocab_size"] * (2 + 4) * 2
    parts["KV cache for generation (bf16)"] = 2 * OPT_1_3B["num_hidden_layers"] * tokens * OPT_1_3B["hidden_size"] * 2
    parts["CUDA context + allocator slack"] = 1 * GIB
    total = sum(parts.values())
    with_flash = total - (activation_bytes(OPT_1_3B, False) - activation_bytes(OPT_1_3B, True)) - (
        activation_bytes(OPT_350M, False) - activation_bytes(OPT_350M, True))
    return {"parts_gib": {k: v / GIB for k, v in parts.items()}, "total_gib": total / GIB,
            "total_with_flash_attention_gib": with_flash / GIB}


def zero_table() -> list[dict]:
    """Full fine-tuning model states per GPU (GiB) under ZeRO-2 and ZeRO-3, plus activations (not sharded)."""
    trained = opt_param_count(OPT_1_3B, True) + opt_param_count(OPT_350M, False)  # actor, critic
    frozen = opt_param_count(OPT_1_3B, True) + opt_param_count(OPT_350M, False)  # reference, reward model
    activations = activation_bytes(OPT_1_3B, True) + activation_bytes(OPT_350M, True)
    rows = []
    for n in (1, 2, 4, 8):
        zero2 = 2 * trained + (2 + ADAM_K) * trained / n + 2 * frozen
        zero3 = (2 + 2 + ADAM_K) * trained / n + 2 * frozen / n
        rows.append({"gpus": n, "zero2_states_gib": zero2 / GIB, "zero3_states_gib": zero3 / GIB,
                     "activations_gib": activations / GIB,
                     "zero2_total_gib": (zero2 + activations) / GIB + 1, "zero3_total_gib": (zero3 + activations) / GIB + 1})
    return rows


def cpu_estimate_full() -> float:
    """RAM for the `full` variant here: bf16 weights of all four models, bf16 grads and bf16 Adam
    states (torch AdamW keeps states in the parameter dtype) for actor and critic, activations
    and fp32 logits; plus the measured import baseline of ~1.5 GiB."""
    actor, critic = opt_param_count(OPT_1_3B, True), opt_param_count(OPT_350M, False)
    states = 2 * (2 * actor + 2 * critic) + (2 + 2 * 2) * (actor + critic)
    activations = activation_bytes(OPT_1_3B, False) + activation_bytes(OPT_350M, False)
    logits = 3 * BATCH * (PROMPT + RESPONSE) * OPT_1_3B["vocab_size"] * 4
    return (states + activations + logits) / GIB + 1.5


# ----------------------------------------------------------------------------- measurement (child process)

class PeakRSS:
    """Samples this process's RSS every `interval` seconds in a thread; `peak` is the maximum seen."""

    def __init__(self, interval: float = 0.02):
        import psutil

        self._process, self._interval, self.peak = psutil.Process(), interval, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self._process.memory_info().rss)
            time.sleep(self._interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def _rss() -> int:
    import psutil

    return psutil.Process().memory_info().rss


def _nbytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def build_ppo_step(variant: str, output_dir: str, device: str = "cpu", sizes: dict | None = None):
    """A PPOTrainer for exactly one step of the reference workload; returns (trainer, parameter bytes per model).

    `variant` is "lora" or "full"; models are built in bf16 directly on `device`. `sizes`
    overrides both OPT configs (the GPU check's CPU smoke test shrinks them).
    """
    import torch
    from datasets import Dataset
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, OPTConfig

    from rlhf_recipes.models import build_byte_tokenizer
    from rlhf_recipes.ppo import PPOConfig, PPOTrainer

    lora = variant == "lora"
    actor_cfg = OPTConfig(**{**OPT_1_3B, **(sizes or {})})
    critic_cfg = OPTConfig(**{**OPT_350M, **(sizes or {})}, num_labels=1)
    tokenizer = build_byte_tokenizer()
    torch.manual_seed(0)
    with torch.device(device):
        actor = AutoModelForCausalLM.from_config(actor_cfg, dtype=torch.bfloat16)
        critic = AutoModelForSequenceClassification.from_config(critic_cfg, dtype=torch.bfloat16)
        reward = AutoModelForSequenceClassification.from_config(critic_cfg, dtype=torch.bfloat16)
        ref = None if lora else AutoModelForCausalLM.from_config(actor_cfg, dtype=torch.bfloat16).requires_grad_(False)
    if lora:
        # Our ValueModel reads `score` on the model it is given, so the critic is passed as the
        # LoRA-injected base model (a PeftModel wrapper would hide the backbone).
        critic = get_peft_model(critic, LoraConfig(task_type="SEQ_CLS", **LORA)).get_base_model()
    params = {
        "actor": _nbytes(actor.parameters()),
        "reference": 0 if ref is None else _nbytes(ref.parameters()),
        "critic": _nbytes(critic.parameters()),
        "reward": _nbytes(reward.parameters()),
    }
    # Byte-level tokenizer: one token per ASCII character, so these prompts are exactly 256 tokens.
    text = "Human: please write a long and careful answer about the history of the sea. " * 4
    prompts = [text[:PROMPT], text[7 : PROMPT + 7]]
    args = PPOConfig(
        output_dir=output_dir, use_cpu=device == "cpu", bf16=True, seed=0,
        per_device_train_batch_size=BATCH, num_mini_batches=1, num_ppo_epochs=1, max_steps=1,
        local_rollout_forward_batch_size=BATCH, max_prompt_length=PROMPT, response_length=RESPONSE,
        temperature=1.0, stop_token=None, learning_rate=9.65e-6, sample_every=0, logging_steps=1,
        save_strategy="no", report_to="none", disable_tqdm=True,
    )
    trainer = PPOTrainer(
        args=args, processing_class=tokenizer, model=actor, ref_model=ref, value_model=critic,
        reward_model=reward, train_dataset=Dataset.from_dict({"prompt": prompts}),
        peft_config=LoraConfig(task_type="CAUSAL_LM", **LORA) if lora else None,
    )
    return trainer, params


def step_summary(trainer) -> dict:
    """Response length actually generated, trainable parameters and optimizer-state bytes after the step."""
    import torch

    log = next(r for r in trainer.state.log_history if "objective/response_length" in r)
    optimizer_states = [
        t for opt in (trainer.actor_optimizer, trainer.critic_optimizer)
        for state in opt.state.values() for t in state.values() if torch.is_tensor(t)
    ]
    trainable = [p for m in (trainer.unwrapped_actor, trainer.unwrapped_critic) for p in m.parameters() if p.requires_grad]
    return {
        "response_length": log["objective/response_length"],
        "trainable_parameters": sum(p.numel() for p in trainable),
        "trainable_parameter_gib": _nbytes(trainable) / GIB,
        "optimizer_state_gib": _nbytes(optimizer_states) / GIB,
    }


def measure(variant: str, out_path: str) -> None:
    """One PPO step of `variant` in this process; writes the numbers to out_path."""
    import peft  # noqa: F401  (imported before the baseline is taken)
    import torch

    import rlhf_recipes.ppo  # noqa: F401

    baseline = _rss()
    with tempfile.TemporaryDirectory() as output_dir:
        build_start = time.perf_counter()
        trainer, params = build_ppo_step(variant, output_dir)
        build_seconds = time.perf_counter() - build_start
        rss_setup = _rss()
        step_start = time.perf_counter()
        with PeakRSS() as sampler:
            trainer.train()
        step_seconds = time.perf_counter() - step_start
        result = {
            "variant": variant,
            "import_baseline_rss_gib": baseline / GIB,
            "rss_after_setup_gib": rss_setup / GIB,
            "peak_rss_during_step_gib": sampler.peak / GIB,
            "peak_rss_lifetime_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GIB,
            "parameter_gib": {k: v / GIB for k, v in params.items()},
            **step_summary(trainer),
            "build_seconds": build_seconds,
            "step_seconds": step_seconds,
            "threads": torch.get_num_threads(),
        }
    Path(out_path).write_text(json.dumps(result, indent=1))


# ----------------------------------------------------------------------------- orchestration

def run_child(variant: str) -> dict:
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        cmd = [sys.executable, __file__, "--child", variant, "--child-out", out.name]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"{variant} failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
        return json.loads(Path(out.name).read_text())


def available_gib() -> float:
    import psutil

    return psutil.virtual_memory().available / GIB


def markdown(results: dict) -> str:
    env = results["environment"]
    lines = [
        "# Memory: OPT-1.3b actor + OPT-350m critic and reward model, one PPO step",
        "",
        f"{env['date']} · {env['machine']} · torch {env['torch']}, transformers {env['transformers']}, peft {env['peft']}",
        "",
        f"Batch {BATCH}, prompt {PROMPT} + response {RESPONSE} tokens, bf16, LoRA r={LORA['r']} on "
        f"{', '.join(LORA['target_modules'])}; rlhf_recipes.ppo.PPOTrainer, 1 epoch x 1 minibatch.",
        "",
        "## Measured on this CPU",
        "",
        "| variant | peak RSS in step | lifetime peak RSS | import baseline | after setup | params (actor / ref / critic / RM) | "
        "trainable params | optimizer states | response tokens | step time |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for m in results["measured"].values():
        p = m["parameter_gib"]
        lines.append(
            f"| {m['variant']} | {m['peak_rss_during_step_gib']:.2f} GiB | {m['peak_rss_lifetime_gib']:.2f} GiB | "
            f"{m['import_baseline_rss_gib']:.2f} GiB | {m['rss_after_setup_gib']:.2f} GiB | {p['actor']:.2f} / {p['reference']:.2f} / {p['critic']:.2f} / "
            f"{p['reward']:.2f} GiB | {m['trainable_parameters'] / 1e6:.1f} M | {m['optimizer_state_gib'] * 1024:.0f} MiB | "
            f"{m['response_length']:.0f} | {m['step_seconds']:.0f} s ({m['threads']} threads) |"
        )
    for name, note in results["not_measured"].items():
        lines.append(f"| {name} | not measured: {note} | | | | | | | | |")
    lines += ["", f"Goal: LoRA peak <= 12 GiB here. Estimated RAM for `full` here: {results['cpu_estimate_full_gib']:.1f} GiB.",
              "", "## GPU estimate (one GPU, one PPO step)", "", "| part | LoRA (GiB) | full fine-tuning (GiB) |", "|---|---|---|"]
    lo, fu = results["gpu_estimate"]["lora"], results["gpu_estimate"]["full"]
    for key in dict.fromkeys([*lo["parts_gib"], *fu["parts_gib"]]):
        lines.append(f"| {key} | {lo['parts_gib'].get(key, 0):.2f} | {fu['parts_gib'].get(key, 0):.2f} |")
    lines += [
        f"| **total** | **{lo['total_gib']:.1f}** | **{fu['total_gib']:.1f}** |",
        f"| total with flash/SDPA attention | {lo['total_with_flash_attention_gib']:.1f} | {fu['total_with_flash_attention_gib']:.1f} |",
        "",
        "## Full fine-tuning per GPU under ZeRO (model states + activations with SDPA + 1 GiB)",
        "",
        "| GPUs | ZeRO-2 states | ZeRO-3 states | activations | ZeRO-2 total | ZeRO-3 total |",
        "|---|---|---|---|---|---|",
    ]
    for row in results["zero"]:
        lines.append(f"| {row['gpus']} | {row['zero2_states_gib']:.1f} | {row['zero3_states_gib']:.1f} | "
                     f"{row['activations_gib']:.1f} | {row['zero2_total_gib']:.1f} | {row['zero3_total_gib']:.1f} |")
    lines += ["", "Assumptions: see the docstring of benchmarks/memory_opt13b.py."]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--measure-full", action="store_true", help="also run the full fine-tuning step if it fits")
    parser.add_argument("--results-dir", type=Path, default=HERE / "results")
    parser.add_argument("--child", choices=["lora", "full"], help=argparse.SUPPRESS)
    parser.add_argument("--child-out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        measure(args.child, args.child_out)
        return

    import peft
    import torch
    import transformers

    cpu = cpu_model()
    results = {
        "environment": {"date": time.strftime("%Y-%m-%d %H:%M %Z"),
                        "machine": f"{cpu}, {len(os.sched_getaffinity(0))} cores, {available_gib():.0f} GiB RAM available",
                        "torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__},
        "gpu_estimate": {"lora": gpu_estimate(lora=True), "full": gpu_estimate(lora=False)},
        "zero": zero_table(),
        "cpu_estimate_full_gib": cpu_estimate_full(),
        "measured": {},
        "not_measured": {},
    }
    print("measuring lora ...", flush=True)
    results["measured"]["lora"] = run_child("lora")
    if not args.measure_full:
        results["not_measured"]["full"] = "run with --measure-full"
    elif results["cpu_estimate_full_gib"] > 0.8 * available_gib():
        results["not_measured"]["full"] = (f"estimate {results['cpu_estimate_full_gib']:.1f} GiB > 80% of the "
                                           f"{available_gib():.1f} GiB available")
    else:
        print("measuring full ...", flush=True)
        results["measured"]["full"] = run_child("full")
    args.results_dir.mkdir(parents=True, exist_ok=True)
    (args.results_dir / "memory_opt13b.json").write_text(json.dumps(results, indent=1))
    (args.results_dir / "memory_opt13b.md").write_text(markdown(results))
    print(markdown(results))


if __name__ == "__main__":
    main()
