"""Adapters: one function per source schema, each turning a raw row into a canonical record
(see `records.py`), plus detection of the schema from a dataset's columns.

Representation per source: multi-turn sources (HH-RLHF transcripts, rm-static, ShareGPT-style
`conversations`, `messages`) become conversational message lists; single-turn sources
(Alpaca, MedicalGPT reward pairs, plain prompt/completion) stay strings. rm-static prompts are
parsed into messages like HH, so the two (the same dialogues) mix and deduplicate together; its
`response` column is not read because it repeats `chosen`.

An adapter raises `DropRow(reason)` for a row that cannot be used (counted, never silent) and
`DataError` for data that is wrong in kind (a number where text belongs).
"""

from collections.abc import Callable
from dataclasses import dataclass

from datasets import Dataset, Features, Value
from trl.data_utils import extract_prompt

from rlhf_recipes.data.errors import DataError
from rlhf_recipes.data.transcripts import TranscriptError, parse_transcript

# Speaker names used by ShareGPT / LLaMA-Factory / MedicalGPT files, mapped to chat roles.
ROLE_ALIASES = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "system": "system",
}


class DropRow(Exception):
    """Raised by an adapter for a row that is skipped; `reason` is the count's key."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Adapter:
    """A source schema: the columns it needs, what kind of record it yields, and its row function."""

    name: str
    kind: str  # "preference" (prompt/chosen/rejected), "sft" (prompt/completion) or "prompt"
    columns: tuple[str, ...]
    convert: Callable[[dict], dict]
    matches: Callable[[Features], bool] = lambda features: True  # type checks beyond column names


def _as_text(value, column: str) -> str:
    if value is None:  # empty CSV cells and missing JSON keys; the empty-text filter counts them
        return ""
    if not isinstance(value, str):
        raise DataError(f"column {column!r} holds a {type(value).__name__}, expected text: {value!r:.80}")
    return value


def _text(row: dict, column: str) -> str:
    return _as_text(row.get(column), column)


def _message(value, column: str) -> dict[str, str]:
    if not isinstance(value, dict):
        raise DataError(f"column {column!r} holds a {type(value).__name__}, expected a message dict: {value!r:.80}")
    extra = {key for key, item in value.items() if item is not None} - {"role", "content", "from", "value"}
    if extra:
        raise DataError(f"column {column!r} has a message with unsupported keys {sorted(extra)}: {value!r:.80}")
    speaker = value.get("role", value.get("from"))
    content = value.get("content", value.get("value"))
    if not isinstance(speaker, str) or speaker not in ROLE_ALIASES:
        raise DropRow("unsupported_role")
    if content is not None and not isinstance(content, str):
        raise DataError(f"column {column!r} has a message whose content is not text: {value!r:.80}")
    return {"role": ROLE_ALIASES[speaker], "content": content or ""}


def _messages(value, column: str) -> list[dict[str, str]]:
    if not isinstance(value, list):
        raise DataError(f"column {column!r} holds a {type(value).__name__}, expected a list of messages: {value!r:.80}")
    return [_message(item, column) for item in value]


def _with_system(row: dict, turns: list[dict[str, str]]) -> list[dict[str, str]]:
    """Prepends the optional `system` column (LLaMA-Factory / MedicalGPT) as a system message."""
    system = _text(row, "system")
    return [{"role": "system", "content": system}, *turns] if system else turns


def _user(text: str) -> dict[str, str]:
    return {"role": "user", "content": text}


def _assistant(text: str) -> dict[str, str]:
    return {"role": "assistant", "content": text}


def _prompt_turns(turns: list[dict[str, str]]) -> list[dict[str, str]]:
    if not turns or turns[-1]["role"] != "user":
        raise DropRow("last_prompt_turn_not_user")
    return turns


def _reply(value, column: str) -> list[dict[str, str]]:
    """A response that is a text or a single message, as one assistant message."""
    message = _message(value, column) if isinstance(value, dict) else _assistant(_as_text(value, column))
    if message["role"] != "assistant":
        raise DropRow("response_not_assistant")
    return [message]


def _query_turns(value, column: str) -> list[dict[str, str]]:
    """A prompt given as messages, or as a text that becomes one user message."""
    return _messages(value, column) if isinstance(value, list) else [_user(_as_text(value, column))]


def _reply_turns(value, column: str) -> list[dict[str, str]]:
    """A response given as messages, or as a text / single message that becomes one assistant message."""
    return _messages(value, column) if isinstance(value, list) else _reply(value, column)


def hh_rlhf(row: dict) -> dict:
    """Anthropic HH-RLHF: `chosen`/`rejected` are whole transcripts that differ in the last reply.

    The shared turns become the prompt, the two last assistant replies chosen/rejected. Rows
    whose transcripts differ before the last turn (about 0.3% of hh-rlhf; e.g. one side has
    extra turns after the human spoke again) do not compare two replies to one context and are
    dropped as "diverged_before_last_turn"; consecutive same-speaker turns are merged first (see
    `transcripts.py`), so an extra assistant turn at the end is part of that side's reply.
    """
    try:
        chosen, rejected = parse_transcript(_text(row, "chosen")), parse_transcript(_text(row, "rejected"))
    except TranscriptError:
        raise DropRow("malformed_transcript") from None
    if chosen[-1]["role"] != "assistant" or rejected[-1]["role"] != "assistant":
        raise DropRow("last_turn_not_assistant")
    if chosen[:-1] != rejected[:-1]:
        raise DropRow("diverged_before_last_turn")
    return {"prompt": chosen[:-1], "chosen": chosen[-1:], "rejected": rejected[-1:]}


def rm_static(row: dict) -> dict:
    """Dahoas/rm-static: `prompt` is a transcript ending in "\\n\\nAssistant:", chosen/rejected the replies."""
    marker = "\n\nAssistant:"
    prompt = _text(row, "prompt").rstrip()
    if not prompt.endswith(marker):
        raise DropRow("malformed_transcript")
    try:
        turns = parse_transcript(prompt[: -len(marker)])
    except TranscriptError:
        raise DropRow("malformed_transcript") from None
    return {
        "prompt": _prompt_turns(turns),
        "chosen": [_assistant(_text(row, "chosen").strip())],
        "rejected": [_assistant(_text(row, "rejected").strip())],
    }


def alpaca(row: dict) -> dict:
    """Alpaca: instruction (+ "\\n" + input when given) -> output, as strings.

    With LLaMA-Factory's optional `system` or `history` ([[query, answer], ...]) the row is
    conversational; the source is then converted to messages as a whole (`records.to_dataset`).
    """
    query = "\n".join(part for part in (_text(row, "instruction"), _text(row, "input")) if part)
    history = row.get("history") or []
    if not isinstance(history, list):
        raise DataError(f"column 'history' must hold a list of [query, answer] pairs, got {history!r:.80}")
    if not _text(row, "system") and not history:
        return {"prompt": query, "completion": _text(row, "output")}
    turns = []
    for pair in history:
        if not isinstance(pair, list | tuple) or len(pair) != 2:
            raise DataError(f"column 'history' must hold [query, answer] pairs, got {pair!r:.80}")
        turns += [_user(_as_text(pair[0], "history")), _assistant(_as_text(pair[1], "history"))]
    return {"prompt": _with_system(row, [*turns, _user(query)]), "completion": [_assistant(_text(row, "output"))]}


def sharegpt_ranking(row: dict) -> dict:
    """LLaMA-Factory ShareGPT ranking: `conversations` [{from, value}] + chosen/rejected {from, value}."""
    prompt = _prompt_turns(_with_system(row, _messages(row["conversations"], "conversations")))
    return {
        "prompt": prompt,
        "chosen": _reply(row["chosen"], "chosen"),
        "rejected": _reply(row["rejected"], "rejected"),
    }


def medicalgpt_dpo(row: dict) -> dict:
    """MedicalGPT dpo: `conversations` [{from, value}] + chosen/rejected answer strings."""
    prompt = _prompt_turns(_with_system(row, _messages(row["conversations"], "conversations")))
    return {
        "prompt": prompt,
        "chosen": [_assistant(_text(row, "chosen"))],
        "rejected": [_assistant(_text(row, "rejected"))],
    }


def medicalgpt_reward(row: dict) -> dict:
    """MedicalGPT medical reward: question / response_chosen / response_rejected strings."""
    return {
        "prompt": _text(row, "question"),
        "chosen": _text(row, "response_chosen"),
        "rejected": _text(row, "response_rejected"),
    }


def preference(row: dict) -> dict:
    """TRL explicit-prompt preference: prompt/chosen/rejected, strings or messages."""
    columns = ("prompt", "chosen", "rejected")
    if not any(isinstance(row[column], list) for column in columns):
        return {column: _text(row, column) for column in columns}
    return {
        "prompt": _query_turns(row["prompt"], "prompt"),
        "chosen": _reply_turns(row["chosen"], "chosen"),
        "rejected": _reply_turns(row["rejected"], "rejected"),
    }


def implicit_preference(row: dict) -> dict:
    """TRL implicit-prompt preference: whole conversations in chosen/rejected; TRL's `extract_prompt`
    splits off the shared turns as the prompt."""
    chosen, rejected = _messages(row["chosen"], "chosen"), _messages(row["rejected"], "rejected")
    if not chosen or not rejected:  # extract_prompt needs a turn on each side
        raise DropRow("empty_response")
    return extract_prompt({"chosen": chosen, "rejected": rejected})


def _split_last_reply(turns: list[dict[str, str]]) -> dict:
    if not turns or turns[-1]["role"] != "assistant":
        raise DropRow("last_turn_not_assistant")
    return {"prompt": turns[:-1], "completion": turns[-1:]}


def messages(row: dict) -> dict:
    """TRL conversational language modeling: `messages`; the last (assistant) turn is the completion."""
    return _split_last_reply(_messages(row["messages"], "messages"))


def sharegpt(row: dict) -> dict:
    """ShareGPT SFT: `conversations` [{from, value}] (+ optional `system`); the last gpt turn is the completion."""
    return _split_last_reply(_with_system(row, _messages(row["conversations"], "conversations")))


def prompt_completion(row: dict) -> dict:
    """TRL prompt-completion: strings, or prompt messages + completion messages."""
    if isinstance(row["prompt"], list) or isinstance(row["completion"], list):
        return {
            "prompt": _query_turns(row["prompt"], "prompt"),
            "completion": _reply_turns(row["completion"], "completion"),
        }
    return {"prompt": _text(row, "prompt"), "completion": _text(row, "completion")}


def prompt_only(row: dict) -> dict:
    """TRL prompt-only: `prompt` (string or messages); usable for PPO only."""
    prompt = row["prompt"]
    return {"prompt": _messages(prompt, "prompt") if isinstance(prompt, list) else _text(row, "prompt")}


def _is_text(feature) -> bool:
    return isinstance(feature, Value) and feature.dtype in ("string", "large_string")


# Detection tries these in order, so a schema comes before any schema whose columns it contains.
ADAPTERS: dict[str, Adapter] = {
    adapter.name: adapter
    for adapter in (
        Adapter(
            "medicalgpt_reward", "preference", ("question", "response_chosen", "response_rejected"), medicalgpt_reward
        ),
        Adapter(
            "sharegpt_ranking", "preference", ("conversations", "chosen", "rejected"), sharegpt_ranking,
            lambda features: isinstance(features["chosen"], dict),
        ),
        Adapter(
            "medicalgpt_dpo", "preference", ("conversations", "chosen", "rejected"), medicalgpt_dpo,
            lambda features: _is_text(features["chosen"]),
        ),
        Adapter(
            "rm_static", "preference", ("prompt", "response", "chosen", "rejected"), rm_static,
            lambda features: _is_text(features["prompt"]),
        ),
        Adapter("preference", "preference", ("prompt", "chosen", "rejected"), preference),
        Adapter(
            "hh_rlhf", "preference", ("chosen", "rejected"), hh_rlhf, lambda features: _is_text(features["chosen"])
        ),
        Adapter(
            "implicit_preference", "preference", ("chosen", "rejected"), implicit_preference,
            lambda features: not _is_text(features["chosen"]),
        ),
        Adapter("alpaca", "sft", ("instruction", "output"), alpaca),
        Adapter("messages", "sft", ("messages",), messages),
        Adapter("sharegpt", "sft", ("conversations",), sharegpt),
        Adapter("prompt_completion", "sft", ("prompt", "completion"), prompt_completion),
        Adapter("prompt_only", "prompt", ("prompt",), prompt_only),
    )
}


def _known_formats() -> str:
    return "; ".join(f"{name} ({', '.join(adapter.columns)})" for name, adapter in ADAPTERS.items())


def detect_format(dataset: Dataset, source: str) -> Adapter:
    """The first adapter whose columns (and column types) the dataset has."""
    for adapter in ADAPTERS.values():
        if set(adapter.columns) <= set(dataset.column_names) and adapter.matches(dataset.features):
            return adapter
    raise DataError(
        f"{source}: cannot detect the data format from its columns {dataset.column_names}. "
        f"Known formats (columns): {_known_formats()}. Rename columns with column_mapping or set dataset_format."
    )


def select_adapter(dataset: Dataset, dataset_format: str, source: str) -> Adapter:
    """The adapter named by `dataset_format` ("auto": detected), checked against the dataset's columns."""
    if dataset_format == "auto":
        return detect_format(dataset, source)
    adapter = ADAPTERS[dataset_format]
    missing = [column for column in adapter.columns if column not in dataset.column_names]
    if missing:
        raise DataError(
            f"{source}: format {adapter.name!r} needs column(s) {missing}, which are missing; "
            f"columns present: {dataset.column_names}. Rename columns with column_mapping."
        )
    return adapter


def apply_column_mapping(dataset: Dataset, mapping: dict[str, str] | None, source: str) -> Dataset:
    """Renames the user's columns to the names a format expects; `mapping` is {expected: user's column}."""
    if not mapping:
        return dataset
    missing = [yours for yours in mapping.values() if yours not in dataset.column_names]
    if missing:
        raise DataError(
            f"{source}: column_mapping names column(s) {missing}, which are missing; "
            f"columns present: {dataset.column_names}."
        )
    renames = {yours: expected for expected, yours in mapping.items() if yours != expected}
    # a target may exist only if it is itself renamed away (a swap)
    clashes = [target for target in renames.values() if target in dataset.column_names and target not in renames]
    if clashes:
        raise DataError(
            f"{source}: column_mapping renames onto column(s) {clashes}, which already exist; drop or map them first."
        )
    return dataset.rename_columns(renames)
