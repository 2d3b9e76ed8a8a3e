"""Random-init models at tiny sizes, built from the real config classes.

`tiny:<family>` in `model_name_or_path` selects one; `model_config_overrides` changes its sizes.
They keep the real model class and config type, so a recipe written for `facebook/opt-1.3b`
runs here as a tiny `OPTForCausalLM` with no download.
"""

from transformers import (
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    Glm4Config,
    GlmConfig,
    LlamaConfig,
    OPTConfig,
    PretrainedConfig,
    PreTrainedTokenizerBase,
    Qwen2Config,
)

TINY_PREFIX = "tiny:"

_COMMON = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=512)
_DECODER = dict(_COMMON, intermediate_size=128, num_key_value_heads=2, tie_word_embeddings=True)

TINY_FAMILIES: dict[str, tuple[type[PretrainedConfig], dict]] = {
    "opt": (OPTConfig, dict(_COMMON, ffn_dim=256, word_embed_proj_dim=64, dropout=0.0, attention_dropout=0.0)),
    "qwen2": (Qwen2Config, _DECODER),
    "llama": (LlamaConfig, _DECODER),
    "glm": (GlmConfig, dict(_DECODER, head_dim=16)),
    "glm4": (Glm4Config, dict(_DECODER, head_dim=16)),
}


def is_tiny(name_or_path: str | None) -> bool:
    return bool(name_or_path) and name_or_path.startswith(TINY_PREFIX)


def tiny_config(name: str, tokenizer: PreTrainedTokenizerBase, overrides: dict | None = None) -> PretrainedConfig:
    family = name.removeprefix(TINY_PREFIX)
    if family not in TINY_FAMILIES:
        raise ValueError(f"Unknown tiny model family {family!r}; choose one of {sorted(TINY_FAMILIES)}.")
    config_class, sizes = TINY_FAMILIES[family]
    kwargs = dict(sizes, **(overrides or {}))
    kwargs.update(
        vocab_size=len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    return config_class(**kwargs)


def build_tiny_model(name: str, tokenizer: PreTrainedTokenizerBase, task: str = "causal-lm", overrides: dict | None = None):
    """A random-init model of the family in `name` (`tiny:opt`, `tiny:qwen2`, ...)."""
    return model_from_config(tiny_config(name, tokenizer, overrides), task)


def model_from_config(config: PretrainedConfig, task: str = "causal-lm"):
    """Random-init causal LM (`task="causal-lm"`) or scalar-output model (`"seq-cls"`) from `config`."""
    if task == "causal-lm":
        return AutoModelForCausalLM.from_config(config)
    config.num_labels = 1
    return AutoModelForSequenceClassification.from_config(config)
