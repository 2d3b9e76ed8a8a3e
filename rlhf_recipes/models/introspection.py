"""What can be known about a model before its weights are loaded: config, positions, size."""

import dataclasses

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSequenceClassification, PretrainedConfig
from transformers.modeling_utils import set_zero3_state

from .config import ModelArguments
from .gguf import resolve_model_path
from .loading import _apply_overrides, _config_overrides, load_tokenizer
from .tiny import is_tiny, tiny_config
from .value_head import has_native_score_head

# Config fields that bound the sequence length, by model family (OPT/Llama/Qwen, GPT-2, ChatGLM).
_POSITION_FIELDS = ("max_position_embeddings", "n_positions", "seq_length")
_DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}


def model_config(args: ModelArguments, name_or_path: str | None = None, trust_remote_code: bool = False) -> PretrainedConfig:
    """The config `load_model` would use (overrides applied; tiny models included), without any weights."""
    name = resolve_model_path(name_or_path or args.model_name_or_path)
    overrides = _config_overrides(args)
    if is_tiny(name):  # its vocabulary comes from the tokenizer, built locally
        tokenizer = load_tokenizer(dataclasses.replace(args, model_name_or_path=name), trust_remote_code)
        return _apply_overrides(tiny_config(name, tokenizer), overrides)
    config = AutoConfig.from_pretrained(name, revision=args.model_revision, trust_remote_code=trust_remote_code)
    return _apply_overrides(config, overrides)


def max_positions(config: PretrainedConfig) -> int | None:
    """The longest sequence the model's position embeddings cover, when the config says."""
    for field in _POSITION_FIELDS:
        value = getattr(config, field, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def parameter_count(config: PretrainedConfig, task: str = "causal-lm", trust_remote_code: bool = False) -> int:
    """Parameters of the model `config` describes, counted on the meta device (no memory, no weights)."""
    value_head = task != "causal-lm" and not has_native_score_head(config)
    auto_class = AutoModelForCausalLM if task == "causal-lm" or value_head else AutoModelForSequenceClassification
    # set_zero3_state: under a ZeRO-3 launch (zero3_init_flag) from_config would partition the meta model and
    # then copy into its meta RoPE buffers ("Cannot copy out of meta tensor"); a count needs neither
    with torch.device("meta"), set_zero3_state():
        model = auto_class.from_config(config, trust_remote_code=trust_remote_code)
    # a value-head model is the causal LM's body plus one score row; counting its LM head too is an upper bound
    extra = config.get_text_config().hidden_size if value_head else 0
    return sum(parameter.numel() for parameter in model.parameters()) + extra


def bytes_per_parameter(args: ModelArguments, config: PretrainedConfig) -> int:
    """Bytes of one saved weight: `dtype` from the arguments, else the config's, else float32."""
    dtype = args.dtype if args.dtype not in (None, "auto") else getattr(config, "dtype", None)
    return _DTYPE_BYTES.get(str(dtype).removeprefix("torch."), 4)
