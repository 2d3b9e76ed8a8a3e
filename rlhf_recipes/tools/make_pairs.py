"""`rlhf-recipes make-pairs`: preference pairs whose rejected answer is a model's own answer.

InstructGPT-style "weaker model's answer as the bad answer": for each row of an SFT dataset
(prompt + demonstration), a model (a smaller or untuned one) answers the prompt; the
demonstration becomes `chosen` and the model's answer `rejected`. The output is JSON Lines in
TRL's conversational preference format (`prompt`, `chosen`, `rejected` as message lists), which
the reward recipes read like any other preference file.

    rlhf-recipes make-pairs --model_name_or_path Qwen/Qwen2.5-0.5B-Instruct \\
        --dataset ../shared/data/llamafactory_alpaca_zh_demo.json --output runs/pairs.jsonl \\
        [--max_new_tokens 256] [--num_samples 500] [--data_split 2,2,1 --split_part reward]
        [--dataset_mixer '{"a.json": 1.0, "b.jsonl": 0.5}' instead of --dataset]

`data_split` + `split_part` take one DeepSpeed-Chat part of the dataset (or of a `dataset_mixer`
mixture), the same rows the stages see with that `data_split`: e.g. pairs from the reward part
while SFT trains on the sft part, so the reward model never scores demonstrations the policy was
fine-tuned on.
"""

import json
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from datasets import Dataset
from transformers import PreTrainedTokenizerBase, set_seed

from rlhf_recipes.data.config import FORMATS, DataArguments
from rlhf_recipes.data.loading import load_source
from rlhf_recipes.data.mixer import mix
from rlhf_recipes.data.records import to_messages
from rlhf_recipes.data.report import DataReport
from rlhf_recipes.data.splits import stage_part
from rlhf_recipes.data.stages import STAGES, project
from rlhf_recipes.models import ModelArguments, load_model, load_tokenizer
from rlhf_recipes.models.generation import SamplingConfig, generate, stop_tokens_of
from rlhf_recipes.models.introspection import max_positions
from rlhf_recipes.config.parsing import ConfigError, parse_args
from rlhf_recipes.config.preflight import check_length
from rlhf_recipes.config.ranges import check_ranges

DEFAULT_PROMPT_LENGTH = 512


@dataclass
class MakePairsArguments:
    """Which model answers, which SFT rows it answers, and how it samples."""

    model_name_or_path: str = field(
        metadata={"help": "The model whose answers become `rejected` (Hub id, directory or tiny:<family>)."}
    )
    output: str = field(metadata={"help": "JSON Lines file to write (prompt/chosen/rejected messages)."})
    dataset: str | None = field(
        default=None,
        metadata={"help": "SFT data: Alpaca, ShareGPT, messages, prompt/completion (preference rows: their chosen)."},
    )
    dataset_mixer: dict | str | None = field(
        default=None,
        metadata={"help": "Several sources instead of dataset, {source: fraction}, mixed as the stages mix them."},
    )
    dataset_format: str = field(default="auto", metadata={"help": f"Source schema, one of: {', '.join(FORMATS)}."})
    column_mapping: dict | str | None = field(
        default=None, metadata={"help": "Column renames {expected: yours} (JSON)."}
    )
    data_split: str = field(
        default="1,0,0", metadata={"help": "DeepSpeed-Chat proportions sft,reward,ppo (default: all rows)."}
    )
    split_part: str = field(
        default="sft", metadata={"help": "Which part of data_split to answer: sft, reward or ppo."}
    )
    split_seed: int = field(
        default=42, metadata={"help": "Seed of the data layer's shuffle and split (as in the stages)."}
    )
    num_samples: int | None = field(
        default=None, metadata={"help": "Answer the first N rows of the part (default: all)."}
    )
    max_new_tokens: int = field(default=256, metadata={"help": "Longest generated answer, in tokens."})
    max_prompt_length: int | None = field(
        default=None,
        metadata={
            "help": f"Prompts keep their last N tokens; unset: {DEFAULT_PROMPT_LENGTH}, or what the model's positions "
            "leave after max_new_tokens if that is less."
        },
    )
    batch_size: int = field(default=8, metadata={"help": "Prompts generated together."})
    do_sample: bool = field(default=True, metadata={"help": "Sample (true) or greedy decoding (false)."})
    temperature: float = field(default=0.7, metadata={"help": "Sampling temperature."})
    top_k: int = field(default=50, metadata={"help": "Sample among the k most likely tokens; 0 disables."})
    top_p: float = field(default=1.0, metadata={"help": "Nucleus sampling; 1.0 disables."})
    seed: int = field(default=42, metadata={"help": "Seed for sampling."})
    dtype: str | None = field(default=None, metadata={"help": "Weights dtype: bfloat16, float16, float32 or auto."})
    trust_remote_code: bool = field(default=False, metadata={"help": "Allow Hub models with custom code."})

    def __post_init__(self):
        if self.split_part not in STAGES:
            raise ConfigError(f"split_part must be one of {', '.join(STAGES)}, got {self.split_part!r}.")
        check_ranges(vars(self))
        if self.do_sample and self.temperature <= 0:
            raise ConfigError(f"temperature must be positive when sampling, got {self.temperature}.")


