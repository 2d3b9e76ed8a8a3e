"""Reward-model evaluation: score the chosen and the rejected answer of each preference pair.

Each pair is tokenized exactly as `trl.RewardTrainer` tokenizes it for training (standard rows:
`prompt + answer + EOS`; conversational rows: the tokenizer's chat template over
`prompt + answer` messages) and padded by TRL's own `DataCollatorForPreference`, so the scores
are the ones the reward model learned to produce. Scoring is deterministic: eval mode, no grad.
"""

import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from peft import AutoPeftModelForSequenceClassification
from transformers import PreTrainedModel, PreTrainedTokenizerBase
from trl.trainer.reward_trainer import DataCollatorForPreference

from .. import logs
from ..data import DataArguments, load_stage_dataset
from ..data.records import is_conversational
from ..models import ModelArguments, load_model, load_tokenizer
from ..config.parsing import parse_args

DISPLAY_CHARS = 160


def encode_pair(row: dict, tokenizer: PreTrainedTokenizerBase) -> tuple[list[int], list[int]]:
    """Token ids of (prompt + chosen, prompt + rejected), as `RewardTrainer` builds them."""
    missing = [key for key in ("chosen", "rejected") if key not in row]
    if missing:
        raise ValueError(f"Preference row lacks column(s) {missing}; it has {sorted(row)}.")
    prompt = row.get("prompt")
    if is_conversational(row):
        tools = row.get("tools")
        tools = json.loads(tools) if isinstance(tools, str) else tools
        kwargs = {"tools": tools, **(row.get("chat_template_kwargs") or {})}
        conversations = [(prompt or []) + row[key] for key in ("chosen", "rejected")]
        return tuple(
            tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True, **kwargs)["input_ids"]
            for messages in conversations
        )
    eos = tokenizer.eos_token
    texts = [row[key] if row[key].endswith(eos) else row[key] + eos for key in ("chosen", "rejected")]
    return tuple(tokenizer((prompt or "") + text)["input_ids"] for text in texts)


def _check_pad_token(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> None:
    model_pad = model.config.pad_token_id
    if model_pad != tokenizer.pad_token_id:
        raise ValueError(
            f"The reward model's config.pad_token_id ({model_pad}) differs from the tokenizer's pad token id "
            f"({tokenizer.pad_token_id}); the model would score the wrong token. Save the model and tokenizer together."
        )


@torch.no_grad()
def _score(model, collator: DataCollatorForPreference, encoded: list[tuple[list[int], list[int]]], batch_size: int):
    chosen, rejected = [], []
    device = next(model.parameters()).device
    for start in range(0, len(encoded), batch_size):
        batch = collator([{"chosen_ids": c, "rejected_ids": r} for c, r in encoded[start : start + batch_size]])
        inputs = {key: batch[key].to(device) for key in ("input_ids", "attention_mask")}
        logits = model(**inputs).logits
        scores_chosen, scores_rejected = torch.chunk(logits.squeeze(-1).float().cpu(), chunks=2)
        chosen += scores_chosen.tolist()
        rejected += scores_rejected.tolist()
    return np.array(chosen), np.array(rejected)


def evaluate_reward_model(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    dataset: Iterable[dict],
    num_samples: int | None = None,
    batch_size: int = 8,
    max_length: int | None = None,
) -> dict:
    """Score the pairs of `dataset` in order, up to `num_samples` of them (all when None).

    Pairs whose chosen or rejected sequence is longer than `max_length` tokens are passed over, as
    `RewardTrainer` leaves them out of training, and counted in `num_skipped_too_long`.
    Returns the summary (`num_pairs`, `accuracy` = share of pairs with chosen > rejected,
    `mean_margin`, `chosen_mean`, `rejected_mean`) and `pairs`: one record per scored pair.
    """
    if num_samples is not None and num_samples < 1:
        raise ValueError(f"num_samples must be a positive number of pairs or None, got {num_samples}.")
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}.")
    _check_pad_token(model, tokenizer)
    rows, encoded, skipped = [], [], 0
    for row in dataset:
        if num_samples is not None and len(encoded) == num_samples:
            break
        pair = encode_pair(row, tokenizer)
        if max_length is not None and max(len(ids) for ids in pair) > max_length:
            skipped += 1
            continue
        rows.append(row)
        encoded.append(pair)
    if not encoded:
        raise ValueError(
            f"No preference pair to score: the dataset is empty or all {skipped} pairs exceed max_length={max_length}."
        )
    was_training = model.training
    collator = DataCollatorForPreference(pad_token_id=tokenizer.pad_token_id)
    model.eval()
    try:
        chosen, rejected = _score(model, collator, encoded, batch_size)
    finally:
        model.train(was_training)
    pairs = [
        {
            "prompt": row.get("prompt"),
            "chosen": row["chosen"],
            "chosen_score": float(c),
            "rejected": row["rejected"],
            "rejected_score": float(r),
            "margin": float(c - r),
        }
        for row, c, r in zip(rows, chosen, rejected)
    ]
    return {
        "num_pairs": len(pairs),
        "num_skipped_too_long": skipped,
        "max_length": max_length,
        "accuracy": float(np.mean(chosen > rejected)),
        "mean_margin": float(np.mean(chosen - rejected)),
        "chosen_mean": float(np.mean(chosen)),
        "rejected_mean": float(np.mean(rejected)),
        "pairs": pairs,
    }


