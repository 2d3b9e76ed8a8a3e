"""Models and tokenizers: Hub id, local path or tiny random-init factory, with LoRA and 4-bit."""

from .config import ModelArguments
from .loading import load_model, load_tokenizer, peft_config_for
from .tiny import TINY_FAMILIES, build_tiny_model, is_tiny
from .tokenizers import FALLBACK_CHAT_TEMPLATE, build_byte_tokenizer, build_word_tokenizer

__all__ = [
    "FALLBACK_CHAT_TEMPLATE",
    "TINY_FAMILIES",
    "ModelArguments",
    "build_byte_tokenizer",
    "build_tiny_model",
    "build_word_tokenizer",
    "is_tiny",
    "load_model",
    "load_tokenizer",
    "peft_config_for",
]
