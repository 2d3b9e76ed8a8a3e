"""Measuring policies and reward models on any prompts: sampled or greedy responses, their
log-probabilities under a policy, and a reward model's scores. The pipeline's selection and evaluation
steps and the demo's gold checks use them."""

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from .generation import SamplingConfig, generate, left_pad, tokenize_prompts


def generate_responses(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list,
    do_sample: bool,
    temperature: float = 1.0,
    max_new_tokens: int = 8,
    seed: int = 0,
    batch_size: int = 256,
    max_prompt_length: int | None = None,
) -> list[list[int]]:
    """Response token ids per prompt, cut after the first EOS (kept) and without padding: a pad token
    the model generates counts as padding too (unless pad is EOS).

    Sampling is plain ancestral sampling at `temperature` (no top-k/top-p), seeded.
    """
    model.eval()
    torch.manual_seed(seed)
    pad, eos = tokenizer.pad_token_id, tokenizer.eos_token_id
    config = SamplingConfig(max_new_tokens, pad, temperature, stop_token_ids=(eos,), greedy=not do_sample)
    responses = generate(model, tokenizer, prompts, config, batch_size, max_prompt_length)
    return [[token for token in row if token != pad or pad == eos] for row in responses]


def _batches(tokenizer, prompts: list, responses: list[list[int]], batch_size: int, max_prompt_length: int | None):
    """(input_ids, attention_mask, responses) per batch: each prompt's tokens then its response, left-padded."""
    encoded, _ = tokenize_prompts(prompts, tokenizer, max_prompt_length)
    for start in range(0, len(encoded), batch_size):
        rows = responses[start : start + batch_size]
        input_ids, attention = left_pad([p + r for p, r in zip(encoded[start : start + batch_size], rows)],
                                        tokenizer.pad_token_id)
        yield input_ids, attention, rows


@torch.no_grad()
def sequence_logprobs(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[str],
    responses: list[list[int]],
    batch_size: int = 256,
    max_prompt_length: int | None = None,
) -> torch.Tensor:
    """log p(response | prompt) under `model`, summed over the response tokens."""
    model.eval()
    totals = []
    for input_ids, attention, response_rows in _batches(tokenizer, prompts, responses, batch_size, max_prompt_length):
        logits = model(input_ids=input_ids, attention_mask=attention).logits[:, :-1].float()
        token_logprobs = torch.log_softmax(logits, dim=-1).gather(-1, input_ids[:, 1:, None]).squeeze(-1)
        width = input_ids.shape[1]
        mask = torch.zeros_like(token_logprobs)
        for i, response in enumerate(response_rows):
            if response:
                mask[i, width - 1 - len(response) :] = 1.0
        totals.append((token_logprobs * mask).sum(-1))
    return torch.cat(totals)


@torch.no_grad()
def reward_scores(
    reward_model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[str],
    responses: list[list[int]],
    batch_size: int = 256,
    max_prompt_length: int | None = None,
) -> torch.Tensor:
    """The reward model's scalar score of each prompt + response (token ids as generated)."""
    reward_model.eval()
    return torch.cat([
        reward_model(input_ids=input_ids, attention_mask=attention).logits[:, 0].float()
        for input_ids, attention, _ in _batches(tokenizer, prompts, responses, batch_size, max_prompt_length)
    ])
