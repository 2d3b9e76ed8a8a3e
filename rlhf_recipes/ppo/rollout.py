"""Rollout: prompts -> sampled responses -> the tensors PPO needs (masks, logprobs, values).

Every no-grad pass runs in chunks of `chunk_size` rows. Sequences are laid out as
[left-padded prompt | response padded on the right]; attention masks are built from the
prompt padding and the response mask, never from the pad id (pad is often EOS).
"""

import inspect
from dataclasses import dataclass

import torch
from transformers import GenerationConfig, PreTrainedTokenizerBase

from .losses import logprobs_from_logits


def is_conversational(prompt) -> bool:
    return isinstance(prompt, list) and (not prompt or isinstance(prompt[0], dict))


def tokenize_prompts(
    prompts: list, tokenizer: PreTrainedTokenizerBase, max_prompt_length: int
) -> tuple[list[list[int]], list[int]]:
    """Token ids of each prompt, keeping its last `max_prompt_length` tokens (DeepSpeed-Chat keeps
    the end, next to where the response starts). Chat prompts get the tokenizer's chat template
    with the generation prompt. Returns (ids, positions of the prompts that were truncated)."""
    ids, truncated = [], []
    for position, prompt in enumerate(prompts):
        if is_conversational(prompt):
            text = tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
            tokens = tokenizer(text, add_special_tokens=False)["input_ids"]
        elif isinstance(prompt, str):
            tokens = tokenizer(prompt)["input_ids"]
        else:
            raise TypeError(f"A prompt must be a string or a list of chat messages, got {type(prompt).__name__}.")
        if not tokens:
            raise ValueError(f"Prompt {prompt!r} tokenizes to nothing.")
        if len(tokens) > max_prompt_length:
            truncated.append(position)
        ids.append(tokens[-max_prompt_length:])
    return ids, truncated


def left_pad(sequences: list[list[int]], pad_token_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask), both B x max_len, padded on the left for generation."""
    width = max(len(seq) for seq in sequences)
    input_ids = torch.full((len(sequences), width), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        input_ids[row, width - len(seq) :] = torch.tensor(seq, dtype=torch.long)
        attention_mask[row, width - len(seq) :] = 1
    return input_ids, attention_mask


def stop_mask(responses: torch.Tensor, stop_token_ids: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Mask of real response tokens: everything up to and including the first stop token; all of
    a response without one. Returns (mask as long, has_stop as bool per row)."""
    positions = torch.arange(responses.shape[1], device=responses.device)
    if not stop_token_ids:
        return torch.ones_like(responses), torch.zeros(responses.shape[0], dtype=torch.bool, device=responses.device)
    is_stop = torch.isin(responses, torch.tensor(stop_token_ids, device=responses.device))
    has_stop = is_stop.any(dim=1)
    first_stop = torch.where(has_stop, is_stop.long().argmax(dim=1), responses.shape[1] - 1)
    return (positions.unsqueeze(0) <= first_stop.unsqueeze(1)).long(), has_stop


def position_ids_from(attention_mask: torch.Tensor) -> torch.Tensor:
    """0, 1, 2, ... over real tokens (left padding gets 0), as generation computes them."""
    return (attention_mask.cumsum(1) - 1).clamp(min=0)


def supports_logits_to_keep(model) -> bool:
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "logits_to_keep" in inspect.signature(base.forward).parameters


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
    reward models (read at the last real token). Wrapping it as one module lets DDP sync it."""

    def __init__(self, model):
        super().__init__()
        if not hasattr(model, "score"):
            raise ValueError(
                f"{type(model).__name__} has no `score` head; reward and value models must be "
                "AutoModelForSequenceClassification models with num_labels=1."
            )
        self.model = model

    @property
    def backbone(self):
        return getattr(self.model, self.model.base_model_prefix)

    def forward(self, input_ids, attention_mask):
        hidden = self.backbone(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids_from(attention_mask),
            use_cache=False,
        )[0]
        return self.model.score(hidden).squeeze(-1)


def generation_config(args, tokenizer: PreTrainedTokenizerBase, stop_token_ids: list[int]) -> GenerationConfig:
    """A fresh sampling config, so settings saved with the model (repetition penalty...) do not leak in."""
    return GenerationConfig(
        max_new_tokens=args.response_length,
        do_sample=True,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        eos_token_id=stop_token_ids or None,
        pad_token_id=tokenizer.pad_token_id,
        use_cache=True,
    )


@torch.no_grad()
def generate(model, input_ids, attention_mask, config: GenerationConfig, chunk_size: int) -> torch.Tensor:
    """Sampled responses, B x response_length, padded with the pad id after a row ends."""
    width = config.max_new_tokens
    out = torch.full((input_ids.shape[0], width), config.pad_token_id, dtype=torch.long, device=input_ids.device)
    for start in range(0, input_ids.shape[0], chunk_size):
        rows = slice(start, start + chunk_size)
        sequences = model.generate(
            input_ids=input_ids[rows], attention_mask=attention_mask[rows], generation_config=config
        )
        responses = sequences[:, input_ids.shape[1] :]
        out[rows, : responses.shape[1]] = responses
    return out


def sample_responses(
    policy, prompt_ids, prompt_mask, config: GenerationConfig, stop_token_ids: list[int], chunk_size: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(responses, response_mask, has_stop): generated, cut after the first stop token (the rest
    becomes pad) and trimmed to the longest response."""
    responses = generate(policy, prompt_ids, prompt_mask, config, chunk_size)
    response_mask, has_stop = stop_mask(responses, stop_token_ids)
    width = int(response_mask.sum(1).max())
    response_mask = response_mask[:, :width]
    return responses[:, :width].masked_fill(response_mask == 0, config.pad_token_id), response_mask, has_stop


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


@torch.no_grad()
def chunked(fn, chunk_size: int, *tensors: torch.Tensor) -> torch.Tensor:
    """fn over row chunks of the tensors, concatenated."""
    return torch.cat([fn(*(t[i : i + chunk_size] for t in tensors)) for i in range(0, tensors[0].shape[0], chunk_size)])


@torch.no_grad()
def collect_rollout(
    indices: list[int],
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    policy,
    ref_policy,
    ref_context,
    critic: ValueModel,
    config: GenerationConfig,
    stop_token_ids: list[int],
    temperature: float,
    chunk_size: int,
) -> Rollout:
    """Sample responses with the KV cache, mask everything after the first stop token, then one
    forward pass each for policy and reference logprobs (logits / temperature, the distribution
    that was sampled) and for the critic's values V(s_t) = head output at the token before t.

    `ref_context()` is entered around the reference pass; with LoRA it disables the adapter of
    `ref_policy`, which is then the policy itself.
    """
    responses, response_mask, has_stop = sample_responses(
        policy, prompt_ids, prompt_mask, config, stop_token_ids, chunk_size
    )
    width = responses.shape[1]
    input_ids = torch.cat([prompt_ids, responses], dim=1)
    attention_mask = torch.cat([prompt_mask, response_mask], dim=1)

    def logprobs_of(model):
        keep_only = supports_logits_to_keep(model)

        def fn(ids, mask, targets):
            logits = response_logits(model, ids, mask, width, keep_only) / temperature
            return logprobs_from_logits(logits.float(), targets)

        return chunked(fn, chunk_size, input_ids, attention_mask, responses)

    logprobs = logprobs_of(policy)
    with ref_context():
        ref_logprobs = logprobs_of(ref_policy)
    values = chunked(
        lambda ids, mask: critic(ids, mask)[:, -width - 1 : -1].float(), chunk_size, input_ids, attention_mask
    )
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
