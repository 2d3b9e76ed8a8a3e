"""The PPO math as pure tensor functions. Shapes: B responses x T response tokens; `mask` is 1
on real response tokens (up to and including the first stop token) and 0 on padding after it.

Notation: pi = policy, pi_old = the policy that sampled the rollout, rho = the reference
(SFT) policy, V = critic, A = advantage, R = return, m_t = mask. log pi(a_t|s_t) comes from
`models.generation.logprobs_from_logits`, shared with the sampler.
"""

import torch

from ..models.generation import logprobs_from_logits


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """sum(x * m) / sum(m), over `dim` or everything."""
    if dim is None:
        return (x * mask).sum() / mask.sum().clamp(min=1)
    return (x * mask).sum(dim) / mask.sum(dim).clamp(min=1)


def masked_whiten(x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True) -> torch.Tensor:
    """(x - mu) / sqrt(var + 1e-8) over masked entries, var with Bessel's correction (n - 1).

    With `shift_mean=False` the mean is added back (TRL's reward whitening). Masked-out entries
    are returned as 0. With fewer than two entries the variance is undefined: x is only centred.
    """
    n = mask.sum()
    mean = masked_mean(x, mask)
    centred = (x - mean) * mask
    if n < 2:
        return centred + (0 if shift_mean else mean * mask)
    var = (centred**2).sum() / (n - 1)
    whitened = centred * torch.rsqrt(var + 1e-8)
    return (whitened if shift_mean else whitened + mean) * mask


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """H(p) = logsumexp(z) - sum_v p_v z_v, per position."""
    probs = torch.softmax(logits, dim=-1)
    return torch.logsumexp(logits, dim=-1) - (probs * logits).sum(-1)


def kl_penalty(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, estimator: str = "k1") -> torch.Tensor:
    """Per-token estimate of KL(pi || rho) at the sampled token, with log r = log rho - log pi:

    k1 = -log r                  (unbiased, can be negative)
    k3 = (r - 1) - log r         (unbiased, always >= 0, lower variance)
    """
    log_ratio = ref_logprobs - logprobs
    if estimator == "k1":
        return -log_ratio
    if estimator == "k3":
        return torch.expm1(log_ratio) - log_ratio
    raise ValueError(f"Unknown KL estimator {estimator!r}; use 'k1' or 'k3'.")


def token_rewards(kl: torch.Tensor, scores: torch.Tensor, mask: torch.Tensor, kl_coef: float) -> torch.Tensor:
    """r_t = -kl_coef * kl_t * m_t, plus the sequence score on the last real token (the stop token
    when there is one): r_{L-1} += score, L = sum_t m_t. Masks are contiguous from t = 0."""
    rewards = -kl_coef * kl * mask
    last = (mask.sum(1).long() - 1).clamp(min=0)
    return rewards.scatter_add(1, last.unsqueeze(1), scores.to(rewards.dtype).unsqueeze(1))


def gae(
    rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation, right to left over positions (vectorised over the batch):

    delta_t = r_t + gamma * V_{t+1} - V_t      (V = 0 after the last real token)
    A_t     = delta_t + gamma * lam * A_{t+1}
    R_t     = A_t + V_t                        (the critic's target)
    Returns (A, R), both 0 where mask is 0.
    """
    values = values * mask
    rewards = rewards * mask
    next_values = torch.cat([values[:, 1:], torch.zeros_like(values[:, :1])], dim=1)
    deltas = rewards + gamma * next_values - values
    advantages = torch.zeros_like(deltas)
    running = torch.zeros_like(deltas[:, 0])
    for t in reversed(range(deltas.shape[1])):
        running = deltas[:, t] + gamma * lam * running
        advantages[:, t] = running
    advantages = advantages * mask
    return advantages, (advantages + values) * mask


def policy_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    cliprange: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Clipped surrogate, ratio_t = pi(a_t|s_t) / pi_old(a_t|s_t):

    L_pg = mean_t max(-A_t * ratio_t, -A_t * clip(ratio_t, 1 - eps, 1 + eps))
    Returns (L_pg, clip fraction = share of tokens where the clipped term is the larger,
    approx KL(pi_old || pi) = mean 0.5 * (log ratio)^2).
    """
    log_ratio = (logprobs - old_logprobs) * mask
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - cliprange, 1.0 + cliprange)
    loss = masked_mean(torch.maximum(unclipped, clipped), mask)
    clipfrac = masked_mean((clipped > unclipped).float(), mask)
    approxkl = 0.5 * masked_mean(log_ratio**2, mask)
    return loss, clipfrac, approxkl


def value_loss(
    values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor, cliprange_value: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Clipped value loss, V_clip = V_old + clip(V - V_old, -eps_v, eps_v):

    L_vf = 0.5 * mean_t max((V_t - R_t)^2, (V_clip_t - R_t)^2)
    Returns (L_vf, clip fraction = share of tokens where the clipped error is the larger).
    """
    clipped_values = old_values + torch.clamp(values - old_values, -cliprange_value, cliprange_value)
    error = (values - returns) ** 2
    clipped_error = (clipped_values - returns) ** 2
    loss = 0.5 * masked_mean(torch.maximum(error, clipped_error), mask)
    clipfrac = masked_mean((clipped_error > error).float(), mask)
    return loss, clipfrac


def ptx_loss(logits: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Pretraining LM loss of PPO-ptx, -E_x[log pi(x)] per token:

    L_ptx = -mean_{t >= 1, m_{t-1} = m_t = 1} log pi(x_t | x_<t)
    The actor objective adds ptx_coef * L_ptx (InstructGPT's gamma * E_pretrain[log pi(x)], negated).
    Requiring m_{t-1} too makes it correct for left and right padding alike.
    """
    logprobs = logprobs_from_logits(logits[:, :-1], input_ids[:, 1:])
    return -masked_mean(logprobs, attention_mask[:, 1:] * attention_mask[:, :-1])
