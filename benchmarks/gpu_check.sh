#!/usr/bin/env bash
# GPU check on one CUDA GPU: one bf16 PPO step of the OPT-1.3b + OPT-350m LoRA workload, a ZeRO-2 launch
# (accelerate + DeepSpeed, 1 GPU, 5 SFT steps of a tiny OPT), a 4-bit nf4 QLoRA load + forward/backward of an
# OPT-1.3b-sized model (these three: random init, no download, under 8 minutes), and ppo-real: ours vs trl 1.11
# in bf16 on the real-length SmolLM2-135M + HH-RLHF workload of ppo_vs_trl_real.py (needs
# benchmarks/.venv-trl111 built on that machine by setup_trl111.sh; about 2-5 minutes).
#
# Usage: bash benchmarks/gpu_check.sh [RESULTS_DIR]     (default benchmarks/results)
#   PYTHON=/path/to/python  interpreter with the project installed (default: python)
#   GPU_CHECKS="ppo-real"   the checks to run (default: ppo-step zero2 qlora ppo-real)
#   GPU_CHECK_SMOKE=1       run the same code on CPU with tiny sizes (tests the plumbing only)
# Writes RESULTS_DIR/gpu_check.json and gpu_check.md (gpu_check_smoke.* in smoke mode); ppo-real also writes
# RESULTS_DIR/ppo_vs_trl_real_gpu_bf16.{json,md}.
# Exit status: 2 without CUDA, 1 if a check failed, 0 if all passed.
set -uo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
results="${1:-$repo/benchmarks/results}"
python="${PYTHON:-python}"
check="$repo/benchmarks/_gpu_check.py"
checks="${GPU_CHECKS:-ppo-step zero2 qlora ppo-real}"

if [[ "${GPU_CHECK_SMOKE:-0}" != "1" ]]; then
    if ! "$python" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
        echo "gpu_check: no CUDA device visible to torch in '$python'; this check needs a GPU" \
             "(GPU_CHECK_SMOKE=1 runs a CPU smoke test of the script instead)." >&2
        exit 2
    fi
fi

parts="$(mktemp -d)"
trap 'rm -rf "$parts"' EXIT
cd "$repo"
export HF_HUB_OFFLINE=1

for name in $checks; do
    case "$name" in
        ppo-step)
            echo "== ppo-step (limit 240 s)"
            timeout 240 "$python" "$check" ppo-step --out "$parts/ppo-step.json" ;;
        zero2)
            echo "== zero2 (limit 100 s)"
            timeout 100 "$python" -m accelerate.commands.launch --config_file accelerate_configs/deepspeed_zero2.yaml \
                --num_processes 1 "$check" zero2 --out "$parts/zero2.json" ;;
        qlora)
            echo "== qlora (limit 120 s)"
            timeout 120 "$python" "$check" qlora --out "$parts/qlora.json" ;;
        ppo-real)
            echo "== ppo-real (limit 420 s)"
            timeout 420 "$python" "$check" ppo-real --out "$parts/ppo-real.json" --results-dir "$results" ;;
        *)
            echo "gpu_check: unknown check '$name' in GPU_CHECKS (known: ppo-step zero2 qlora ppo-real)" >&2
            exit 2 ;;
    esac
done

"$python" "$check" report --parts-dir "$parts" --results-dir "$results" --checks $checks
report_status=$?

# ===================== FSDP: PPO under accelerate_configs/fsdp.yaml (separate block) =====================
# tests/ppo/fsdp_worker.py (the tiny PPO run of tests/ppo/test_ppo_fsdp.py) for 5 updates on min(2, GPUs) ranks
# through accelerate's own FSDP2 path on CUDA, in the config's bf16; smoke mode: 2 CPU ranks, fp32, FSDP2 forced
# on by tests/ppo/cpu_fsdp.py as in the tests (only with GPU_CHECK_FSDP=1: minutes on a busy 2-core machine;
# GPU_CHECK_FSDP=0 skips it on GPUs). Checks: FSDP distributed type, actor gathered once per rollout and not
# while sampling, the saved actor and critic reload. Writes RESULTS_DIR/gpu_check_fsdp{,_smoke}.json.
if [[ "${GPU_CHECK_FSDP:-$([[ "${GPU_CHECK_SMOKE:-0}" == "1" ]] && echo 0 || echo 1)}" != "1" ]]; then
    exit "$report_status"
fi
if [[ "${GPU_CHECK_SMOKE:-0}" == "1" ]]; then
    fsdp_ranks=2; fsdp_precision=no; fsdp_name=gpu_check_fsdp_smoke; fsdp_limit=1500
else
    fsdp_ranks="$("$python" -c 'import torch; print(min(2, torch.cuda.device_count()))')"
    fsdp_precision=bf16; fsdp_name=gpu_check_fsdp; fsdp_limit=300
fi
echo "== fsdp-ppo (limit $fsdp_limit s)"
mkdir -p "$results"
EXPECTED_RANKS="$fsdp_ranks" timeout "$fsdp_limit" "$python" -m accelerate.commands.launch \
    --config_file accelerate_configs/fsdp.yaml --num_processes "$fsdp_ranks" --mixed_precision "$fsdp_precision" \
    tests/ppo/fsdp_worker.py "$parts/fsdp-ppo" 5 > "$parts/fsdp-ppo.log" 2>&1
fsdp_launch=$?
"$python" - "$parts/fsdp-ppo" "$fsdp_launch" "$fsdp_ranks" "$results/$fsdp_name.json" "$parts/fsdp-ppo.log" <<'PY'
import json, sys
from pathlib import Path

run, launch, ranks, out, log = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4]), sys.argv[5]
result = {"launch_exit": launch, "ranks": ranks, "ok": False}
try:
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    rank = json.loads((run / "rank0.json").read_text())
    result.update(device=torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu", rank0=rank,
                  log=[json.loads(line) for line in (run / "ppo_log.jsonl").read_text().splitlines()])
    AutoModelForCausalLM.from_pretrained(run)
    AutoModelForSequenceClassification.from_pretrained(run / "critic")
    result["ok"] = (launch == 0 and rank["distributed_type"] == "FSDP" and rank["num_processes"] == ranks
                    and rank["whole_weight_gathers"] == 5 and rank["all_gathers_while_sampling"] == 0)
except Exception as error:  # the report says what failed; the launch log tail goes with it
    result["error"] = repr(error)
if not result["ok"]:
    result["log_tail"] = Path(log).read_text()[-4000:]
out.write_text(json.dumps(result, indent=1))
print(f"fsdp-ppo: {'ok' if result['ok'] else 'FAILED'} -> {out}")
sys.exit(0 if result["ok"] else 1)
PY
fsdp_status=$?
# ================================== end of the FSDP block ==================================
exit $(( report_status != 0 ? report_status : fsdp_status ))
