"""Step 1, supervised fine-tuning: `python recipes/sft.py --config recipes/tiny/sft.yaml [--field value ...]`.

Multi-process: `accelerate launch [--config_file ...] recipes/sft.py --config ...`. Same as `rlhf-recipes sft`.
"""

from rlhf_recipes.stages.sft import main

if __name__ == "__main__":
    main()
