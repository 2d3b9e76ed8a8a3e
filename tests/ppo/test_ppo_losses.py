"""The PPO math against values computed by hand (the arithmetic is in the comments)."""

import math

import pytest
import torch

from rlhf_recipes.ppo import losses


def close(actual, expected, atol=1e-6):
    torch.testing.assert_close(torch.as_tensor(actual, dtype=torch.float32), torch.tensor(expected), atol=atol, rtol=0)


def test_gae_four_tokens_with_discount_and_lambda():
    # gamma = 0.9, lam = 0.8 -> gamma * lam = 0.72
    rewards = torch.tensor([[0.1, 0.0, -0.2, 1.0], [0.1, 1.0, 5.0, 5.0]])
    values = torch.tensor([[0.5, 0.4, 0.3, 0.2], [0.5, 0.4, 9.0, 9.0]])
    mask = torch.tensor([[1.0, 1, 1, 1], [1, 1, 0, 0]])
    advantages, returns = losses.gae(rewards, values, mask, gamma=0.9, lam=0.8)
    # row 0: deltas d_t = r_t + 0.9 V_{t+1} - V_t, V_4 = 0:
    #   d0 = 0.1 + 0.36 - 0.5 = -0.04, d1 = 0 + 0.27 - 0.4 = -0.13, d2 = -0.2 + 0.18 - 0.3 = -0.32, d3 = 1 - 0.2 = 0.8
    #   A3 = 0.8; A2 = -0.32 + 0.72 * 0.8 = 0.256; A1 = -0.13 + 0.72 * 0.256 = 0.05432
    #   A0 = -0.04 + 0.72 * 0.05432 = -0.0008896; R = A + V
    # row 1 (two real tokens; the 5s and 9s beyond the mask must not leak in):
    #   d1 = 1.0 + 0 - 0.4 = 0.6 = A1; A0 = (0.1 + 0.36 - 0.5) + 0.72 * 0.6 = 0.392
    close(advantages, [[-0.0008896, 0.05432, 0.256, 0.8], [0.392, 0.6, 0.0, 0.0]])
    close(returns, [[0.4991104, 0.45432, 0.556, 1.0], [0.892, 1.0, 0.0, 0.0]])


def test_kl_estimators_k1_and_k3():
    logprobs, ref_logprobs = torch.tensor([-1.0, -2.0]), torch.tensor([-1.5, -1.0])
    # log r = ref - logp = [-0.5, 1.0]; k1 = -log r; k3 = (e^{log r} - 1) - log r
    close(losses.kl_penalty(logprobs, ref_logprobs, "k1"), [0.5, -1.0])
    close(losses.kl_penalty(logprobs, ref_logprobs, "k3"), [math.exp(-0.5) - 1 + 0.5, math.e - 2.0])
    close(losses.kl_penalty(logprobs, ref_logprobs, "k3"), [0.1065307, 0.7182818])
    with pytest.raises(ValueError, match="k2"):
        losses.kl_penalty(logprobs, ref_logprobs, "k2")


def test_clipped_policy_loss_with_clipping_active_and_inactive():
    # log ratios and advantages; eps = 0.2; the fifth token is padding with absurd values
    log_ratio = torch.tensor([[0.5, -0.5, 0.1, -0.5, 3.0]])
    advantages = torch.tensor([[1.0, 1.0, -2.0, -1.0, 100.0]])
    mask = torch.tensor([[1.0, 1, 1, 1, 0]])
    old = torch.zeros_like(log_ratio)
    loss, clipfrac, approxkl = losses.policy_loss(old + log_ratio, old, advantages, mask, cliprange=0.2)
    # t0: ratio e^.5 = 1.64872, A=1:  max(-1.64872, -1.2) = -1.2          (clipped)
    # t1: ratio e^-.5 = 0.60653, A=1: max(-0.60653, -0.8) = -0.60653      (not clipped)
    # t2: ratio e^.1 = 1.10517, A=-2: both 2.21034 (inside the range)      (not clipped)
    # t3: ratio 0.60653, A=-1:        max(0.60653, 0.8) = 0.8             (clipped)
    # loss = (-1.2 - 0.60653 + 2.21034 + 0.8) / 4 = 0.300953
    close(loss, 0.3009528, atol=1e-5)
    close(clipfrac, 0.5)
    # approx KL = 0.5 * mean(0.25, 0.25, 0.01, 0.25) = 0.095
    close(approxkl, 0.095)


