"""Generation cut at EOS, seeded sampling, log-probabilities and RM scores that do not depend on padding."""

import pytest
import torch
from transformers import set_seed

from rlhf_recipes.demo.task import VOCABULARY
from rlhf_recipes.models import build_tiny_model, build_word_tokenizer
from rlhf_recipes.models.measure import generate_responses, reward_scores, sequence_logprobs

PROMPTS = ["Q: max 3 7 1 4 A:", "Q: max 1 2 3 9 A:", "Q: max 5 5 0 2 A:"]


@pytest.fixture(scope="module")
def tokenizer():
    return build_word_tokenizer(VOCABULARY)


@pytest.fixture(scope="module")
def policy(tokenizer):
    set_seed(0)
    return build_tiny_model("tiny:opt", tokenizer).eval()


def test_generated_responses_stop_after_eos_and_respect_the_limit(policy, tokenizer):
    responses = generate_responses(policy, tokenizer, PROMPTS * 10, do_sample=True, max_new_tokens=5, seed=1)
    assert len(responses) == 30
    for response in responses:
        assert 1 <= len(response) <= 5
        assert tokenizer.eos_token_id not in response[:-1]
        assert tokenizer.pad_token_id not in response


def test_greedy_is_deterministic_and_sampling_is_seeded(policy, tokenizer):
    greedy = generate_responses(policy, tokenizer, PROMPTS, do_sample=False)
    assert greedy == generate_responses(policy, tokenizer, PROMPTS, do_sample=False)
    many = PROMPTS * 20
    assert generate_responses(policy, tokenizer, many, True, seed=3) == generate_responses(policy, tokenizer, many, True, seed=3)
    assert generate_responses(policy, tokenizer, many, True, seed=3) != generate_responses(policy, tokenizer, many, True, seed=4)


def test_sequence_logprobs_match_a_hand_computation_and_ignore_padding(policy, tokenizer):
    prompts = ["Q: max 3 A:", "Q: max 3 7 1 4 A:"]
    responses = [[tokenizer.convert_tokens_to_ids("3"), tokenizer.eos_token_id], [tokenizer.convert_tokens_to_ids("7")]]
    batched = sequence_logprobs(policy, tokenizer, prompts, responses)
    for i, (prompt, response) in enumerate(zip(prompts, responses)):
        ids = torch.tensor([tokenizer(prompt)["input_ids"] + response])
        with torch.no_grad():
            logprobs = torch.log_softmax(policy(input_ids=ids).logits[0, :-1], -1)
        start = ids.shape[1] - len(response)
        expected = sum(logprobs[pos - 1, ids[0, pos]] for pos in range(start, ids.shape[1]))
        assert batched[i].item() == pytest.approx(expected.item(), abs=1e-4)


def test_reward_scores_do_not_depend_on_padding(tokenizer):
    set_seed(0)
    reward_model = build_tiny_model("tiny:opt", tokenizer, task="seq-cls").eval()
    prompts = ["Q: max 3 A:", "Q: max 3 7 1 4 A:"]
    responses = [[tokenizer.convert_tokens_to_ids("3"), tokenizer.eos_token_id]] * 2
    together = reward_scores(reward_model, tokenizer, prompts, responses)
    alone = torch.cat([reward_scores(reward_model, tokenizer, [p], [r]) for p, r in zip(prompts, responses)])
    assert torch.allclose(together, alone, atol=1e-5)
