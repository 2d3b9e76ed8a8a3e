"""The evaluation step's metrics for any task: repetition and length on hand-made answers, RM score as
the reward model gives it, KL zero against itself and positive against another policy, gold metrics
only with a task that has them."""

import pytest
from transformers import set_seed

from rlhf_recipes.models.measure import generate_responses, reward_scores
from rlhf_recipes.demo.provider import MaxDigitTask
from rlhf_recipes.demo.task import VOCABULARY
from rlhf_recipes.models import build_tiny_model, build_word_tokenizer
from rlhf_recipes.pipeline.evaluation import evaluate_policy, text_metrics
from rlhf_recipes.pipeline.tasks import TaskProvider

PROMPTS = ["Q: max 3 7 1 4 A:", "Q: max 1 2 3 9 A:", "Q: max 5 5 0 2 A:"]


@pytest.fixture(scope="module")
def tokenizer():
    return build_word_tokenizer(VOCABULARY)


@pytest.fixture(scope="module")
def policy(tokenizer):
    set_seed(0)
    return build_tiny_model("tiny:opt", tokenizer).eval()


@pytest.fixture(scope="module")
def reward_model(tokenizer):
    set_seed(1)
    return build_tiny_model("tiny:opt", tokenizer, task="seq-cls").eval()


def test_text_metrics_on_hand_made_answers():
    metrics = text_metrics(["7", "1", "9 9 9", "5 4 5", ""], "sampled")
    assert metrics == {"sampled_repetition": 0.2, "sampled_length": 1.6}


def test_without_gold_every_generic_metric_and_zero_kl_to_itself(policy, tokenizer, reward_model):
    evaluation = evaluate_policy(policy, tokenizer, PROMPTS, reward_model=reward_model, reference=policy, seed=0)
    metrics = evaluation.metrics
    assert metrics["kl_to_sft"] == pytest.approx(0.0, abs=1e-5)
    greedy = generate_responses(policy, tokenizer, PROMPTS, do_sample=False)
    assert metrics["greedy_rm_score"] == pytest.approx(reward_scores(reward_model, tokenizer, PROMPTS, greedy).mean().item())
    assert metrics["greedy_length"] == sum(len(a.split()) for a in evaluation.greedy_answers) / 3
    assert {"sampled_tokens", "sampled_eos_rate", "sampled_repetition", "sampled_rm_score"} <= set(metrics)
    assert not any("accuracy" in key for key in metrics)
    assert evaluate_policy(policy, tokenizer, PROMPTS, task=TaskProvider()).metrics.keys() == {
        "sampled_tokens", "sampled_eos_rate", "greedy_repetition", "greedy_length", "sampled_repetition",
        "sampled_length",
    }


def test_a_gold_task_adds_its_metrics_and_kl_to_another_policy_is_positive(policy, tokenizer):
    set_seed(2)
    other = build_tiny_model("tiny:opt", tokenizer).eval()
    evaluation = evaluate_policy(policy, tokenizer, PROMPTS * 30, reference=other, task=MaxDigitTask())
    assert evaluation.metrics["kl_to_sft"] > 0
    expected = MaxDigitTask().gold_metrics(PROMPTS * 30, evaluation.greedy_answers, "greedy")
    assert {k: evaluation.metrics[k] for k in expected} == expected
    assert "sampled_accuracy_hard" in evaluation.metrics
