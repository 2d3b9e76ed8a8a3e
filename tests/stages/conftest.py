"""Fixtures for the stage tests: a saved tiny OPT base and CPU-fast trainer settings."""

import pytest


_FAST = dict(
    use_cpu=True,
    bf16=False,
    report_to="none",
    activation_checkpointing=False,
    save_strategy="no",
    logging_steps=1,
    disable_tqdm=True,
    dataloader_num_workers=0,
    max_length=128,  # TRL's default (1024) exceeds the tiny OPT's 512 positions, which the stages reject
)


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory, save_tiny_model) -> str:
    """A random-init tiny OPT causal LM + tokenizer saved to disk, as an SFT output would be."""
    return save_tiny_model(tmp_path_factory.mktemp("tiny_base"))


@pytest.fixture(scope="session")
def fast() -> dict:
    """Trainer settings for a few quick CPU steps: no checkpoints, no reporting, log every step."""
    return dict(_FAST)
