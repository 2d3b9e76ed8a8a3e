"""The rollout's KV-cached sampling loop: top-k/top-p filtering, stop tokens, position and cache
bookkeeping, and logprobs that match a full forward pass."""

import pytest
import torch
from transformers import TopKLogitsWarper, TopPLogitsWarper
from transformers.modeling_outputs import CausalLMOutputWithPast

from rlhf_recipes.models.generation import SamplingConfig, filter_logits, left_pad, logprobs_from_logits, next_tokens
from rlhf_recipes.models.generation import sample, sample_responses, stop_mask
from rlhf_recipes.ppo.rollout import response_logits

PAD, STOP = 0, 9


def test_top_k_and_top_p_keep_the_hand_computed_distributions():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    # top-k 2: the two largest, renormalised 0.5 / 0.8 and 0.3 / 0.8
    torch.testing.assert_close(filter_logits(logits, 2, 1.0).softmax(-1), torch.tensor([[0.625, 0.375, 0.0, 0.0]]))
    # top-p 0.75: ascending cumulative 0.05, 0.2, 0.5, 1.0; tokens while it is <= 0.25 go
    torch.testing.assert_close(filter_logits(logits, 0, 0.75).softmax(-1), torch.tensor([[0.625, 0.375, 0.0, 0.0]]))
    # top-k 3 first (0.5, 0.3, 0.15 renormalised to 10/19, 6/19, 3/19), then top-p 0.8 on that:
    # 3/19 = 0.158 <= 0.2 goes, 9/19 does not
    torch.testing.assert_close(filter_logits(logits, 3, 0.8).softmax(-1), torch.tensor([[0.625, 0.375, 0.0, 0.0]]))
    # at exactly 1 - top_p the least likely token goes too (cumulative 0.125 <= 1 - 0.875)
    exact = torch.log(torch.tensor([[0.5, 0.375, 0.125]]))
    torch.testing.assert_close(filter_logits(exact, 0, 0.875).softmax(-1), torch.tensor([[4 / 7, 3 / 7, 0.0]]))
    # a tiny top-p still keeps the most likely token; top-k 0 / top-p 1 change nothing
    torch.testing.assert_close(filter_logits(logits, 0, 0.01).softmax(-1), torch.tensor([[1.0, 0.0, 0.0, 0.0]]))
    torch.testing.assert_close(filter_logits(logits, 0, 1.0), logits)


def test_filtering_matches_transformers_warpers_on_random_logits():
    torch.manual_seed(0)
    logits = torch.randn(64, 50) * 3
    for top_k, top_p in [(5, 1.0), (0, 0.9), (10, 0.5), (50, 0.3)]:
        expected = logits
        if top_k:
            expected = TopKLogitsWarper(top_k)(None, expected)
        if top_p < 1.0:
            expected = TopPLogitsWarper(top_p)(None, expected)
        assert torch.equal(filter_logits(logits, top_k, top_p), expected), (top_k, top_p)


def test_draws_follow_the_filtered_distribution():
    torch.manual_seed(0)
    logits = torch.log(torch.tensor([0.5, 0.3, 0.15, 0.05])).expand(40000, 4)
    config = SamplingConfig(max_new_tokens=1, pad_token_id=PAD, top_k=3, top_p=0.8)
    counts = torch.bincount(next_tokens(logits, config), minlength=4).float() / 40000
    torch.testing.assert_close(counts, torch.tensor([0.625, 0.375, 0.0, 0.0]), atol=0.01, rtol=0)
    greedy = SamplingConfig(max_new_tokens=1, pad_token_id=PAD, greedy=True)
    assert next_tokens(logits[:3], greedy).tolist() == [0, 0, 0]


class Scripted(torch.nn.Module):
    """A causal LM that, after a prompt ending in token p, emits `script[p][t]` at step t (one-hot
    logits of 100), recording what each call receives. It speaks transformers 5's cache protocol
    (`cache` in, `out["cache"]` out), its cache holding the step and each row's script."""

    def __init__(self, script: dict, vocab=10):
        super().__init__()
        self.script, self.vocab, self.calls = script, vocab, []

    def forward(self, input_ids, attention_mask, position_ids, use_cache, cache=None, logits_to_keep=0):
        if cache is None:
            cache = (0, torch.tensor([self.script[int(p)] for p in input_ids[:, -1]]))
        step, rows = cache
        self.calls.append({"input_ids": input_ids, "attention_mask": attention_mask, "position_ids": position_ids})
        logits = torch.full((input_ids.shape[0], input_ids.shape[1], self.vocab), -100.0)
        logits[:, -1] = torch.nn.functional.one_hot(rows[:, step], self.vocab) * 100.0
        return CausalLMOutputWithPast(logits=logits, cache=(step + 1, rows))


