"""TRL's tokenisation of plain-text rows, done with one batched tokenizer call instead of a per-row `map`.

`SFTTrainer` and `RewardTrainer` prepare a dataset with one `Dataset.map` per step (add EOS, tokenize),
each calling the tokenizer once per text: on the demo's short rows that costs about as much CPU as
several hundred training steps of its tiny model. Both trainers skip those steps when the dataset
already holds their tokenized columns, so the functions below compute exactly those columns (the same
token ids: a tokenizer called on a list encodes each text as it would alone) and leave the rest of
the preparation (labels, truncation, length filters) to TRL:

- preference rows: `chosen_ids = tok(prompt + chosen + eos)`, `rejected_ids` likewise, where EOS is
  appended only when the answer does not already end with it (TRL's `add_eos`);
- SFT prompt/completion rows: `input_ids = tok(prompt + completion + eos)` and
  `completion_mask = [0] * p + [1] * (len(input_ids) - p)`, p the length of `tok(prompt)`;
- language-modelling rows: `input_ids = tok(text + eos)`.

Anything else (chat rows, processors, a formatting function, rows already tokenized, a prompt whose
tokens change when the completion follows) returns None, and TRL prepares the dataset itself.
"""

from datasets import Dataset
from transformers import PreTrainedTokenizerBase

from ..data.tables import arrow_table


def _plain_text(dataset, tokenizer, columns: tuple[str, ...]) -> bool:
    """A non-empty, unformatted Dataset whose `columns` all hold strings, and a text tokenizer with an EOS."""
    return (
        isinstance(dataset, Dataset)
        and dataset.format["type"] is None  # with_transform rows are TRL's to refuse
        and isinstance(tokenizer, PreTrainedTokenizerBase)
        and tokenizer.eos_token is not None
        and len(dataset) > 0
        and all(dataset.features.get(c) is not None and getattr(dataset.features[c], "dtype", None) == "string"
                for c in columns)
    )


def _columns(dataset: Dataset) -> dict[str, list]:
    """Every column as a Python list, converted in Arrow (iterating a `datasets` column costs ~15 us a row)."""
    return arrow_table(dataset).to_pydict()


def _with_eos(texts: list[str], eos: str) -> list[str]:
    return [t if t.endswith(eos) else t + eos for t in texts]


def _replace(rows: dict[str, list], columns: dict[str, list]) -> Dataset:
    """`rows` with `columns` set (replacing or added), other columns kept, as TRL's `map` leaves them."""
    return Dataset.from_dict({**rows, **columns})


def preference_ids(dataset, tokenizer) -> Dataset | None:
    """The rows with TRL's `chosen_ids` / `rejected_ids` (and EOS-terminated answers), or None (see module doc)."""
    names = set(getattr(dataset, "column_names", None) or ())
    if not {"prompt", "chosen", "rejected"} <= names or names & {"chosen_ids", "rejected_ids", "chosen_input_ids"}:
        return None
    if not _plain_text(dataset, tokenizer, ("prompt", "chosen", "rejected")):
        return None
    eos, rows = tokenizer.eos_token, _columns(dataset)
    # as TRL leaves them: the answers EOS-terminated and prefixed with the prompt
    chosen = [p + c for p, c in zip(rows["prompt"], _with_eos(rows["chosen"], eos), strict=True)]
    rejected = [p + r for p, r in zip(rows["prompt"], _with_eos(rows["rejected"], eos), strict=True)]
    ids = {"chosen_ids": tokenizer(text=chosen)["input_ids"], "rejected_ids": tokenizer(text=rejected)["input_ids"]}
    return _replace(rows, {"chosen": chosen, "rejected": rejected, **ids})


def sft_ids(dataset, tokenizer, text_field: str) -> Dataset | None:
    """The rows with TRL's `input_ids` (and `completion_mask` for prompt/completion rows), or None."""
    names = set(getattr(dataset, "column_names", None) or ())
    if "input_ids" in names:
        return None
    eos = tokenizer.eos_token if isinstance(tokenizer, PreTrainedTokenizerBase) else None
    if {"prompt", "completion"} <= names and text_field not in names:
        if not _plain_text(dataset, tokenizer, ("prompt", "completion")):
            return None
        rows = _columns(dataset)
        prompts, completions = rows["prompt"], _with_eos(rows["completion"], eos)
        prompt_ids = tokenizer(text=prompts)["input_ids"]
        full_ids = tokenizer(text=[p + c for p, c in zip(prompts, completions, strict=True)])["input_ids"]
        if any(full[: len(prompt)] != prompt for prompt, full in zip(prompt_ids, full_ids, strict=True)):
            return None  # TRL then warns about the prompt tokens that merge with the completion
        masks = [[0] * len(prompt) + [1] * (len(full) - len(prompt))
                 for prompt, full in zip(prompt_ids, full_ids, strict=True)]
        return _replace(rows, {"completion": completions, "input_ids": full_ids, "completion_mask": masks})
    if text_field in names and "prompt" not in names and "messages" not in names:
        if not _plain_text(dataset, tokenizer, (text_field,)):
            return None
        rows = _columns(dataset)
        texts = _with_eos(rows[text_field], eos)
        return _replace(rows, {text_field: texts, "input_ids": tokenizer(text=texts)["input_ids"]})
    return None
