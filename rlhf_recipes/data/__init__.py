"""The data layer: every stage's data comes from `load_stage_dataset(DataArguments, stage)`."""

from rlhf_recipes.data.config import DataArguments
from rlhf_recipes.data.errors import DataError
from rlhf_recipes.data.loading import build_stage_dataset, load_stage_dataset, stage_splits
from rlhf_recipes.data.report import DataReport

__all__ = ["DataArguments", "DataError", "DataReport", "build_stage_dataset", "load_stage_dataset", "stage_splits"]
