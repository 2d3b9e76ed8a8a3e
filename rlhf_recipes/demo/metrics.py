"""The demo task's gold measures, which use its checker (`task.score_answer`) and trust no model, how
often the reward model ranks the correct answer first, and the held-out pretraining-style texts on
which the alignment tax is measured."""

from dataclasses import replace

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ..models.measure import reward_scores
from .task import TaskSettings, corpus_records, gold_answer, is_hard, parse_prompt, score_answer, split_prompts

DIGIT_CANDIDATES = [str(d) for d in range(10)]
HELDOUT_CORPUS_TEXTS = 500
HELDOUT_CORPUS_SEED_OFFSET = 1000  # benchmarks/alignment_tax_demo.py draws the same texts


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


def heldout_corpus(seed: int, settings: TaskSettings, count: int = HELDOUT_CORPUS_TEXTS) -> list[str]:
    """`count` pretraining-style texts (prompt + answer) that the stage-0 corpus of `seed` does not contain,
    drawn like it (first/last/min questions, never `max`) with the corpus seed `seed + 1000`.

    Made with `random.Random` instances of their own: nothing is drawn from Python's or torch's global
    generators, so measuring on them leaves every seeded result of the run unchanged.
    """
    heldout_prompts = split_prompts(seed, settings).heldout
    trained = {record["prompt"] for record in corpus_records(heldout_prompts, seed, settings)}
    fresh = corpus_records(heldout_prompts, seed + HELDOUT_CORPUS_SEED_OFFSET, replace(settings, num_corpus=2 * count))
    texts = [r["prompt"] + r["completion"] for r in fresh if r["prompt"] not in trained][:count]
    if len(texts) < count:
        raise ValueError(f"Only {len(texts)} of {count} held-out corpus texts are new for seed {seed}.")
    return texts
