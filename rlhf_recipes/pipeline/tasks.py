"""The task-provider hook: how a task plugs into the generic pipeline without the pipeline knowing it.

A pipeline YAML's `task:` section names a provider by import path and gives its settings:

    task:
      provider: rlhf_recipes.demo.provider:MaxDigitTask   # module:class, a `TaskProvider` subclass
      num_pairs: 6000                                     # the rest: keyword arguments of the class

A provider can add the `data` step (files written into `output_dir/data` before any stage), give
each step its data fields (dataset paths, data_split...), a tokenizer for the first stage, and a
gold metric for SFT checkpoint selection and evaluation. Without a task, each stage's YAML names
its own data and the judging steps report RM score, KL, length and repetition only.
"""

import importlib
from pathlib import Path

from ..config.parsing import ConfigError


class TaskProvider:
    """A task the pipeline runs. Override `write_data` and `data_fields`; a task whose answers can
    be checked sets `has_gold` and overrides the gold methods."""

    has_gold = False
    heldout_lm_about = ""  # what the texts of `heldout_lm_texts` are, for the report

    def write_data(self, data_dir: Path, seed: int) -> None:
        """Write the task's files for `seed` into `data_dir` (the pipeline's `data` step)."""
        raise NotImplementedError

    def data_fields(self, step: str, data_dir: Path) -> dict:
        """The data fields of a step: a training stage (pretrain, sft, reward, ppo) gets
        dataset_name, data_split, ptx_dataset_name...; `select` and `evaluate` get the
        dataset_name (and data_split) of their prompts."""
        raise NotImplementedError

    def tokenizer_path(self, data_dir: Path) -> str | None:
        """A tokenizer for the first stage's model (None: the model's own)."""
        return None

    def gold_metrics(self, prompts: list[str], answers: list[str], prefix: str) -> dict[str, float]:
        """Checked metrics of `answers`, keys starting with `prefix`; `<prefix>_accuracy` is the headline."""
        return {}

    def gold_answer(self, prompt: str) -> str | None:
        """The correct answer of a prompt, shown next to the stages' answers."""
        return None

    def example_indices(self, prompts: list[str], count: int) -> list[int]:
        """Which prompts the report shows side by side."""
        return list(range(min(count, len(prompts))))

    def heldout_lm_texts(self, seed: int) -> list[str]:
        """Held-out texts whose language-model loss each policy gets (the alignment tax); none by default.
        Made without drawing from any global random generator."""
        return []

    def reward_model_checks(self, reward_model, tokenizer, prompts: list[str]) -> dict[str, float]:
        """Extra checks of the reward model on the evaluation prompts, for evaluation.json."""
        return {}


def load_task(section: dict) -> TaskProvider:
    """The provider a `task:` section names, built with the section's other keys."""
    settings = dict(section)
    path = settings.pop("provider", None)
    if not isinstance(path, str) or ":" not in path:
        raise ConfigError(
            f"task needs 'provider: module:Class' (e.g. rlhf_recipes.demo.provider:MaxDigitTask), got {path!r}."
        )
    module_name, class_name = path.split(":", 1)
    try:
        provider = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as err:
        raise ConfigError(f"task provider {path!r} cannot be imported: {err}") from err
    if not (isinstance(provider, type) and issubclass(provider, TaskProvider)):
        raise ConfigError(f"task provider {path!r} is not a TaskProvider subclass.")
    try:
        return provider(**settings)
    except TypeError as err:
        raise ConfigError(f"task settings {sorted(settings)} do not fit {path}: {err}") from err
