"""Rollout: prompts -> sampled responses -> the tensors PPO needs (masks, logprobs, values).

Every no-grad pass runs in chunks of `chunk_size` rows grouped by length, each cut to its real
columns (`microbatches`). Sequences are laid out as [left-padded prompt | response padded on the
right]; attention masks are built from the prompt padding and the response mask, never from the
pad id (pad is often EOS).
"""

from contextlib import nullcontext
from dataclasses import dataclass

import torch
from peft import PeftModel
from transformers import PreTrainedTokenizerBase

from ..models.generation import SamplingConfig, forward_accepts, logprobs_from_logits, position_ids_from
from ..models.generation import sample_responses
from ..models.value_head import batch_first_hidden_states
from . import microbatches


def supports_logits_to_keep(model) -> bool:
    return forward_accepts(model, "logits_to_keep")


def response_logits(model, input_ids, attention_mask, num_response_tokens: int, keep_only: bool) -> torch.Tensor:
    """Logits predicting each response token: positions P-1 .. P+R-2 of a P+R sequence. With
    `keep_only`, the LM head runs on those positions alone (`logits_to_keep`)."""
    kwargs = {"logits_to_keep": num_response_tokens + 1} if keep_only else {}
    out = model(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=position_ids_from(attention_mask),
        use_cache=False,
        **kwargs,
    )
    return out.logits[:, -num_response_tokens - 1 : -1]


class ValueModel(torch.nn.Module):
    """A sequence-classification model (reward-model class) read at every position: the scalar
    head applied to each token's last hidden state, B x T. Used for the critic (V(s_t)) and for
    reward models (read at the last real token). Wrapping it as one module lets DDP sync it.

    The model may be a `PeftModel` (LoRA critic): its base model's backbone, with the LoRA layers
    injected, and its `score` (a `modules_to_save` copy, or the original head with the adapter
    disabled) are read instead of the PEFT wrapper's pooled forward."""

    def __init__(self, model):
        super().__init__()
        if not hasattr(model, "score"):
            raise ValueError(
                f"{type(model).__name__} has no `score` head; reward and value models must be "
                "AutoModelForSequenceClassification models with num_labels=1."
            )
        self.model = model

    @property
    def network(self):
        """The sequence-classification model itself, inside its PEFT wrapper if there is one."""
        return self.model.get_base_model() if isinstance(self.model, PeftModel) else self.model

    @property
    def _no_split_modules(self):
        """The network's decoder-layer classes: FSDP's transformer wrap policy shards one unit per layer."""
        return getattr(self.network, "_no_split_modules", None)

    @property
    def backbone(self):
        network = self.network
        return getattr(network, network.base_model_prefix)

    def forward(self, input_ids, attention_mask):
        hidden = batch_first_hidden_states(self.backbone, input_ids, attention_mask, position_ids_from(attention_mask))
        head = self.network.score
        weight = next(head.parameters(), None)  # None for a parameter-free head (a Python reward)
        if weight is not None:
            # a 4/16-bit backbone can feed an fp32 head (the LoRA critic's trained copy) outside autocast
            hidden = hidden.to(weight.dtype)
        return head(hidden).squeeze(-1)


def sampling_config(args, tokenizer: PreTrainedTokenizerBase, stop_token_ids: list[int]) -> SamplingConfig:
    """The rollout's sampling settings; nothing saved with the model (repetition penalty...) leaks in."""
    return SamplingConfig(
        max_new_tokens=args.response_length,
        pad_token_id=tokenizer.pad_token_id,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        stop_token_ids=tuple(stop_token_ids),
    )


@dataclass
class Rollout:
    """One rollout batch on one rank. Response tensors are B x R (R = longest response here)."""

    indices: list[int]
    prompt_ids: torch.Tensor
    prompt_mask: torch.Tensor
    responses: torch.Tensor
    response_mask: torch.Tensor
    has_stop: torch.Tensor
    logprobs: torch.Tensor | None = None
    ref_logprobs: torch.Tensor | None = None
    values: torch.Tensor | None = None

    @property
    def input_ids(self) -> torch.Tensor:
        return torch.cat([self.prompt_ids, self.responses], dim=1)

    @property
    def attention_mask(self) -> torch.Tensor:
        return torch.cat([self.prompt_mask, self.response_mask], dim=1)

    @property
    def last_token_index(self) -> torch.Tensor:
        """Index in `input_ids` of each row's last real token (the stop token when there is one)."""
        return self.prompt_ids.shape[1] + self.response_mask.sum(1) - 1


# no_grad, not inference_mode: ZeRO-3 frees a gathered weight by giving it a new empty tensor, which inference
# mode would make an inference tensor, and peft then cannot re-enable a LoRA weight's requires_grad
@torch.no_grad()
def collect_rollout(
    indices: list[int],
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    policy,
    ref_policy,
    ref_context,
    critic: ValueModel,
    config: SamplingConfig,
    chunk_size: int,
    sampling_context=nullcontext,
) -> Rollout:
    """Sample responses with the KV cache (which also gives the policy's logprobs, log softmax of
    logits / temperature at the sampled tokens), mask everything after the first stop token, then
    one forward pass each for the reference logprobs (same temperature) and for the critic's values
    V(s_t) = head output at the token before t. Neither is read after a response; past the longest
    response of a chunk both are 0.

    `ref_context()` is entered around the reference pass; with LoRA it disables the adapter of
    `ref_policy`, which is then the policy itself. `sampling_context()` is entered once around all of
    the sampling (under ZeRO-3 it gathers the policy's weights for the whole rollout).
    """
    with sampling_context():
        responses, response_mask, has_stop, logprobs = sample_responses(
            policy, prompt_ids, prompt_mask, config, chunk_size
        )
    keep_only = supports_logits_to_keep(ref_policy)
    parts = microbatches.chunks(prompt_mask, response_mask, chunk_size)

    def ref_logprobs_of(chunk):
        ids, mask = chunk.sequences(prompt_ids, responses), chunk.sequences(prompt_mask, response_mask)
        logits = response_logits(ref_policy, ids, mask, chunk.response_width, keep_only).float() / config.temperature
        return logprobs_from_logits(logits, chunk.response(responses))

    def values_of(chunk):
        ids, mask = chunk.sequences(prompt_ids, responses), chunk.sequences(prompt_mask, response_mask)
        return critic(ids, mask)[:, -chunk.response_width - 1 : -1].float()

    with ref_context():
        ref_logprobs = microbatches.over_chunks(ref_logprobs_of, parts, responses.shape[1])
    values = microbatches.over_chunks(values_of, parts, responses.shape[1])
    return Rollout(
        indices=list(indices),
        prompt_ids=prompt_ids,
        prompt_mask=prompt_mask,
        responses=responses,
        response_mask=response_mask,
        has_stop=has_stop,
        logprobs=logprobs,
        ref_logprobs=ref_logprobs,
        values=values,
    )
