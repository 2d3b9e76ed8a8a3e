"""Gold metrics on hand-made answers, the ranked-first rate, and the held-out corpus of the alignment tax."""

import random

import pytest
import torch

from rlhf_recipes.demo.metrics import gold_metrics, heldout_corpus, ranked_first_rate
from rlhf_recipes.demo.task import (
    VOCABULARY,
    TaskSettings,
    apply_op,
    corpus_records,
    gold_answer,
    parse_prompt,
    split_prompts,
)
from rlhf_recipes.models import build_word_tokenizer

PROMPTS = ["Q: max 3 7 1 4 A:", "Q: max 1 2 3 9 A:", "Q: max 5 5 0 2 A:"]


@pytest.fixture(scope="module")
def tokenizer():
    return build_word_tokenizer(VOCABULARY)


class GoldRewardModel(torch.nn.Module):
    """Scores +1 for exactly the correct answer then EOS, else -1, or the reverse when `inverted`."""

    def __init__(self, tokenizer, inverted=False):
        super().__init__()
        self.tokenizer, self.sign = tokenizer, -1.0 if inverted else 1.0

    def forward(self, input_ids, attention_mask):
        scores = []
        for row, mask in zip(input_ids, attention_mask):
            text = self.tokenizer.decode(row[mask.bool()])
            prompt, answer = text.split("A:", 1)
            good = answer.split() == [gold_answer(prompt + "A:"), "</s>"]
            scores.append(self.sign * (1.0 if good else -1.0))
        return type("Output", (), {"logits": torch.tensor(scores)[:, None]})()


def test_gold_metrics_on_hand_made_answers():
    prompts = ["Q: max 3 7 1 4 A:", "Q: max 1 2 3 9 A:", "Q: max 1 2 3 9 A:", "Q: max 5 5 0 2 A:"]
    metrics = gold_metrics(prompts, ["7", "1", "9 9 9", "5"], "greedy")
    assert metrics["greedy_accuracy"] == 0.5
    assert metrics["greedy_accuracy_hard"] == 0.0


def test_ranked_first_rate_tells_a_gold_rm_from_an_inverted_one(tokenizer):
    assert ranked_first_rate(GoldRewardModel(tokenizer), tokenizer, PROMPTS) == 1.0
    assert ranked_first_rate(GoldRewardModel(tokenizer, inverted=True), tokenizer, PROMPTS) == 0.0


def test_heldout_corpus_is_new_stage0_style_text_drawn_without_the_global_generators():
    settings = TaskSettings(num_corpus=4000)
    state = random.getstate()
    texts = heldout_corpus(0, settings)
    assert random.getstate() == state  # the run's seeded draws are untouched
    assert len(texts) == len(set(texts)) == 500 and texts == heldout_corpus(0, settings)
    trained = {r["prompt"] + r["completion"] for r in corpus_records(split_prompts(0, settings).heldout, 0, settings)}
    assert trained.isdisjoint(texts)
    ops = {text.split()[1] for text in texts}
    assert ops == {"first", "last", "min"}  # the corpus's questions, never the task's `max`
    for text in texts:  # each answer is right for its question
        prompt, answer = text.rsplit(" ", 1)
        assert answer == str(apply_op(parse_prompt(prompt), prompt.split()[1]))
    assert heldout_corpus(1, settings) != texts
