"""Test-wide settings: nothing may reach the Hub, one torch thread, and the shared data folder."""

import os
from pathlib import Path

for _var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
    os.environ[_var] = "1"
# Tiny models on 2 shared cores: one intra-op thread per process (subprocesses inherit the variable)
# is 10-40x faster than threads fighting over the cores, and keeps summation order identical
# between runs that tests compare bit for bit.
os.environ["OMP_NUM_THREADS"] = "1"

import pytest  # noqa: E402
import torch  # noqa: E402

from rlhf_recipes.models import ModelArguments, load_model, load_tokenizer  # noqa: E402

torch.set_num_threads(1)
os.environ.setdefault("WANDB_DISABLED", "true")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.fail(f"The shared data folder {SHARED_DATA} is missing; tests read real samples from it.")
    return SHARED_DATA


@pytest.fixture(scope="session")
def save_tiny_model():
    """`save(path, family="opt", task="causal-lm") -> str`: a random-init tiny model and its tokenizer
    saved to `path`, as a stage's output directory would hold them."""

    def save(path, family: str = "opt", task: str = "causal-lm") -> str:
        args = ModelArguments(model_name_or_path=f"tiny:{family}")
        tokenizer = load_tokenizer(args)
        load_model(args, tokenizer, task=task).save_pretrained(path)
        tokenizer.save_pretrained(path)
        return str(path)

    return save
