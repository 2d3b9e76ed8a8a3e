"""Step 2, reward model: `python recipes/reward.py --config recipes/tiny/reward.yaml [--field value ...]`.

Multi-process: `accelerate launch [--config_file ...] recipes/reward.py --config ...`. Same as `rlhf-recipes reward` (`--help`, `--print-config`, `--debug` included).
"""

import sys

from rlhf_recipes.cli import run

if __name__ == "__main__":
    sys.exit(run("reward", sys.argv[1:]))
