"""One way to load tokenizers, policies and reward models for every stage."""

import contextlib
import importlib.util
import logging

import torch
import transformers.modeling_utils
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)
from trl import get_peft_config, get_quantization_config

from .config import ModelArguments
from .gguf import resolve_model_path
from .tiny import is_tiny, model_from_config, tiny_config
from .tokenizers import FALLBACK_CHAT_TEMPLATE, build_byte_tokenizer
from .value_head import CausalLMWithValueHead, load_value_head_model, wants_value_head

logger = logging.getLogger("rlhf_recipes")

_DROPOUT_FIELDS = (
    "dropout",
    "attention_dropout",
    "activation_dropout",
    "hidden_dropout",
    "hidden_dropout_prob",
    "attention_probs_dropout_prob",
    "resid_pdrop",
    "embd_pdrop",
    "attn_pdrop",
)


def load_tokenizer(args: ModelArguments, trust_remote_code: bool = False) -> PreTrainedTokenizerBase:
    """The tokenizer, with a pad token and a chat template guaranteed.

    A tokenizer without a pad token reuses EOS for padding; one without a chat template gets
    the HH-style fallback template (`Human: ...` / `Assistant: ...`).
    """
    name = resolve_model_path(args.tokenizer_name_or_path or args.model_name_or_path)
    if is_tiny(name):
        tokenizer = build_byte_tokenizer()
    else:
        tokenizer = AutoTokenizer.from_pretrained(
            name, revision=args.model_revision, trust_remote_code=trust_remote_code
        )
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ValueError(f"Tokenizer {name!r} has neither a pad nor an EOS token; set one before training.")
        tokenizer.pad_token = tokenizer.eos_token
    if tokenizer.chat_template is None:
        tokenizer.chat_template = FALLBACK_CHAT_TEMPLATE
    return tokenizer


def _config_overrides(args: ModelArguments) -> dict:
    overrides = dict(args.model_config_overrides or {})
    if args.dropout is not None:
        overrides["_dropout"] = args.dropout
    return overrides


def _apply_overrides(config, overrides: dict):
    dropout = overrides.pop("_dropout", None)
    for key, value in overrides.items():
        setattr(config, key, value)
    if dropout is not None:
        for key in _DROPOUT_FIELDS:
            if hasattr(config, key):
                setattr(config, key, dropout)
    return config


def _quantization_kwargs(args: ModelArguments) -> dict:
    quantization_config = get_quantization_config(args)
    if quantization_config is None:
        return {}
    if importlib.util.find_spec("bitsandbytes") is None:
        raise ImportError(
            "load_in_4bit/load_in_8bit need bitsandbytes: pip install 'rlhf-recipes[quantization]'."
        )
    if not args.use_peft:
        raise ValueError("A 4/8-bit base model can only be trained with LoRA: set use_peft: true (QLoRA).")
    return {"quantization_config": quantization_config}


def _dtype(args: ModelArguments):
    if args.dtype in (None, "auto"):
        return args.dtype
    return getattr(torch, args.dtype)


def load_model(
    args: ModelArguments,
    tokenizer: PreTrainedTokenizerBase,
    task: str = "causal-lm",
    name_or_path: str | None = None,
    trust_remote_code: bool = False,
) -> PreTrainedModel:
    """Load a causal LM (`task="causal-lm"`) or a scalar-output reward/value model (`"seq-cls"`).

    `name_or_path` defaults to `args.model_name_or_path`; the other fields (dtype, overrides,
    quantization, remote code) apply either way. A reward model loaded from a causal-LM
    checkpoint gets a freshly initialised score head, as in InstructGPT: transformers' own
    `ForSequenceClassification` class, or a `CausalLMWithValueHead` where there is none (remote code)
    or `args.value_head` asks for it.
    """
    name = resolve_model_path(name_or_path or args.model_name_or_path)
    overrides = _config_overrides(args)
    if is_tiny(name):
        # Dropout must be in the config before the layers are built: they read it at construction.
        config = _apply_overrides(tiny_config(name, tokenizer), overrides)
        if task == "seq-cls" and args.value_head:
            model = CausalLMWithValueHead(model_from_config(config, "causal-lm"))
        else:
            model = model_from_config(config, task)
        dtype = _dtype(args)
        return model.to(dtype) if isinstance(dtype, torch.dtype) else model
    config = AutoConfig.from_pretrained(name, revision=args.model_revision, trust_remote_code=trust_remote_code)
    _apply_overrides(config, overrides)
    if config.pad_token_id is None:
        config.pad_token_id = tokenizer.pad_token_id
    kwargs = dict(
        config=config,
        revision=args.model_revision,
        trust_remote_code=trust_remote_code,
        dtype=_dtype(args),
        attn_implementation=args.attn_implementation,
        **_quantization_kwargs(args),
    )
    if task == "causal-lm":
        return AutoModelForCausalLM.from_pretrained(name, **kwargs)
    if wants_value_head(config, args.value_head):
        return load_value_head_model(name, **kwargs)
    config.num_labels = 1
    with _load_report_silenced():
        model, info = AutoModelForSequenceClassification.from_pretrained(name, output_loading_info=True, **kwargs)
    _log_new_weights(name, info)
    return model


def _not_a_load_report(record: logging.LogRecord) -> bool:
    return "LOAD REPORT" not in record.getMessage()


@contextlib.contextmanager
def _load_report_silenced():
    """transformers logs a multi-line LOAD REPORT table (ANSI bold included) for the keys it did not find:
    `_log_new_weights` says the same in one line. A filter, not a log level: transformers runs extra
    checks when that logger's level is WARNING or above."""
    report_logger = transformers.modeling_utils.logger
    report_logger.addFilter(_not_a_load_report)
    try:
        yield
    finally:
        report_logger.removeFilter(_not_a_load_report)


def _log_new_weights(name: str, info: dict) -> None:
    """One line for a reward/value head created on a checkpoint that has none (expected on a causal-LM
    checkpoint), one for any checkpoint weight the model does not use."""
    if info["missing_keys"]:
        logger.warning("%s: newly initialised weights %s (a new head on this checkpoint; training learns it).",
                       name, ", ".join(sorted(info["missing_keys"])))
    if info["unexpected_keys"]:
        logger.warning("%s: checkpoint weights the model does not use: %s.", name, ", ".join(sorted(info["unexpected_keys"])))


def peft_config_for(args: ModelArguments, task_type: str | None = None):
    """TRL's `LoraConfig` from the YAML fields, or None without `use_peft`."""
    config = get_peft_config(args)
    if config is not None and task_type is not None:
        config.task_type = task_type
    return config