def _display(value, keep_end: bool = False) -> str:
    """One line of at most DISPLAY_CHARS characters; message lists become `role: content` turns."""
    if isinstance(value, list):
        value = " | ".join(f"{message['role']}: {message['content']}" for message in value)
    text = " ".join(str(value or "").split())
    if len(text) <= DISPLAY_CHARS:
        return text
    return "..." + text[-DISPLAY_CHARS:] if keep_end else text[:DISPLAY_CHARS] + "..."


def format_report(report: dict, max_pairs: int | None = None) -> str:
    """Human-readable report: each pair's prompt (its end), good and bad answers with scores, then the summary."""
    lines = []
    for number, pair in enumerate(report["pairs"][:max_pairs], start=1):
        lines += [
            f"[{number}] prompt: {_display(pair['prompt'], keep_end=True)}",
            f"    good (chosen)   {pair['chosen_score']:+9.4f}  {_display(pair['chosen'])}",
            f"    bad  (rejected) {pair['rejected_score']:+9.4f}  {_display(pair['rejected'])}",
        ]
    shown = len(report["pairs"][:max_pairs])
    if shown < report["num_pairs"]:
        lines.append(f"... {report['num_pairs'] - shown} more pairs")
    if report["num_skipped_too_long"]:
        lines.append(f"skipped {report['num_skipped_too_long']} pairs longer than {report['max_length']} tokens")
    lines += [
        f"pairs: {report['num_pairs']}   accuracy (chosen > rejected): {report['accuracy']:.4f}   "
        f"mean margin: {report['mean_margin']:+.4f}",
        f"mean score chosen: {report['chosen_mean']:+.4f}   rejected: {report['rejected_mean']:+.4f}",
    ]
    return "\n".join(lines)


def write_report(report: dict, path: str) -> None:
    """Write the report as JSON (UTF-8, non-ASCII kept readable)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(report, handle, ensure_ascii=False, indent=2)


@dataclass
class RewardEvalArguments:
    """`rlhf-recipes eval-rm`: a reward model, a preference dataset, and what to print or write."""

    model_name_or_path: str = field(
        metadata={"help": "Reward model directory: a full model, a merged LoRA model, or a LoRA adapter."}
    )
    dataset: str = field(metadata={"help": "Preference data: a local file, a saved dataset or a Hub id."})
    dataset_format: str = field(
        default="auto", metadata={"help": "Source schema; 'auto' detects it (see DataArguments)."}
    )
    dataset_config: str | None = field(default=None, metadata={"help": "Hub dataset config name."})
    dataset_split: str = field(default="train", metadata={"help": "Split of a Hub dataset or saved DatasetDict."})
    column_mapping: dict | str | None = field(
        default=None, metadata={"help": "Renames your columns for the format, as {expected: yours} (JSON)."}
    )
    num_samples: int | None = field(
        default=None, metadata={"help": "Score the first N pairs that fit in max_length (default: all)."}
    )
    batch_size: int = field(default=8, metadata={"help": "Pairs scored per forward pass."})
    max_length: int | None = field(
        default=None,
        metadata={"help": "Pairs longer than this many tokens are skipped and counted (default: the model's limit)."},
    )
    json: str | None = field(
        default=None, metadata={"help": "Also write the full report (every pair) to this JSON file."}
    )
    trust_remote_code: bool = field(default=False, metadata={"help": "Allow model code from the Hub."})


def load_reward_model(path: str, trust_remote_code: bool = False) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A saved reward model (full, merged, or LoRA adapter) and its tokenizer, in eval mode."""
    model_args = ModelArguments(model_name_or_path=path)
    tokenizer = load_tokenizer(model_args, trust_remote_code)
    if os.path.isfile(os.path.join(path, "adapter_config.json")):
        # PEFT checks that the adapter is a sequence-classification one; its base is the SFT causal LM.
        model = AutoPeftModelForSequenceClassification.from_pretrained(
            path, num_labels=1, pad_token_id=tokenizer.pad_token_id, trust_remote_code=trust_remote_code
        )
        return model.eval(), tokenizer
    model = load_model(model_args, tokenizer, task="seq-cls", trust_remote_code=trust_remote_code)
    architectures = model.config.architectures or []
    if not any(name.endswith(("ForSequenceClassification", "WithValueHead")) for name in architectures):
        raise ValueError(
            f"{path!r} is not a reward model (its architectures are {architectures}); a causal LM loaded as one "
            "would score with a random head. Point --model_name_or_path at the reward stage's output_dir."
        )
    return model.eval(), tokenizer


def main(argv: Sequence[str] | None = None) -> None:
    """`rlhf-recipes eval-rm --model_name_or_path DIR --dataset FILE [--num_samples N] [--json out.json]`."""
    (args,) = parse_args([RewardEvalArguments], argv)
    logs.configure()
    model, tokenizer = load_reward_model(args.model_name_or_path, args.trust_remote_code)
    # Every pair of the source for the reward stage, none held out (the data layer shuffles them).
    data_args = DataArguments(
        dataset_name=args.dataset,
        dataset_config=args.dataset_config,
        dataset_split=args.dataset_split,
        dataset_format=args.dataset_format,
        column_mapping=args.column_mapping,
        data_split="0,1,0",
        eval_split_size=0,
    )
    pairs = load_stage_dataset(data_args, "reward")["train"]
    max_length = args.max_length or getattr(model.config, "max_position_embeddings", None)
    report = evaluate_reward_model(model, tokenizer, pairs, args.num_samples, args.batch_size, max_length)
    print(format_report(report))
    if args.json:
        write_report(report, args.json)
        print(f"eval-rm: report written to {args.json}")
