"""A scalar reward/value head on any causal LM, for models without a usable sequence-classification class.

Transformers' `XForSequenceClassification` is the body of `XForCausalLM` plus a `score` Linear(hidden, 1);
remote-code models (ChatGLM2/3) have either no such class or one that pools the last padded position with a
differently named head. `CausalLMWithValueHead` builds the same shape from any causal LM (the idea of TRL's
former `AutoModelForCausalLMWithValueHead`, and LLaMA-Factory's choice): the causal LM's body (`base_model`,
its language-model head dropped) and a `score` head read at the last real token, so TRL's RewardTrainer
(`model(input_ids, attention_mask).logits`, B x 1), eval-rm and PPO's `ValueModel` use it like a native one.

Saved, it is the causal LM's own checkpoint without the language-model head, plus `score.weight`, its
config marked `rlhf_value_head: true` (and its remote code copied), so `load_model(..., task="seq-cls")`
recognises and rebuilds it.
"""

import json

import torch
from safetensors import safe_open
from torch import nn
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, PretrainedConfig, PreTrainedModel
from transformers.dynamic_module_utils import custom_object_save
from transformers.modeling_outputs import SequenceClassifierOutputWithPast
from transformers.utils import cached_file

VALUE_HEAD_MARKER = "rlhf_value_head"
# Bodies that return hidden states sequence-first (T x B x H), used when B == T leaves the shape ambiguous.
_SEQUENCE_FIRST_MODEL_TYPES = ("chatglm",)


def has_native_score_head(config: PretrainedConfig) -> bool:
    """True when transformers itself has a `ForSequenceClassification` class (with a `score` head or an
    equivalent one PPO reads) for this config; remote-code classes are not trusted to follow that layout."""
    return type(config) in AutoModelForSequenceClassification._model_mapping


def wants_value_head(config: PretrainedConfig, value_head: bool | None) -> bool:
    """The reward/value model class choice: `value_head` when set, else a value head exactly when the model
    has no native sequence-classification class, or the checkpoint was saved as one."""
    if getattr(config, VALUE_HEAD_MARKER, False):
        return True
    return (not has_native_score_head(config)) if value_head is None else value_head


def batch_first_hidden_states(body: nn.Module, input_ids, attention_mask, position_ids=None) -> torch.Tensor:
    """The last hidden states of `body`, B x T x H, whatever layout the body returns them in."""
    kwargs = dict(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
    if position_ids is not None:
        kwargs["position_ids"] = position_ids
    hidden = body(**kwargs)[0]
    batch, length = input_ids.shape
    if batch == length:
        sequence_first = getattr(getattr(body, "config", None), "model_type", None) in _SEQUENCE_FIRST_MODEL_TYPES
    elif hidden.shape[:2] == (length, batch):
        sequence_first = True
    elif hidden.shape[:2] == (batch, length):
        sequence_first = False
    else:
        raise ValueError(f"{type(body).__name__} returned hidden states of shape {tuple(hidden.shape)} for "
                         f"input ids of shape {tuple(input_ids.shape)}; expected B x T x H or T x B x H.")
    return hidden.transpose(0, 1) if sequence_first else hidden


class CausalLMWithValueHead(PreTrainedModel):
    """The body of a causal LM plus a scalar `score` head: a sequence-classification model with
    `num_labels=1` for any architecture. The body keeps the attribute name it has in the causal LM
    (`base_model_prefix`), so the saved weights are the causal LM's own names."""

    supports_gradient_checkpointing = True
    _supports_sdpa = True

    def __init__(self, causal_lm: PreTrainedModel):
        config = causal_lm.config
        config.num_labels = 1
        setattr(config, VALUE_HEAD_MARKER, True)
        super().__init__(config)
        self.base_model_prefix = causal_lm.base_model_prefix
        body = causal_lm.base_model
        if body is causal_lm:
            raise ValueError(f"{type(causal_lm).__name__} exposes no body (base_model) to put a value head on.")
        setattr(self, self.base_model_prefix, body)
        self.score = nn.Linear(config.get_text_config().hidden_size, 1, bias=False)
        nn.init.normal_(self.score.weight, std=1.0 / (config.get_text_config().hidden_size + 1) ** 0.5)
        self.score.to(next(body.parameters()).dtype)
        self._auto_class = getattr(causal_lm, "_auto_class", None)
        self.post_init()

    def get_input_embeddings(self):
        return self.base_model.get_input_embeddings()

    def set_input_embeddings(self, value):
        self.base_model.set_input_embeddings(value)

    def _init_weights(self, module):
        """The body is pretrained and the head initialised in `__init__`: nothing to (re)initialise."""

    def forward(self, input_ids=None, attention_mask=None, position_ids=None, return_dict=None, **kwargs):
        """Scores at each row's last real token (the last 1 of `attention_mask`), B x 1. Labels and the other
        keyword arguments of a sequence-classification forward are accepted and unused."""
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        hidden = batch_first_hidden_states(self.base_model, input_ids, attention_mask, position_ids)
        values = self.score(hidden.to(self.score.weight.dtype)).squeeze(-1)
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        last = (attention_mask.bool() * positions).argmax(dim=1)
        logits = values[torch.arange(values.shape[0], device=values.device), last].unsqueeze(-1)
        return SequenceClassifierOutputWithPast(logits=logits)

    def save_pretrained(self, save_directory, *args, **kwargs):
        super().save_pretrained(save_directory, *args, **kwargs)
        if self._auto_class is not None:  # remote code: copy the model's .py files next to the weights
            custom_object_save(self, save_directory, config=self.config)


def load_value_head_model(name: str, config: PretrainedConfig, **from_pretrained_kwargs) -> CausalLMWithValueHead:
    """A `CausalLMWithValueHead` from a causal-LM checkpoint (fresh head) or from one saved as a value-head
    model (its trained head)."""
    from_saved = getattr(config, VALUE_HEAD_MARKER, False)
    causal_lm = AutoModelForCausalLM.from_pretrained(name, config=config, **from_pretrained_kwargs)
    model = CausalLMWithValueHead(causal_lm)
    if from_saved:
        _load_head(model, name, from_pretrained_kwargs.get("revision"))
    return model


def _load_head(model: CausalLMWithValueHead, name: str, revision: str | None) -> None:
    index = cached_file(name, "model.safetensors.index.json", revision=revision,
                        _raise_exceptions_for_missing_entries=False)
    filename = "model.safetensors"
    if index is not None:
        with open(index) as handle:
            filename = json.load(handle)["weight_map"]["score.weight"]
    with safe_open(cached_file(name, filename, revision=revision), framework="pt") as weights:
        model.score.weight.data.copy_(weights.get_tensor("score.weight"))
