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
