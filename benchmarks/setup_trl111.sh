#!/usr/bin/env bash
# Builds the baseline venv for benchmarks/ppo_vs_trl.py: trl 1.11.0, the last release with the
# experimental PPOTrainer, next to (never inside) the project venv.
#
# Usage: bash benchmarks/setup_trl111.sh [PYTHON]   (PYTHON defaults to python3)
# Result: benchmarks/.venv-trl111 (git-ignored). Rerunning it reuses a venv that already works.
#
# torch is installed first and pinned: an unpinned resolution of trl's dependency tree pulls
# a multi-GB CUDA build of torch.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="$here/.venv-trl111"
python="${1:-python3}"
torch_version="2.13.0"
trl_version="1.11.0"

if [[ -x "$venv/bin/python" ]] && "$venv/bin/python" - "$trl_version" <<'PY' 2>/dev/null
import sys
import trl
from trl.experimental.ppo import PPOConfig, PPOTrainer  # noqa: F401
sys.exit(trl.__version__ != sys.argv[1])
PY
then
    echo "trl $trl_version venv already usable: $venv"
    exit 0
fi

"$python" -m venv "$venv"
"$venv/bin/pip" install --quiet --upgrade pip
"$venv/bin/pip" install --quiet "torch==$torch_version"
"$venv/bin/pip" install --quiet "trl==$trl_version"
"$venv/bin/python" -c "import torch, transformers, trl; from trl.experimental.ppo import PPOTrainer; \
print(f'ok: torch {torch.__version__}, transformers {transformers.__version__}, trl {trl.__version__}')"
