"""A pipeline YAML, read and validated (the fields: see `runner`'s module docstring)."""

import os
from dataclasses import dataclass, field, fields
from pathlib import Path

import yaml

from ..artifacts.run_dir import TRAINING_STAGES
from ..config.parsing import ConfigError
from .tasks import TaskProvider, load_task

JUDGING_SECTIONS = ("selection", "evaluation")


@dataclass
class PipelineSpec:
    """A pipeline YAML, validated."""

    output_dir: str
    seed: int = 0
    title: str | None = None
    torch_threads: int | None = None
    task: dict | None = None
    model: dict = field(default_factory=dict)
    stages: dict = field(default_factory=dict)
    selection: dict = field(default_factory=dict)
    evaluation: dict = field(default_factory=dict)
    base_dir: str = "."

    def __post_init__(self):
        unknown = set(self.stages) - set(TRAINING_STAGES)
        if unknown:
            raise ConfigError(f"Unknown stage(s) {sorted(unknown)} in 'stages'; valid: {', '.join(TRAINING_STAGES)}.")
        for required in ("sft", "reward", "ppo"):
            if required not in self.stages:
                raise ConfigError(f"The pipeline needs a '{required}' stage under 'stages'.")
        _check_probes(self.evaluation.get("probe_prompts"))
        self.task_provider: TaskProvider | None = load_task(self.task) if self.task is not None else None
        if self.task_provider is None:
            if "pretrain" in self.stages and not self.stage_fields("pretrain").get("dataset_name"):
                raise ConfigError("Stage 0 (pretrain) trains on a corpus: give it a dataset_name, or a task providing one.")
            for section in JUDGING_SECTIONS:
                if not getattr(self, section).get("dataset_name"):
                    raise ConfigError(f"Without a task, '{section}' needs a dataset_name (its prompts).")

    @property
    def run_dir(self) -> Path:
        return Path(self.output_dir)

    def stage_fields(self, stage: str) -> dict:
        """A stage's own fields: its `config:` file (relative to the pipeline YAML), then inline ones."""
        section = dict(self.stages.get(stage) or {})
        merged = {}
        if "config" in section:
            with open(os.path.join(self.base_dir, section.pop("config")), encoding="utf-8") as handle:
                merged.update(yaml.safe_load(handle) or {})
        merged.update(section)
        return merged

    def as_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "base_dir"}


def _check_probes(probes) -> None:
    """`evaluation.probe_prompts`: a list of prompts, each a non-empty string or a list of chat messages."""
    if probes is None:
        return

    def valid(probe) -> bool:
        if isinstance(probe, str):
            return bool(probe.strip())
        return isinstance(probe, list) and bool(probe) and all(
            isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str) for m in probe
        )

    if not isinstance(probes, list) or not all(valid(p) for p in probes):
        raise ConfigError(
            "evaluation.probe_prompts must be a list of prompts, each a non-empty string or a list of "
            "{role, content} messages, e.g. probe_prompts: [\"How does a telescope work?\"]."
        )


def load_spec(path: str, overrides: dict | None = None) -> PipelineSpec:
    """Read a pipeline YAML; `overrides` (output_dir, seed) win over the file."""
    with open(path, encoding="utf-8") as handle:
        raw = yaml.safe_load(handle) or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path} must hold a YAML mapping.")
    return spec_from_dict(raw, base_dir=os.path.dirname(os.path.abspath(path)), overrides=overrides)


def spec_from_dict(raw: dict, base_dir: str = ".", overrides: dict | None = None) -> PipelineSpec:
    valid = {f.name for f in fields(PipelineSpec)} - {"base_dir"}
    unknown = sorted(set(raw) - valid)
    if unknown:
        raise ConfigError(f"Unknown pipeline key(s) {unknown}; valid keys: {', '.join(sorted(valid))}.")
    raw = {**raw, **{k: v for k, v in (overrides or {}).items() if v is not None}}
    if "output_dir" not in raw:
        raise ConfigError("The pipeline needs an output_dir.")
    return PipelineSpec(**raw, base_dir=base_dir)
