"""Text generation for every part of the library: PPO rollouts, evaluation, chat and make-pairs.

`sample` draws token by token with the KV cache: per token one cached forward pass, then
temperature, top-k and top-p (the semantics and order of transformers' warpers), a draw, and the
stop-token bookkeeping, without `model.generate`'s per-token logits-processor and
stopping-criteria machinery (~10% of its time on the tiny benchmark model, ~15% with inference
mode). Its draws are those of `generate` with the same settings (one `torch.multinomial` per token
over softmax(logits / T)). It also returns log softmax(logits / T) of each sampled token, the
distribution the PPO loss recomputes, so a rollout needs no separate forward pass for the old
policy's logprobs. It stops only at the configured stop tokens and applies nothing saved with the
model (repetition penalty, a generation config's top-k...).

`generate` is the batch helper on top: prompts (strings or chat messages) in, response token ids
out. Sequences are [left-padded prompt | response padded on the right].
"""

import inspect
from dataclasses import dataclass

import torch
from transformers import PreTrainedTokenizerBase

from ..data.records import is_messages
from ..data.truncation import fit_chat_prompt


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


def logprobs_from_logits(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """log softmax(logits)[token] = logit[token] - logsumexp(logits), without a B x T x V log-softmax."""
    picked = logits.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
    return picked - torch.logsumexp(logits, dim=-1)


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


def tokenize_prompts(
    prompts: list, tokenizer: PreTrainedTokenizerBase, max_prompt_length: int | None = None
) -> tuple[list[list[int]], list[int]]:
    """Token ids of each prompt, at most `max_prompt_length` of them. Chat prompts get the tokenizer's
    chat template with the generation prompt and are shortened inside the conversation (oldest turns,
    then the start of the first user message: `data.truncation.fit_chat_prompt`); text prompts keep
    their last tokens (DeepSpeed-Chat keeps the end, next to where the response starts). Returns (ids,
    positions of the prompts that were shortened)."""
    ids, truncated = [], []
    for position, prompt in enumerate(prompts):
        if is_messages(prompt):
            tokens, shortened = fit_chat_prompt(prompt, tokenizer, max_prompt_length)
            if shortened:
                truncated.append(position)
        elif isinstance(prompt, str):
            tokens = tokenizer(prompt)["input_ids"]
        else:
            raise TypeError(f"A prompt must be a string or a list of chat messages, got {type(prompt).__name__}.")
        if not tokens:
            raise ValueError(f"Prompt {prompt!r} tokenizes to nothing.")
        if max_prompt_length is not None and len(tokens) > max_prompt_length:
            truncated.append(position)
            tokens = tokens[-max_prompt_length:]
        ids.append(tokens)
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


def sample_responses(
    model, prompt_ids, prompt_mask, config: SamplingConfig, chunk_size: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(responses, response_mask, has_stop, logprobs): sampled in row chunks, cut after the first
    stop token (the rest becomes pad) and trimmed to the longest response. `logprobs` are those of
    the sampled tokens under softmax(logits / temperature)."""
    chunks = [
        sample(model, prompt_ids[i : i + chunk_size], prompt_mask[i : i + chunk_size], config)
        for i in range(0, prompt_ids.shape[0], chunk_size)
    ]
    responses, logprobs = (torch.cat(parts) for parts in zip(*chunks, strict=True))
    response_mask, has_stop = stop_mask(responses, list(config.stop_token_ids))
    width = int(response_mask.sum(1).max())
    response_mask = response_mask[:, :width]
    responses = responses[:, :width].masked_fill(response_mask == 0, config.pad_token_id)
    return responses, response_mask, has_stop, logprobs[:, :width]


def stop_tokens_of(model, tokenizer: PreTrainedTokenizerBase) -> tuple[int, ...]:
    """The tokenizer's EOS and the EOS ids of the model's generation config (a chat model may end its
    turn with a token of its own, e.g. Qwen's `<|im_end|>` next to `<|endoftext|>`)."""
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    configured = configured if isinstance(configured, list) else [configured]
    ids = [tokenizer.eos_token_id, *configured]
    return tuple(dict.fromkeys(i for i in ids if i is not None))


def generate(
    model,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list,
    config: SamplingConfig,
    batch_size: int,
    max_prompt_length: int | None = None,
) -> list[list[int]]:
    """Response token ids of `model` per prompt (a string or chat messages, see `tokenize_prompts`),
    cut after the first stop token (kept) and without padding. Prompts go in batches of
    `batch_size`; sampling draws from torch's global generator (seed it for repeatable samples)."""
    encoded, _ = tokenize_prompts(prompts, tokenizer, max_prompt_length)
    device = next(model.parameters()).device
    responses = []
    for start in range(0, len(encoded), batch_size):
        prompt_ids, prompt_mask = left_pad(encoded[start : start + batch_size], config.pad_token_id)
        tokens, mask, _, _ = sample_responses(model, prompt_ids.to(device), prompt_mask.to(device), config, batch_size)
        responses += [row[keep.bool()].tolist() for row, keep in zip(tokens, mask, strict=True)]
    return responses
