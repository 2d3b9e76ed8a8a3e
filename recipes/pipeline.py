"""All stages of a pipeline YAML in order: `accelerate launch recipes/pipeline.py --config recipes/tiny/pipeline.yaml`.

Same as `rlhf-recipes pipeline --config ...` (`--help`, `--debug` included); `--overwrite` reruns finished
stages, `--output_dir` and `--seed` override the YAML. The pipeline runs in one process (see
rlhf_recipes/pipeline/runner.py).
"""

import sys

from rlhf_recipes.cli import run

if __name__ == "__main__":
    sys.exit(run("pipeline", sys.argv[1:]))
