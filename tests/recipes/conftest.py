"""Tiny stand-ins for the models a real recipe reads from earlier stages, saved once per session."""

import json
from pathlib import Path

import pytest

from rlhf_recipes.models import ModelArguments, load_model, load_tokenizer


class TinyModels:
    """Saved random-init tiny models, keyed by (family, task, 4-bit), built on first use."""

    def __init__(self, root: Path):
        self.root = root
        self.paths: dict[tuple[str, str, bool], str] = {}

    def __call__(self, family: str, task: str = "causal-lm", four_bit: bool = False) -> str:
        key = (family, task, four_bit)
        if key not in self.paths:
            path = self.root / "-".join([family, task, "4bit" if four_bit else "full"])
            args = ModelArguments(model_name_or_path=f"tiny:{family}")
            if four_bit:  # a merged QLoRA output: the checkpoint itself holds 4-bit weights
                args = ModelArguments(model_name_or_path=self(family, task), load_in_4bit=True, use_peft=True,
                                      dtype="float32")
            tokenizer = load_tokenizer(args)
            load_model(args, tokenizer, task=task).save_pretrained(path)
            tokenizer.save_pretrained(path)
            self.paths[key] = str(path)
        return self.paths[key]


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> TinyModels:
    return TinyModels(tmp_path_factory.mktemp("tiny_models"))


class ShortCopies:
    """Copies of shared data files holding only their first `rows` short rows, in the same format.

    "Tiny data" for the recipe runs: the same sources, schemas and mixing, with rows short enough
    (under `max_bytes` of JSON) to fit a tiny model's positions once tokenized byte by byte.
    """

    def __init__(self, root: Path, rows: int = 24, max_bytes: int = 900):
        self.root, self.rows, self.max_bytes = root, rows, max_bytes
        self.paths: dict[str, str] = {}

    def _short(self, row: dict) -> bool:
        return len(json.dumps(row, ensure_ascii=False).encode()) < self.max_bytes

    def __call__(self, source: str) -> str:
        if source not in self.paths:
            path = Path(source)
            text = path.read_text(encoding="utf-8")
            array = path.suffix == ".json" and text.lstrip().startswith("[")
            rows = json.loads(text) if array else [json.loads(line) for line in text.splitlines() if line.strip()]
            kept = [row for row in rows if self._short(row)][: self.rows]
            target = self.root / path.name
            lines = [json.dumps(row, ensure_ascii=False) for row in kept]
            target.write_text("[" + ",\n".join(lines) + "]" if array else "\n".join(lines) + "\n", encoding="utf-8")
            self.paths[source] = str(target)
        return self.paths[source]


@pytest.fixture(scope="session")
def short_copies(tmp_path_factory) -> ShortCopies:
    return ShortCopies(tmp_path_factory.mktemp("short_data"))
