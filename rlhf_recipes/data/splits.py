"""DeepSpeed-Chat `data_split`: disjoint parts of one dataset for the three stages, and the eval hold-out."""

import math

from datasets import Dataset, DatasetDict

from rlhf_recipes.data.errors import DataError
from rlhf_recipes.data.stages import STAGES
from rlhf_recipes.data.tables import shuffled_order, take
from rlhf_recipes.config.parsing import ConfigError


WHOLE = "all"  # data_split of a source made for one stage: every row, in file order


def parse_data_split(spec: str) -> tuple[float, float, float] | None:
    """"2,4,4" -> (2.0, 4.0, 4.0): three non-negative, finite proportions with a positive sum;
    "all" -> None (no split)."""
    if str(spec).strip() == WHOLE:
        return None
    parts = [part.strip() for part in str(spec).split(",")]
    if len(parts) != len(STAGES):
        raise ConfigError(
            f"data_split {spec!r} must have 3 comma-separated proportions (sft,reward,ppo), e.g. '2,4,4', or be "
            f"'{WHOLE}' (every row to the stage that reads it)."
        )
    try:
        weights = tuple(float(part) for part in parts)
    except ValueError:
        raise ConfigError(f"data_split {spec!r} has a part that is not a number.") from None
    if any(not math.isfinite(weight) or weight < 0 for weight in weights) or sum(weights) == 0:
        raise ConfigError(f"data_split {spec!r} needs non-negative proportions with a positive sum.")
    return weights


def stage_part(dataset: Dataset, weights: tuple[float, float, float] | None, stage: str, seed: int) -> Dataset:
    """The stage's contiguous part of `dataset` shuffled with `seed`; parts of different stages are disjoint.
    Without weights (`data_split: all`) the whole dataset, in its order.

    Part boundaries are the rounded cumulative proportions of the row count, so they depend only on
    the row count, the weights and the seed: every stage, process and rank sees the same cut.
    """
    if weights is None:
        return dataset
    index, spec = STAGES.index(stage), ",".join(f"{weight:g}" for weight in weights)
    if weights[index] == 0:
        raise DataError(f"data_split gives stage {stage!r} no data (weight 0 in {spec}).")
    total, cumulative = sum(weights), [0.0]
    for weight in weights:
        cumulative.append(cumulative[-1] + weight)
    start, end = (round(len(dataset) * cumulative[i] / total) for i in (index, index + 1))
    if start == end:
        raise DataError(
            f"data_split {spec} leaves stage {stage!r} no rows of the {len(dataset)} available."
        )
    return take(dataset, shuffled_order(len(dataset), seed)[start:end])


def hold_out_eval(dataset: Dataset, eval_size: float, seed: int) -> DatasetDict:
    """{"train", "eval"}: `eval_size` (a fraction < 1 or a row count) of the rows held out, chosen by `seed`."""
    if eval_size == 0:
        return DatasetDict(train=dataset, eval=dataset.select([]))
    count = int(eval_size) if eval_size >= 1 else math.ceil(eval_size * len(dataset))
    if count >= len(dataset):
        raise DataError(
            f"eval_split_size={eval_size:g} holds out {count} of only {len(dataset)} rows, leaving none to train on."
        )
    split = dataset.train_test_split(test_size=count, seed=seed)
    return DatasetDict(train=split["train"], eval=split["test"])
