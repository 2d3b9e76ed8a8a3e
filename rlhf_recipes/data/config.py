"""`DataArguments`: where a stage's data comes from and how it is split, validated on creation."""

import json
from dataclasses import dataclass, field

from rlhf_recipes.data.adapters import ADAPTERS
from rlhf_recipes.data.splits import parse_data_split
from rlhf_recipes.config.parsing import ConfigError
from rlhf_recipes.config.ranges import check_ranges

FORMATS = ("auto", *ADAPTERS)


def _json_mapping(name: str, value: dict | str | None) -> dict | None:
    """A dict field given as a dict (YAML) or a JSON object string (command line)."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as err:
            raise ConfigError(f"{name} is not valid JSON ({err}): {value!r}") from err
    if value is not None and not isinstance(value, dict):
        raise ConfigError(f"{name} must be a mapping (a JSON object), got {type(value).__name__}: {value!r}")
    return value


@dataclass
class DataArguments:
    """Data settings shared by the SFT, reward and PPO recipes (see `load_stage_dataset`)."""

    dataset_name: str | None = field(
        default=None,
        metadata={
            "help": "A local file (.json array, .jsonl, .csv, .parquet), a directory written by "
            "Dataset.save_to_disk, or a Hub dataset id."
        },
    )
    dataset_config: str | None = field(default=None, metadata={"help": "Hub dataset config name."})
    dataset_split: str = field(
        default="train", metadata={"help": "Split to read from a Hub dataset or a saved DatasetDict."}
    )
    dataset_format: str = field(
        default="auto",
        metadata={
            "help": f"Source schema (adapter); 'auto' detects it from the columns. One of: {', '.join(FORMATS)}. "
            "With dataset_mixer it applies to every source (keep 'auto' to mix schemas)."
        },
    )
    column_mapping: dict | str | None = field(
        default=None,
        metadata={
            "help": "Renames your columns to the names a format expects, as {expected: yours}, e.g. "
            '\'{"prompt": "question", "chosen": "good", "rejected": "bad"}\' (JSON on the command line); '
            "with dataset_mixer it applies to every source."
        },
    )
    dataset_mixer: dict | str | None = field(
        default=None,
        metadata={
            "help": "Several sources mixed instead of dataset_name, as {source: fraction of its rows "
            "to take, in (0, 1]}; JSON on the command line."
        },
    )
    data_split: str = field(
        default="2,4,4",
        metadata={
            "help": "DeepSpeed-Chat style disjoint proportions of the data for steps sft,reward,ppo "
            "(e.g. '2,4,4'; '1,0,0' gives the whole dataset, shuffled, to SFT); 'all': no split, every row in "
            "file order to the stage that reads it (a file made for one stage)."
        },
    )
    eval_split_size: float = field(
        default=0.05,
        metadata={"help": "Held out for eval from the stage's part: a fraction (< 1) or a row count (>= 1); 0 = none."},
    )
    max_samples: int | None = field(default=None, metadata={"help": "Cap on train rows, applied after splitting."})
    split_seed: int = field(default=42, metadata={"help": "Seed for shuffling, splitting and mixing."})

    def __post_init__(self):
        self.column_mapping = _json_mapping("column_mapping", self.column_mapping)
        self.dataset_mixer = _json_mapping("dataset_mixer", self.dataset_mixer)
        if self.dataset_name and self.dataset_mixer:
            raise ConfigError("Set either dataset_name or dataset_mixer, not both.")
        if self.dataset_format not in FORMATS:
            raise ConfigError(f"Unknown dataset_format {self.dataset_format!r}; valid formats: {', '.join(FORMATS)}.")
        for expected, yours in (self.column_mapping or {}).items():
            if not isinstance(yours, str) or not yours:
                raise ConfigError(f"column_mapping[{expected!r}] must be a column name, got {yours!r}.")
        for source, fraction in (self.dataset_mixer or {}).items():
            if isinstance(fraction, bool) or not isinstance(fraction, int | float) or not 0 < fraction <= 1:
                raise ConfigError(f"dataset_mixer[{source!r}] must be a fraction in (0, 1], got {fraction!r}.")
        parse_data_split(self.data_split)
        check_ranges(vars(self))

    @property
    def split_weights(self) -> tuple[float, float, float] | None:
        """`data_split` as three non-negative weights (sft, reward, ppo); None for 'all'."""
        return parse_data_split(self.data_split)