def test_clipped_value_loss_with_clipping_active_and_inactive():
    values = torch.tensor([[1.0, 0.6, 0.0]])
    old_values = torch.tensor([[0.5, 0.5, 0.5]])
    returns = torch.tensor([[1.0, 0.0, 1.0]])
    loss, clipfrac = losses.value_loss(values, old_values, returns, torch.ones(1, 3), cliprange_value=0.2)
    # t0: V_clip = 0.7: max((1-1)^2, (0.7-1)^2) = 0.09            (clipped term larger)
    # t1: V_clip = 0.6 (inside): 0.36                              (not clipped)
    # t2: V_clip = 0.3: max((0-1)^2, (0.3-1)^2) = max(1, 0.49) = 1 (not clipped)
    # loss = 0.5 * (0.09 + 0.36 + 1) / 3 = 0.2416667
    close(loss, 0.2416667)
    close(clipfrac, 1 / 3)


def test_masked_whitening_ignores_padding():
    x = torch.tensor([1.0, 3.0, 5.0, 100.0])
    mask = torch.tensor([1.0, 1.0, 1.0, 0.0])
    # mean 3, unbiased variance ((-2)^2 + 0 + 2^2) / (3 - 1) = 4, std 2
    close(losses.masked_whiten(x, mask), [-1.0, 0.0, 1.0, 0.0])
    close(losses.masked_whiten(x, mask, shift_mean=False), [2.0, 3.0, 4.0, 0.0])


def test_ptx_loss_is_next_token_nll_over_real_targets():
    # vocab of 2; row 0 unpadded [0, 1, 1]; row 1 left-padded [pad, 0, 1]
    ids = torch.tensor([[0, 1, 1], [0, 0, 1]])
    mask = torch.tensor([[1, 1, 1], [0, 1, 1]])
    ln3 = math.log(3)
    logits = torch.tensor([
        [[0.0, 0.0], [0.0, ln3], [9.0, 9.0]],  # p(1)=1/2 then p(1)=3/4; the last position predicts nothing
        [[5.0, -5.0], [ln3, 0.0], [9.0, 9.0]],  # position 0 is padding: its target is skipped; then p(1)=1/4
    ])
    # -(ln 1/2 + ln 3/4 + ln 1/4) / 3 = (0.693147 + 0.287682 + 1.386294) / 3 = 0.789041
    close(losses.ptx_loss(logits, ids, mask), 0.7890411)


def test_logprobs_and_entropy_from_logits():
    logits = torch.tensor([[0.0, 0.0], [0.0, math.log(3)]])
    close(losses.logprobs_from_logits(logits, torch.tensor([1, 1])), [math.log(0.5), math.log(0.75)])
    # H([1/4, 3/4]) = 0.25 ln 4 + 0.75 ln(4/3) = 0.5623351
    close(losses.entropy_from_logits(logits), [math.log(2), 0.5623351])


def test_score_lands_on_last_real_token_and_kl_penalty_everywhere_else():
    kl = torch.tensor([[0.1, 0.2, 0.3, 0.4], [0.5, 0.5, 0.5, 0.5]])
    mask = torch.tensor([[1.0, 1, 1, 0], [1, 1, 1, 1]])
    rewards = losses.token_rewards(kl, torch.tensor([2.0, -1.0]), mask, kl_coef=0.5)
    # row 0 ends at t=2 (its stop token): -0.5*0.3 + 2 = 1.85; padding gets nothing
    # row 1 never stopped: the score goes on the last generated token, -0.25 - 1 = -1.25
    close(rewards, [[-0.05, -0.1, 1.85, 0.0], [-0.25, -0.25, -0.25, -1.25]])
