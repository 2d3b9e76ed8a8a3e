"""Tokenizers built locally, so that tiny models, tests and the demo never touch the Hub.

Two kinds:
- byte-level: 256 byte symbols plus specials. Covers every language (CJK included) with a
  tiny vocabulary, at one token per byte. The default for `tiny:<family>` models.
- word-level: a closed vocabulary split on whitespace, for generated tasks such as the demo.
"""

from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

SPECIAL_TOKENS = {"pad_token": "<pad>", "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}

# Used when a tokenizer has no chat template of its own; HH-RLHF's own turn markers.
FALLBACK_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ message['content'] }}\n\n"
    "{% elif message['role'] == 'user' %}Human: {{ message['content'] }}\n\n"
    "{% else %}Assistant: {{ message['content'] }}{{ eos_token }}\n\n{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}Assistant:{% endif %}"
)


def _wrap(tokenizer: Tokenizer) -> PreTrainedTokenizerFast:
    # padding_side in the constructor, not set afterwards: only init kwargs are saved with the tokenizer
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, padding_side="left", chat_template=FALLBACK_CHAT_TEMPLATE, **SPECIAL_TOKENS
    )


def build_byte_tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer with no merges: every UTF-8 byte is one token."""
    specials = list(SPECIAL_TOKENS.values())
    vocab = {token: i for i, token in enumerate(specials)}
    for symbol in sorted(pre_tokenizers.ByteLevel.alphabet()):
        vocab[symbol] = len(vocab)
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token=SPECIAL_TOKENS["unk_token"]))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tokenizer.decoder = decoders.ByteLevel()
    return _wrap(tokenizer)


def build_word_tokenizer(words: list[str]) -> PreTrainedTokenizerFast:
    """A whitespace-split tokenizer over a closed vocabulary; decoding joins tokens with spaces."""
    vocab = {token: i for i, token in enumerate(SPECIAL_TOKENS.values())}
    for word in words:
        vocab.setdefault(word, len(vocab))
    tokenizer = Tokenizer(models.WordLevel(vocab=vocab, unk_token=SPECIAL_TOKENS["unk_token"]))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer.decoder = decoders.WordPiece(prefix="##")
    return _wrap(tokenizer)
