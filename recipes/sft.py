"""Step 1, supervised fine-tuning: `python recipes/sft.py --config recipes/tiny/sft.yaml [--field value ...]`.

Multi-process: `accelerate launch [--config_file ...] recipes/sft.py --config ...`. Same as `rlhf-recipes sft` (`--help`, `--print-config`, `--debug` included).
"""

import sys

from rlhf_recipes.cli import run

if __name__ == "__main__":
    sys.exit(run("sft", sys.argv[1:]))
