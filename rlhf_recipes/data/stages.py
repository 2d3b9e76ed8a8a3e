"""Which sources can feed which stage, and canonical records projected to each stage's TRL format.

- "sft": prompt + completion; a preference row gives its chosen reply as the completion
  (DeepSpeed-Chat step 1 does the same).
- "reward": prompt + chosen + rejected; needs preference sources.
- "ppo": prompt only; any source.
"""

from datasets import Dataset

from rlhf_recipes.data.errors import DataError

STAGES = ("sft", "reward", "ppo")
KINDS_FOR_STAGE = {
    "sft": ("sft", "preference"),
    "reward": ("preference",),
    "ppo": ("sft", "preference", "prompt"),
}


def check_stage(stage: str) -> None:
    """Rejects an unknown stage name."""
    if stage not in STAGES:
        raise DataError(f"Unknown stage {stage!r}; valid stages: {', '.join(STAGES)}.")


def check_source_kind(source: str, format_name: str, kind: str, stage: str) -> None:
    """A clear error when a source cannot feed `stage` (e.g. SFT data for a reward model)."""
    if kind not in KINDS_FOR_STAGE[stage]:
        needs = {"reward": "preference pairs (prompt, chosen, rejected)", "sft": "responses to train on"}[stage]
        raise DataError(
            f"{source} ({format_name} format, {kind} data) cannot feed the {stage} stage: it needs {needs}."
        )


def _completion(row: dict) -> dict:
    return {"completion": row["completion"] if row["completion"] is not None else row["chosen"]}


def project(dataset: Dataset, stage: str) -> Dataset:
    """Canonical records -> the stage's TRL standard format (columns as listed in the module doc)."""
    if stage == "sft":
        return dataset.map(_completion, remove_columns=["chosen", "rejected"])
    if stage == "reward":
        return dataset.select_columns(["prompt", "chosen", "rejected"])
    return dataset.select_columns(["prompt"])
