"""Test-wide settings: nothing may reach the Hub, one torch thread, and the shared data folder."""

import os
import signal
import subprocess
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


@pytest.fixture(scope="session")
def run_deepspeed_launch():
    """`run(command, env=None) -> output`: a multi-rank DeepSpeed launch (`accelerate launch --config_file
    deepspeed_*.yaml ...`) from the repository root in its own session, without ACCELERATE_USE_CPU (with it
    accelerate drops DeepSpeed and runs DDP); every rank is killed if it runs past 20 minutes (minutes on a
    loaded 2-core machine), and the test fails with the end of its output unless it exits 0."""

    def run(command: list[str], env: dict | None = None) -> str:
        env = {k: v for k, v in {**os.environ, **(env or {})}.items() if k != "ACCELERATE_USE_CPU"}
        process = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                   text=True, start_new_session=True)
        try:
            output, _ = process.communicate(timeout=1200)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            output, _ = process.communicate()
        assert process.returncode == 0, output[-6000:]
        return output

    return run
