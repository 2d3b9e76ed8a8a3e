"""Step 2, reward model: `python recipes/reward.py --config recipes/tiny/reward.yaml [--field value ...]`.

Multi-process: `accelerate launch [--config_file ...] recipes/reward.py --config ...`. Same as `rlhf-recipes reward`.
"""

from rlhf_recipes.stages.reward import main

if __name__ == "__main__":
    main()
