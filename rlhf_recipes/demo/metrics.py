"""Measuring policies and reward models: generation, log-probabilities and RM scores for any prompts
(the pipeline's selection and evaluation steps use them), and the demo task's gold measures, which
use its checker (`task.score_answer`) and trust no model.
"""

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from .task import gold_answer, is_hard, parse_prompt, score_answer

DIGIT_CANDIDATES = [str(d) for d in range(10)]


def _encode_prompts(tokenizer: PreTrainedTokenizerBase, prompts: list[str], max_prompt_length: int | None):
    ids = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    if max_prompt_length is not None:
        ids = [row[-max_prompt_length:] for row in ids]
    return ids


def _left_pad(rows: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        if row:
            input_ids[i, width - len(row) :] = torch.tensor(row)
            attention[i, width - len(row) :] = 1
    return input_ids, attention


def _truncate_after_eos(row: list[int], eos_id: int, pad_id: int) -> list[int]:
    out = []
    for token in row:
        if token == eos_id:
            return out + [token]
        if token != pad_id or pad_id == eos_id:
            out.append(token)
    return out


@torch.no_grad()
def generate_responses(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[str],
    do_sample: bool,
    temperature: float = 1.0,
    max_new_tokens: int = 8,
    seed: int = 0,
    batch_size: int = 256,
    max_prompt_length: int | None = None,
) -> list[list[int]]:
    """Response token ids per prompt, cut after the first EOS (kept) and without padding.

    Sampling is plain ancestral sampling at `temperature` (no top-k/top-p), seeded.
    """
    model.eval()
    torch.manual_seed(seed)
    encoded = _encode_prompts(tokenizer, prompts, max_prompt_length)
    sampling = dict(do_sample=True, temperature=temperature, top_k=0, top_p=1.0) if do_sample else dict(do_sample=False)
    responses = []
    for start in range(0, len(encoded), batch_size):
        input_ids, attention = _left_pad(encoded[start : start + batch_size], tokenizer.pad_token_id)
        output = model.generate(
            input_ids=input_ids,
            attention_mask=attention,
            max_new_tokens=max_new_tokens,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
            **sampling,
        )
        for row in output[:, input_ids.shape[1] :].tolist():
            responses.append(_truncate_after_eos(row, tokenizer.eos_token_id, tokenizer.pad_token_id))
    return responses


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
    encoded = _encode_prompts(tokenizer, prompts, max_prompt_length)
    totals = []
    for start in range(0, len(encoded), batch_size):
        prompt_rows = encoded[start : start + batch_size]
        response_rows = responses[start : start + batch_size]
        input_ids, attention = _left_pad([p + r for p, r in zip(prompt_rows, response_rows)], tokenizer.pad_token_id)
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
    encoded = _encode_prompts(tokenizer, prompts, max_prompt_length)
    scores = []
    for start in range(0, len(encoded), batch_size):
        rows = [p + r for p, r in zip(encoded[start : start + batch_size], responses[start : start + batch_size])]
        input_ids, attention = _left_pad(rows, tokenizer.pad_token_id)
        scores.append(reward_model(input_ids=input_ids, attention_mask=attention).logits[:, 0].float())
    return torch.cat(scores)


def _answer_ids(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]


def ranked_first_rate(reward_model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompts: list[str]) -> float:
    """How often the RM scores the correct answer strictly above every other candidate.

    Candidates per prompt: the ten one-digit answers and the correct digit repeated 2-4 times.
    Pair accuracy can be high while this is low, and PPO then finds the RM's blind spots.
    """
    wins = 0
    for prompt in prompts:
        correct = gold_answer(prompt)
        candidates = DIGIT_CANDIDATES + [" ".join([correct] * n) for n in (2, 3, 4)]
        responses = [_answer_ids(tokenizer, " " + c) for c in candidates]
        scores = reward_scores(reward_model, tokenizer, [prompt] * len(candidates), responses)
        best = scores[candidates.index(correct)]
        others = torch.cat([scores[: candidates.index(correct)], scores[candidates.index(correct) + 1 :]])
        wins += int(bool((best > others).all()))
    return wins / len(prompts)


def gold_metrics(prompts: list[str], answers: list[str], prefix: str) -> dict[str, float]:
    """Exact-match accuracy, on all prompts and on the hard subset."""
    scores = [score_answer(p, a) for p, a in zip(prompts, answers)]
    hard = [s for p, s in zip(prompts, scores) if is_hard(parse_prompt(p))]
    return {
        f"{prefix}_accuracy": sum(s.correct for s in scores) / len(scores),
        f"{prefix}_accuracy_hard": sum(s.correct for s in hard) / len(hard) if hard else float("nan"),
    }