def _canonical_records(data_args: DataArguments) -> Dataset:
    """The source (or mixture) as canonical records, read as SFT data, before any split."""
    report = DataReport("make-pairs")
    if data_args.dataset_mixer:
        sources = {name: (load_source(name, data_args, "sft", report), fraction)
                   for name, fraction in data_args.dataset_mixer.items()}
        return mix(sources, data_args.split_seed, report)
    if data_args.dataset_name:
        return load_source(data_args.dataset_name, data_args, "sft", report)
    raise ConfigError("No data: set --dataset (a file, saved dataset or Hub id) or --dataset_mixer.")


def load_sft_rows(args: MakePairsArguments) -> Dataset:
    """The `split_part` part of the data as conversational prompt/completion rows."""
    data_args = DataArguments(
        dataset_name=args.dataset,
        dataset_mixer=args.dataset_mixer,
        dataset_format=args.dataset_format,
        column_mapping=args.column_mapping,
        data_split=args.data_split,
        split_seed=args.split_seed,
    )
    records = _canonical_records(data_args)
    part = project(stage_part(records, data_args.split_weights, args.split_part, args.split_seed), "sft")
    if args.num_samples is not None:
        part = part.select(range(min(args.num_samples, len(part))))
    return part.map(_as_messages, remove_columns=part.column_names)


def _as_messages(row: dict) -> dict:
    messages = to_messages(row)
    return {"prompt": messages["prompt"], "completion": messages["completion"]}


def generate_answers(model, tokenizer: PreTrainedTokenizerBase, prompts: list[list[dict]], args: MakePairsArguments):
    """The model's answer (a string) to each conversational prompt, through the tokenizer's chat template."""
    config = SamplingConfig(
        max_new_tokens=args.max_new_tokens,
        pad_token_id=tokenizer.pad_token_id,
        temperature=args.temperature if args.do_sample else 1.0,
        top_k=args.top_k,
        top_p=args.top_p,
        stop_token_ids=stop_tokens_of(model, tokenizer),
        greedy=not args.do_sample,
    )
    answers = generate(model, tokenizer, prompts, config, args.batch_size, args.max_prompt_length)
    return [text.strip() for text in tokenizer.batch_decode(answers, skip_special_tokens=True)]


def fitted_prompt_length(positions: int | None, max_new_tokens: int) -> int:
    """The default prompt budget: `DEFAULT_PROMPT_LENGTH`, less when the model's positions leave less after the
    answer (a 512-position model answering 256 tokens keeps prompts of 256); says so when it is less."""
    if positions is None or positions - max_new_tokens >= DEFAULT_PROMPT_LENGTH:
        return DEFAULT_PROMPT_LENGTH
    length = max(positions - max_new_tokens, 1)  # 1 when nothing is left: check_length then names the fix
    print(f"make-pairs: prompts keep their last {length} tokens (the model's {positions} positions less "
          f"max_new_tokens {max_new_tokens}); set max_prompt_length to choose.")
    return length


def _assistant(text: str) -> dict:
    return {"role": "assistant", "content": text}


def make_pairs(args: MakePairsArguments) -> Counter:
    """Write the pairs to `args.output`; returns counts of rows written and skipped per reason."""
    rows = load_sft_rows(args)
    set_seed(args.seed)
    tokenizer = load_tokenizer(ModelArguments(model_name_or_path=args.model_name_or_path), args.trust_remote_code)
    model_args = ModelArguments(model_name_or_path=args.model_name_or_path, dtype=args.dtype)
    model = load_model(model_args, tokenizer, trust_remote_code=args.trust_remote_code)
    positions = max_positions(model.config)
    if args.max_prompt_length is None:
        args.max_prompt_length = fitted_prompt_length(positions, args.max_new_tokens)
    check_length(positions, max_prompt_length=args.max_prompt_length, max_new_tokens=args.max_new_tokens)
    model.to("cuda" if torch.cuda.is_available() else "cpu").eval()
    answers = generate_answers(model, tokenizer, rows["prompt"], args)
    counts = Counter()
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with open(args.output, "w", encoding="utf-8") as handle:
        for row, answer in zip(rows, answers, strict=True):
            if not answer:
                counts["skipped_empty_answer"] += 1
            elif answer == row["completion"][-1]["content"].strip():
                counts["skipped_same_as_chosen"] += 1
            else:
                pair = {"prompt": row["prompt"], "chosen": row["completion"], "rejected": [_assistant(answer)]}
                handle.write(json.dumps(pair, ensure_ascii=False) + "\n")
                counts["written"] += 1
    return counts


def main(argv: Sequence[str] | None = None) -> None:
    (args,) = parse_args([MakePairsArguments], argv)
    counts = make_pairs(args)
    skipped = ", ".join(f"{reason}={count}" for reason, count in sorted(counts.items()) if reason != "written")
    print(f"make-pairs: wrote {counts['written']} pairs to {args.output}" + (f" ({skipped})" if skipped else ""))
    if not counts["written"]:
        raise SystemExit(
            f"make-pairs: no pair written to {args.output}; every answer was empty or equal to the demonstration."
        )
