"""Measuring policies and reward models: generation, log-probabilities and RM scores for any prompts
(the pipeline's selection and evaluation steps use them), and the demo task's gold measures, which
use its checker (`task.score_answer`) and trust no model.
"""

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ..models.generation import SamplingConfig, generate, left_pad, tokenize_prompts
from .task import gold_answer, is_hard, parse_prompt, score_answer

DIGIT_CANDIDATES = [str(d) for d in range(10)]


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
    encoded, _ = tokenize_prompts(prompts, tokenizer, max_prompt_length)
    totals = []
    for start in range(0, len(encoded), batch_size):
        prompt_rows = encoded[start : start + batch_size]
        response_rows = responses[start : start + batch_size]
        input_ids, attention = left_pad([p + r for p, r in zip(prompt_rows, response_rows)], tokenizer.pad_token_id)
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
    encoded, _ = tokenize_prompts(prompts, tokenizer, max_prompt_length)
    scores = []
    for start in range(0, len(encoded), batch_size):
        rows = [p + r for p, r in zip(encoded[start : start + batch_size], responses[start : start + batch_size])]
        input_ids, attention = left_pad(rows, tokenizer.pad_token_id)
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
