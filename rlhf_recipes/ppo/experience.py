"""PPO's experience step: a rollout and its raw scores -> what the update learns from.

In order, each step one function of `losses`:
1. shaped score s = clip(normalise(raw score), -reward_clip, reward_clip) - missing-EOS penalty;
2. per-token KL estimate kl_t of KL(pi_old || rho) at the sampled tokens (`kl_penalty`);
   (here the trainer raises `on_rollout_end`, where a callback may set `state.kl_coef`)
3. rewards r_t = -kl_coef * kl_t, plus s on the last real token (`token_rewards`), optionally
   whitened (`whiten_rewards`);
4. GAE advantages and returns (`gae`), then the advantages whitened (`masked_whiten`).
"""

from collections.abc import Callable
from dataclasses import dataclass

import torch

from .losses import gae, kl_penalty, masked_whiten, token_rewards
from .rollout import Rollout


class RunningMoments:
    """Running mean/variance of all scores seen (Chan et al. parallel update), for normalisation."""

    def __init__(self, mean: float = 0.0, var: float = 1.0, count: int = 0):
        self.mean, self.var, self.count = mean, var, count

    def update(self, x: torch.Tensor) -> None:
        n = x.numel()
        batch_mean, batch_var = x.double().mean().item(), x.double().var(unbiased=False).item()
        total = self.count + n
        delta = batch_mean - self.mean
        m2 = self.var * self.count + batch_var * n + delta**2 * self.count * n / total
        self.mean, self.var, self.count = self.mean + delta * n / total, m2 / total, total

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / (self.var**0.5 + 1e-8)

    def state_dict(self) -> dict:
        return {"mean": self.mean, "var": self.var, "count": self.count}


def shape_scores(
    scores: torch.Tensor,
    has_stop: torch.Tensor,
    reward_clip: float | None = None,
    missing_eos_penalty: float | None = None,
) -> torch.Tensor:
    """clip(score, -reward_clip, reward_clip), then minus missing_eos_penalty where no stop token
    was generated (after clipping, so the penalty always bites)."""
    if reward_clip is not None:
        scores = scores.clamp(-reward_clip, reward_clip)
    if missing_eos_penalty is not None:
        scores = scores - missing_eos_penalty * (~has_stop).to(scores.dtype)
    return scores


class ScoreShaper:
    """Step 1 with its state: `normalize_reward` divides by the running statistics of all training
    scores (checkpointed as `moments.state_dict()`), then `shape_scores`."""

    def __init__(self, args, moments: RunningMoments | None = None):
        self.normalize = args.normalize_reward
        self.reward_clip, self.missing_eos_penalty = args.reward_clip, args.missing_eos_penalty
        self.moments = moments or RunningMoments()

    def __call__(self, raw: torch.Tensor, has_stop: torch.Tensor, gather: Callable | None = None) -> torch.Tensor:
        """With `gather` (training rollouts: all ranks' scores), finite batches update the statistics first."""
        if self.normalize:
            if gather is not None:
                everything = gather(raw)
                if torch.isfinite(everything).all():
                    self.moments.update(everything)
            raw = self.moments.normalize(raw)
        return shape_scores(raw, has_stop, self.reward_clip, self.missing_eos_penalty)


def kl_per_token(rollout: Rollout, estimator: str) -> torch.Tensor:
    """Step 2: kl_t, B x R, 0 after each response."""
    return kl_penalty(rollout.logprobs, rollout.ref_logprobs, estimator) * rollout.response_mask.float()


@dataclass(frozen=True)
class Experience:
    """One rank's rollout as PPO's training targets. B responses x R tokens; 0 after each response."""

    raw_scores: torch.Tensor  # B, reward model and reward functions summed
    scores: torch.Tensor  # B, shaped (step 1)
    kl: torch.Tensor  # B x R, per-token KL estimate (step 2)
    kl_coef: float
    rewards: torch.Tensor  # B x R (step 3)
    advantages: torch.Tensor  # B x R, whitened (step 4)
    returns: torch.Tensor  # B x R, the critic's targets (step 4)

    def metrics(self, rollout: Rollout) -> dict[str, torch.Tensor]:
        """Means over this rank's responses: summed KL, entropy estimate (-sum_t log pi_old) and KL
        penalty, scores, length and how many stopped."""
        mask = rollout.response_mask.float()
        scores, non_score = self.scores.mean(), (-self.kl_coef * self.kl).sum(1).mean()
        return {
            "objective/kl": self.kl.sum(1).mean(),
            "objective/entropy": (-rollout.logprobs * mask).sum(1).mean(),
            "objective/non_score_reward": non_score,
            "objective/raw_scores": self.raw_scores.mean(),
            "objective/scores": scores,
            "objective/rlhf_reward": scores + non_score,
            "objective/response_length": mask.sum(1).mean(),
            "objective/stop_frac": rollout.has_stop.float().mean(),
        }


def make_experience(
    rollout: Rollout,
    raw_scores: torch.Tensor,
    scores: torch.Tensor,
    kl: torch.Tensor,
    kl_coef: float,
    args,
) -> Experience:
    """Steps 3 and 4 for a rollout with its shaped scores and per-token KL (`args`: gamma, lam,
    whiten_rewards)."""
    mask = rollout.response_mask.float()
    rewards = token_rewards(kl, scores, mask, kl_coef)
    if args.whiten_rewards:
        rewards = masked_whiten(rewards, mask, shift_mean=False)
    advantages, returns = gae(rewards, rollout.values, mask, args.gamma, args.lam)
    return Experience(
        raw_scores=raw_scores,
        scores=scores,
        kl=kl,
        kl_coef=kl_coef,
        rewards=rewards,
        advantages=masked_whiten(advantages, mask),
        returns=returns,
    )
