"""Token-by-token sampling with the KV cache, keeping each sampled token's logprob.

A lean stand-in for `model.generate` in the rollout: per token one cached forward pass, then
temperature, top-k and top-p (the semantics and order of transformers' warpers), a draw, and the
stop-token bookkeeping, without generate's per-token logits-processor and stopping-criteria
machinery (~10% of its time on the tiny benchmark model, ~15% with inference mode). It also
returns log softmax(logits / T) of each sampled token, the distribution the PPO loss recomputes,
so the rollout needs no separate forward pass for the old policy's logprobs. It stops only at the
configured stop tokens: unlike `generate`, never at an EOS named in the model's generation config.
"""

import inspect
from dataclasses import dataclass

import torch

from .losses import logprobs_from_logits


@dataclass(frozen=True)
class SamplingConfig:
    """How responses are drawn. `greedy` takes the most likely token (temperature, top-k and
    top-p are then ignored for the choice; the logprobs still use the temperature)."""

    max_new_tokens: int
    pad_token_id: int
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    stop_token_ids: tuple[int, ...] = ()
    greedy: bool = False


def position_ids_from(attention_mask: torch.Tensor) -> torch.Tensor:
    """0, 1, 2, ... over real tokens (left padding gets 0), as generation computes them."""
    return (attention_mask.cumsum(1) - 1).clamp(min=0)


def forward_accepts(model, name: str) -> bool:
    """Whether the forward of `model` (of the base model under a PEFT wrapper) has parameter `name`."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return name in inspect.signature(base.forward).parameters


def filter_logits(logits: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    """-inf outside the `top_k` largest logits (0 = all; ties with the k-th stay), then outside the
    smallest set of most likely tokens whose probability reaches `top_p` (the most likely token
    always stays): transformers' TopKLogitsWarper followed by TopPLogitsWarper."""
    if 0 < top_k < logits.shape[-1]:
        kth_largest = torch.topk(logits, top_k).values[..., -1:]
        logits = logits.masked_fill(logits < kth_largest, float("-inf"))
    if top_p < 1.0:
        ascending, order = torch.sort(logits)
        # drop the least likely tokens while everything dropped so far has probability <= 1 - top_p
        drop = ascending.softmax(-1).cumsum(-1) <= 1.0 - top_p
        drop[..., -1] = False
        logits = logits.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
    return logits


def next_tokens(logits: torch.Tensor, config: SamplingConfig) -> torch.Tensor:
    """One token per row from temperature-scaled logits (B x V)."""
    if config.greedy:
        return logits.argmax(-1)
    probs = filter_logits(logits, config.top_k, config.top_p).softmax(-1)
    return torch.multinomial(probs, 1).squeeze(1)


@torch.inference_mode()
def sample(
    model, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, config: SamplingConfig
) -> tuple[torch.Tensor, torch.Tensor]:
    """Responses to left-padded prompts: (tokens, logprobs), both B x max_new_tokens.

    After a row's first stop token the row gets the pad token (its logprobs there are
    meaningless); the loop ends early once every row has stopped, leaving pad in the remaining
    columns.
    """
    # transformers 5.24 calls the KV cache `cache`; remote-code models keep `past_key_values`
    cache = "cache" if forward_accepts(model, "cache") else "past_key_values"
    keep_only = {"logits_to_keep": 1} if forward_accepts(model, "logits_to_keep") else {}
    batch, prompt_len = prompt_ids.shape
    device = prompt_ids.device
    width = config.max_new_tokens
    tokens = torch.full((batch, width), config.pad_token_id, dtype=torch.long, device=device)
    logprobs = torch.zeros((batch, width), dtype=torch.float32, device=device)
    attention = torch.cat([prompt_mask, prompt_mask.new_ones(batch, width)], dim=1)
    next_position = prompt_mask.sum(1, keepdim=True)
    stop_ids = torch.tensor(config.stop_token_ids, dtype=torch.long, device=device)
    running = torch.ones(batch, dtype=torch.bool, device=device)
    out = model(
        input_ids=prompt_ids,
        attention_mask=prompt_mask,
        position_ids=position_ids_from(prompt_mask),
        use_cache=True,
        **keep_only,
    )
    if out.get(cache) is None:
        raise ValueError(f"{type(model).__name__} returned no KV cache with use_cache=True; sampling needs one.")
    for t in range(width):
        logits = out.logits[:, -1].float() / config.temperature
        token = next_tokens(logits, config).masked_fill(~running, config.pad_token_id)
        tokens[:, t] = token
        logprobs[:, t] = logprobs_from_logits(logits, token)
        if config.stop_token_ids:
            running &= ~torch.isin(token, stop_ids)
            if not running.any():
                break
        if t + 1 < width:
            out = model(
                input_ids=token.unsqueeze(1),
                attention_mask=attention[:, : prompt_len + t + 1],
                position_ids=next_position + t,
                use_cache=True,
                **{cache: out[cache]},
            )
    return tokens, logprobs
