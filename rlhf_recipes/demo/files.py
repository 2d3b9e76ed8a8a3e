"""The demo task's data as files in the run directory, read back by the stages' real data layer.

One JSONL file per use (the 2,4,4 split of the prompts is done by `task.split_prompts`, so each
stage's file is entirely its own): SFT demonstrations, preference pairs, PPO prompts, the
pretraining corpus (also PPO-ptx's texts), validation prompts (SFT checkpoint selection) and
held-out prompts (evaluation only). Also the word-level tokenizer of the task's vocabulary.
"""

import json
from dataclasses import asdict
from pathlib import Path

from ..models import build_word_tokenizer
from .task import (
    VOCABULARY,
    TaskSettings,
    corpus_records,
    format_prompt,
    preference_records,
    prompt_records,
    sft_records,
    split_prompts,
)

FILES = {
    "sft": "sft.jsonl",
    "pairs": "pairs.jsonl",
    "prompts": "prompts.jsonl",
    "corpus": "corpus.jsonl",
    "validation": "validation.jsonl",
    "heldout": "heldout.jsonl",
}
TOKENIZER_DIR = "tokenizer"


def write_jsonl(path: Path, records: list[dict]) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        handle.writelines(json.dumps(record, ensure_ascii=False) + "\n" for record in records)


def write_task_files(data_dir: Path, seed: int, settings: TaskSettings) -> dict[str, Path]:
    """Write every file of the task for `seed` into `data_dir`; returns name -> path (plus "tokenizer").

    The corpus is prompt/completion rows so that the data layer reads it; stage 0 trains on
    prompt + completion as plain text.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    pools = split_prompts(seed, settings)
    pairs = [{k: r[k] for k in ("prompt", "chosen", "rejected")} for r in preference_records(pools.reward, seed, settings)]
    contents = {
        "sft": sft_records(pools.sft, seed, settings),
        "pairs": pairs,
        "prompts": prompt_records(pools.ppo),
        "corpus": corpus_records(pools.heldout, seed, settings),
        "validation": prompt_records(pools.validation),
        "heldout": prompt_records(pools.heldout),
    }
    paths = {}
    for name, records in contents.items():
        paths[name] = data_dir / FILES[name]
        write_jsonl(paths[name], records)
    tokenizer = build_word_tokenizer(VOCABULARY)
    tokenizer.save_pretrained(data_dir / TOKENIZER_DIR)
    paths["tokenizer"] = data_dir / TOKENIZER_DIR
    with open(data_dir / "task.json", "w", encoding="utf-8") as handle:
        json.dump({"seed": seed, "settings": asdict(settings), "example_prompt": format_prompt((3, 7, 1, 4))}, handle, indent=2)
    return paths
