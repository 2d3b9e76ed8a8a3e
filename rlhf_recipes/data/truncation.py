"""Chat prompts shortened to a token budget without breaking the chat template.

Keeping the last N tokens of a rendered chat prompt cuts off its system prompt and the first
`<|im_start|>user` (or `Human:`), which leaves a malformed conversation. Here a conversation is shortened
inside its structure instead: the oldest turns go first (system messages stay), then the start of the
first remaining user message's content, until the rendered prompt fits.
"""

from transformers import PreTrainedTokenizerBase

from ..config.errors import ConfigError


def render_chat_prompt(messages: list[dict], tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """Token ids of `messages` through the chat template, with the generation prompt."""
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def _drop_oldest_turn(messages: list[dict]) -> list[dict] | None:
    """`messages` without its oldest non-system turn (a user message and the assistant reply after it), or
    None when only one user message is left."""
    first = next(i for i, message in enumerate(messages) if message["role"] != "system")
    if len(messages) - first <= 1:
        return None
    rest = messages[first + 1 :]
    while len(rest) > 1 and rest[0]["role"] != "user":  # a conversation restarts with a user turn
        rest = rest[1:]
    return messages[:first] + rest


def _with_content(messages: list[dict], index: int, content: str) -> list[dict]:
    return [dict(message, content=content) if i == index else message for i, message in enumerate(messages)]


def _cut_first_user_message(messages: list[dict], tokenizer: PreTrainedTokenizerBase, max_length: int) -> list[int]:
    """Ids of `messages` with the start of its first user message cut until the prompt fits `max_length`."""
    index = next(i for i, message in enumerate(messages) if message["role"] == "user")
    skeleton = len(render_chat_prompt(_with_content(messages, index, ""), tokenizer))
    if skeleton > max_length:
        raise ConfigError(
            f"max_prompt_length={max_length} is shorter than the chat template's own tokens for this prompt "
            f"({skeleton}: system prompt, turn markers and at most one user turn with no text); raise max_prompt_length."
        )
    content = tokenizer(messages[index]["content"], add_special_tokens=False)["input_ids"]
    keep = max_length - skeleton
    while True:  # re-tokenising the cut text can merge tokens differently; shrink until it fits
        cut = tokenizer.decode(content[max(0, len(content) - keep) :]) if keep > 0 else ""
        ids = render_chat_prompt(_with_content(messages, index, cut), tokenizer)
        if len(ids) <= max_length:
            return ids
        keep -= 1


def fit_chat_prompt(
    messages: list[dict], tokenizer: PreTrainedTokenizerBase, max_length: int | None
) -> tuple[list[int], bool]:
    """(ids, shortened): the rendered prompt, shortened to `max_length` tokens inside the conversation
    when it is longer: oldest turns dropped first, then the start of the first user message cut.
    Raises `ConfigError` when even the template around one empty user turn is longer than `max_length`."""
    ids = render_chat_prompt(messages, tokenizer)
    if max_length is None or len(ids) <= max_length:
        return ids, False
    if not any(message["role"] == "user" for message in messages):
        raise ConfigError(f"A chat prompt of {len(ids)} tokens has no user message to shorten to {max_length}.")
    while (shorter := _drop_oldest_turn(messages)) is not None:
        messages = shorter
        ids = render_chat_prompt(messages, tokenizer)
        if len(ids) <= max_length:
            return ids, True
    return _cut_first_user_message(messages, tokenizer, max_length), True