def test_rows_get_pad_after_their_stop_token_and_the_loop_ends_once_all_stopped():
    script = {5: [5, STOP, 6, 7, 7], 3: [5, 6, 7, STOP, 8], 4: [STOP, 5, 5, 5, 5]}
    model = Scripted(script)
    prompt_ids, prompt_mask = left_pad([[3, 4, 5], [3], [4, 4]], PAD)
    config = SamplingConfig(max_new_tokens=5, pad_token_id=PAD, stop_token_ids=(STOP,))
    tokens, logprobs = sample(model, prompt_ids, prompt_mask, config)
    assert tokens.tolist() == [[5, STOP, PAD, PAD, PAD], [5, 6, 7, STOP, PAD], [STOP, PAD, PAD, PAD, PAD]]
    assert len(model.calls) == 4  # the prompt pass and three cached steps: row 1 stops at t = 3
    assert logprobs[0, :2].abs().max() < 1e-6  # the scripted tokens have probability ~1
    # cached steps feed one token at each row's next position (left padding does not count)
    assert [c["position_ids"].squeeze(1).tolist() for c in model.calls[1:]] == [[3, 1, 2], [4, 2, 3], [5, 3, 4]]
    assert model.calls[0]["position_ids"].tolist() == [[0, 1, 2], [0, 0, 0], [0, 0, 1]]
    assert model.calls[3]["attention_mask"].tolist() == [[1, 1, 1, 1, 1, 1], [0, 0, 1, 1, 1, 1], [0, 1, 1, 1, 1, 1]]
    assert model.calls[3]["input_ids"].squeeze(1).tolist() == [PAD, 7, PAD]

    responses, response_mask, has_stop, kept = sample_responses(Scripted(script), prompt_ids, prompt_mask, config, 2)
    assert responses.tolist() == tokens[:, :4].tolist()  # trimmed to the longest response, in row chunks of 2
    assert response_mask.tolist() == stop_mask(tokens, [STOP])[0][:, :4].tolist()
    assert has_stop.tolist() == [True, True, True] and kept.shape == (3, 4)


def test_without_stop_tokens_every_row_runs_to_max_new_tokens():
    model = Scripted({3: [STOP, STOP, 5], 4: [5, 6, 7]})
    config = SamplingConfig(max_new_tokens=3, pad_token_id=PAD)
    tokens, _ = sample(model, *left_pad([[3], [4, 4]], PAD), config)
    assert tokens.tolist() == [[STOP, STOP, 5], [5, 6, 7]] and len(model.calls) == 3


@pytest.mark.parametrize("temperature, top_k", [(1.0, 0), (0.7, 3)])
def test_sampled_logprobs_match_a_full_forward_pass(tiny, temperature, top_k):
    """The rollout keeps the sampling loop's logprobs as the old policy's: they must equal what the
    PPO loss recomputes with a full forward (unfiltered softmax of logits / temperature)."""
    policy = tiny.policy().eval()
    prompts = [[4, 5, 6, 7], [5], [6, 4], [7, 7, 7]]
    prompt_ids, prompt_mask = left_pad(prompts, tiny.tokenizer.pad_token_id)
    config = SamplingConfig(max_new_tokens=6, pad_token_id=tiny.tokenizer.pad_token_id, temperature=temperature,
                            top_k=top_k, stop_token_ids=(tiny.tokenizer.eos_token_id,))
    torch.manual_seed(1)
    responses, response_mask, _, logprobs = sample_responses(policy, prompt_ids, prompt_mask, config, 4)
    ids = torch.cat([prompt_ids, responses], dim=1)
    attention = torch.cat([prompt_mask, response_mask], dim=1)
    with torch.no_grad():
        logits = response_logits(policy, ids, attention, responses.shape[1], keep_only=True).float() / temperature
    full = logprobs_from_logits(logits, responses)
    real = response_mask.bool()
    torch.testing.assert_close(logprobs[real], full[real], atol=1e-5, rtol=0)
    assert (logprobs[real] < 0).all()


def test_greedy_sampling_matches_generate(tiny):
    policy = tiny.policy(seed=3).eval()
    tok = tiny.tokenizer
    prompt_ids, prompt_mask = left_pad([[4, 5, 6], [6], [7, 4]], tok.pad_token_id)
    config = SamplingConfig(max_new_tokens=8, pad_token_id=tok.pad_token_id, stop_token_ids=(tok.eos_token_id,),
                            greedy=True)
    tokens, _ = sample(policy, prompt_ids, prompt_mask, config)
    with torch.no_grad():
        expected = policy.generate(input_ids=prompt_ids, attention_mask=prompt_mask, do_sample=False, max_new_tokens=8,
                                   eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    expected = expected[:, prompt_ids.shape[1] :]
    assert tokens[:, : expected.shape[1]].tolist() == expected.tolist()
    assert (tokens[:, expected.shape[1] :] == tok.pad_token_id).all()
