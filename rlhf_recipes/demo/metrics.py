"""The demo task's gold measures, which use its checker (`task.score_answer`) and trust no model, and
how often the reward model ranks the correct answer first."""

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ..models.measure import reward_scores
from .task import gold_answer, is_hard, parse_prompt, score_answer

DIGIT_CANDIDATES = [str(d) for d in range(10)]


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
