"""Fixtures for the stage tests: a saved tiny OPT base and CPU-fast trainer settings."""

import pytest

from rlhf_recipes.models import ModelArguments, load_model, load_tokenizer

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
def tiny_base(tmp_path_factory) -> str:
    """A random-init tiny OPT causal LM + tokenizer saved to disk, as an SFT output would be."""
    path = tmp_path_factory.mktemp("tiny_base")
    args = ModelArguments(model_name_or_path="tiny:opt")
    tokenizer = load_tokenizer(args)
    load_model(args, tokenizer).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="session")
def fast() -> dict:
    """Trainer settings for a few quick CPU steps: no checkpoints, no reporting, log every step."""
    return dict(_FAST)
