"""`load_stage_dataset`: one call from `DataArguments` to a stage's train/eval `DatasetDict`.

Order: read each source -> rename columns -> adapt rows to canonical records -> drop bad rows
and duplicates -> mix sources -> take the stage's `data_split` part -> hold out eval -> project to
the stage's TRL format -> drop rows that became duplicates (eval rows equal to a train row
too) -> cap train at `max_samples`. Everything before the split is independent of the stage,
so the parts of different stages stay disjoint.
"""

from datasets import Dataset, DatasetDict

from rlhf_recipes.data.adapters import DropRow, apply_column_mapping, select_adapter
from rlhf_recipes.data.config import DataArguments
from rlhf_recipes.data.errors import DataError
from rlhf_recipes.data.filters import clean, drop_duplicates
from rlhf_recipes.data.io import load_raw
from rlhf_recipes.data.mixer import mix
from rlhf_recipes.data.records import to_dataset
from rlhf_recipes.data.report import DataReport
from rlhf_recipes.data.splits import hold_out_eval, stage_part
from rlhf_recipes.data.stages import check_source_kind, check_stage, project
from rlhf_recipes.data.tables import take


def load_source(name: str, args: DataArguments, stage: str, report: DataReport) -> Dataset:
    """One source as canonical records, its drops counted in `report`; errors if it cannot feed `stage`."""
    raw = apply_column_mapping(load_raw(name, args.dataset_config, args.dataset_split), args.column_mapping, name)
    adapter = select_adapter(raw, args.dataset_format, name)
    check_source_kind(name, adapter.name, adapter.kind, stage)
    step = report.step(f"{name} ({adapter.name})", len(raw))
    records = []
    for index, row in enumerate(raw.to_list()):  # one Arrow conversion, not one per row
        try:
            records.append((index, adapter.convert(row)))
        except DropRow as drop:
            step.drop(drop.reason, index)
        except DataError as err:
            raise DataError(f"{name}, row {index} ({adapter.name} format): {err}") from None
    records = clean(records, step)
    if not records:
        reasons = ", ".join(f"{reason}={count}" for reason, count in step.dropped.most_common())
        raise DataError(
            f"{name}: all {step.rows_in} rows were dropped reading it as {adapter.name} ({reasons}); "
            "check dataset_format and column_mapping."
        )
    return to_dataset([record for _, record in records])


def build_stage_dataset(args: DataArguments, stage: str) -> tuple[DatasetDict, DataReport]:
    """The stage's {"train", "eval"} DatasetDict and a report of sizes and dropped rows (also logged)."""
    check_stage(stage)
    report = DataReport(stage)
    if args.dataset_mixer:
        sources = {name: (load_source(name, args, stage, report), f) for name, f in args.dataset_mixer.items()}
        dataset = mix(sources, args.split_seed, report)
    elif args.dataset_name:
        dataset = load_source(args.dataset_name, args, stage, report)
    else:
        raise DataError("No data: set dataset_name (a file, saved dataset or Hub id) or dataset_mixer.")
    part = stage_part(dataset, args.split_weights, stage, args.split_seed)
    splits = hold_out_eval(part, args.eval_split_size, args.split_seed)
    seen: set[str] = set()
    for split in ("train", "eval"):
        projected = project(splits[split], stage)
        splits[split] = drop_duplicates(projected, report.step(f"{stage} format, {split}", len(projected)), seen)
    if args.max_samples is not None and len(splits["train"]) > args.max_samples:
        splits["train"] = take(splits["train"], range(args.max_samples))
    report.sizes.update(rows=len(dataset), stage_part=len(part), train=len(splits["train"]), eval=len(splits["eval"]))
    report.log()
    return splits, report


def load_stage_dataset(args: DataArguments, stage: str) -> DatasetDict:
    """stage in {"sft", "reward", "ppo"} -> DatasetDict with "train" and "eval" splits in TRL standard formats.

    Use `build_stage_dataset` to also get the `DataReport` (row counts and drops per reason).
    """
    return build_stage_dataset(args, stage)[0]


def stage_splits(args: DataArguments, stage: str) -> tuple[Dataset, Dataset | None]:
    """(train, eval) of `load_stage_dataset`, eval None when nothing is held out."""
    splits = load_stage_dataset(args, stage)
    return splits["train"], splits["eval"] if len(splits["eval"]) else None
