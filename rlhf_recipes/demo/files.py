"""The demo task's data as files in the run directory, read back by the stages' real data layer.

One JSONL file per use (the 2,4,4 split of the prompts is done by `task.split_prompts`, so each
stage's file is entirely its own): SFT demonstrations, preference pairs, PPO prompts, the
pretraining corpus, PPO-ptx's texts, validation prompts (SFT checkpoint selection) and held-out
prompts (evaluation only). Also the word-level tokenizer of the task's vocabulary.

PPO trains on half of its prompt pool and PPO-ptx on half of the corpus, each in a seeded order
(`seeded_half`): the rows, in their order, that the documented demo results were measured with.
The PPO stage reads both files whole, in file order (`data_split: all`).
"""

from dataclasses import asdict
from pathlib import Path

from ..artifacts.run_dir import write_json, write_jsonl
from ..data.tables import shuffled_order
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
    "ptx": "ptx.jsonl",
    "validation": "validation.jsonl",
    "heldout": "heldout.jsonl",
}
TOKENIZER_DIR = "tokenizer"
TASK_INFO = "task.json"
ORDER_SEED = 42


def seeded_half(records: list[dict], second: bool) -> list[dict]:
    """The first or second half of `records` shuffled with `ORDER_SEED`, in that shuffled order."""
    order = shuffled_order(len(records), ORDER_SEED)
    middle = round(len(records) / 2)
    return [records[i] for i in (order[middle:] if second else order[:middle])]


def write_task_files(data_dir: Path, seed: int, settings: TaskSettings) -> dict[str, Path]:
    """Write every file of the task for `seed` into `data_dir`; returns name -> path (plus "tokenizer").

    The corpus is prompt/completion rows so that the data layer reads it; stage 0 trains on
    prompt + completion as plain text.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    pools = split_prompts(seed, settings)
    pairs = [{k: r[k] for k in ("prompt", "chosen", "rejected")} for r in preference_records(pools.reward, seed, settings)]
    corpus = corpus_records(pools.heldout, seed, settings)
    contents = {
        "sft": sft_records(pools.sft, seed, settings),
        "pairs": pairs,
        "prompts": seeded_half(prompt_records(pools.ppo), second=True),
        "corpus": corpus,
        "ptx": seeded_half(corpus, second=False),
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
    write_json(data_dir / TASK_INFO, {"seed": seed, "settings": asdict(settings), "example_prompt": format_prompt((3, 7, 1, 4))})
    return paths
