"""All stages of a pipeline YAML in order: `accelerate launch recipes/pipeline.py --config recipes/tiny/pipeline.yaml`.

Same as `rlhf-recipes pipeline --config ...`; `--overwrite` reruns finished stages, `--output_dir`
and `--seed` override the YAML. The pipeline runs in one process (see rlhf_recipes/pipeline/runner.py).
"""

import sys

from rlhf_recipes.pipeline.runner import main

if __name__ == "__main__":
    sys.exit(main())
