"""The pipeline's training steps: each runs the package's own stage from the config file the
pipeline wrote (the same file runs that stage alone: `rlhf-recipes sft --config output_dir/configs/sft.yaml`)."""

from collections.abc import Callable

from .. import logs
from ..config.parsing import parse_args


def _run_pretrain(config: str) -> None:
    """Stage 0: causal-LM training on prompt + completion texts (SFT stage code, plain-text rows)."""
    from datasets import Dataset
    from trl import SFTConfig

    from ..data import DataArguments, load_stage_dataset
    from ..models import ModelArguments
    from ..stages.sft import train_sft

    model_args, data_args, training_args = parse_args([ModelArguments, DataArguments, SFTConfig], ["--config", config])
    logs.configure(training_args)
    rows = load_stage_dataset(data_args, "sft")["train"]
    texts = Dataset.from_dict({"text": [p + c for p, c in zip(rows["prompt"], rows["completion"], strict=True)]})
    train_sft(model_args, training_args, texts)


def _run_sft(config: str) -> None:
    from ..stages.sft import main

    main(["--config", config])


def _run_reward(config: str) -> None:
    from ..stages.reward import main

    main(["--config", config])


def _run_ppo(config: str) -> None:
    from ..ppo.run import main

    main(["--config", config])


# Training stage -> function running it from its config file; tests replace entries.
STAGE_RUNNERS: dict[str, Callable[[str], None]] = {
    "pretrain": _run_pretrain,
    "sft": _run_sft,
    "reward": _run_reward,
    "ppo": _run_ppo,
}
# The command that runs a stage alone from its config file.
STAGE_COMMANDS = {"sft": "rlhf-recipes sft", "reward": "rlhf-recipes reward", "ppo": "rlhf-recipes ppo"}
