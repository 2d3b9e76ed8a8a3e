"""Step 3, PPO(-ptx): `python recipes/ppo.py --config recipes/tiny/ppo.yaml [--field value ...]`.

Two CPU ranks: `torchrun --nproc_per_node 2 recipes/ppo.py --config ...` (use_cpu is the default
without CUDA). GPUs: `accelerate launch [--config_file ...] recipes/ppo.py --config ...`.
Same as `rlhf-recipes ppo` (`--help`, `--print-config`, `--debug` included).
"""

import sys

from rlhf_recipes.cli import run

if __name__ == "__main__":
    sys.exit(run("ppo", sys.argv[1:]))
