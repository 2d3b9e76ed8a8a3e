"""Fixtures of the reliability tests: tiny saved models and a short preference file."""

import json

import pytest
import torch

from rlhf_recipes.models import ModelArguments, load_model, load_tokenizer


@pytest.fixture(scope="session")
def tiny_dirs(tmp_path_factory) -> dict[str, str]:
    """A random-init tiny OPT saved as a step-1 output (causal LM) and as a step-2 output (reward model)."""
    root = tmp_path_factory.mktemp("tiny_models")
    args = ModelArguments(model_name_or_path="tiny:opt")
    tokenizer = load_tokenizer(args)
    dirs = {}
    for task, name in (("causal-lm", "sft"), ("seq-cls", "reward")):
        torch.manual_seed(0)
        model = load_model(args, tokenizer, task=task)
        model.save_pretrained(root / name)
        tokenizer.save_pretrained(root / name)
        dirs[name] = str(root / name)
    return dirs


@pytest.fixture(scope="session")
def short_pairs(tmp_path_factory) -> str:
    """100 short, distinct preference rows (prompt, chosen, rejected) in a JSONL file."""
    path = tmp_path_factory.mktemp("data") / "pairs.jsonl"
    rows = [
        {"prompt": f"Q: {a} plus {b}? A:", "chosen": f" {a + b}", "rejected": f" {a + b + 1}"}
        for a, b in ((i % 10, i // 10) for i in range(100))
    ]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return str(path)
