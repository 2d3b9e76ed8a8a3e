"""The experience step against hand-computed values, score normalisation only on training rollouts,
and `state.kl_coef` as the KL coefficient's one home (a schedule callback is not overridden)."""

import json
from types import SimpleNamespace

import pytest
import torch

from rlhf_recipes.ppo import PPOCallback, PPOTrainer
from rlhf_recipes.ppo.experience import ScoreShaper, kl_per_token, make_experience
from rlhf_recipes.ppo.rollout import Rollout


def _rollout():
    """One response of two real tokens and one pad; log pi - log rho = 0.1 and 0.2."""
    return Rollout(
        indices=[0],
        prompt_ids=torch.tensor([[5]]),
        prompt_mask=torch.tensor([[1]]),
        responses=torch.tensor([[6, 2, 0]]),
        response_mask=torch.tensor([[1, 1, 0]]),
        has_stop=torch.tensor([True]),
        logprobs=torch.tensor([[-1.0, -2.0, 0.0]]),
        ref_logprobs=torch.tensor([[-1.1, -2.2, -3.0]]),
        values=torch.tensor([[0.5, 0.25, 7.0]]),
    )


def test_experience_matches_a_hand_computation():
    rollout = _rollout()
    kl = kl_per_token(rollout, "k1")
    torch.testing.assert_close(kl, torch.tensor([[0.1, 0.2, 0.0]]))
    args = SimpleNamespace(gamma=1.0, lam=1.0, whiten_rewards=False)
    experience = make_experience(rollout, torch.tensor([3.0]), torch.tensor([1.0]), kl, 0.5, args)
    # r = -0.5 * kl, plus the score 1 on the last real token: (-0.05, 0.9, 0)
    torch.testing.assert_close(experience.rewards, torch.tensor([[-0.05, 0.9, 0.0]]))
    # gamma = lam = 1: R_t = sum of later rewards = (0.85, 0.9); A = R - V = (0.35, 0.65), whitened to -+1/sqrt(2)
    torch.testing.assert_close(experience.returns, torch.tensor([[0.85, 0.9, 0.0]]))
    torch.testing.assert_close(experience.advantages, torch.tensor([[-0.5**0.5, 0.5**0.5, 0.0]]), atol=1e-5, rtol=0)
    metrics = experience.metrics(rollout)
    assert metrics["objective/non_score_reward"].item() == pytest.approx(-0.15)
    assert metrics["objective/rlhf_reward"].item() == pytest.approx(0.85)
    assert metrics["objective/raw_scores"].item() == 3.0 and metrics["objective/response_length"].item() == 2.0


def test_only_training_rollouts_move_the_normalisation_statistics():
    shaper = ScoreShaper(SimpleNamespace(normalize_reward=True, reward_clip=None, missing_eos_penalty=1.0))
    stopped = torch.tensor([True, False])
    shaped = shaper(torch.tensor([1.0, 3.0]), stopped, gather=lambda x: x)
    assert shaper.moments.count == 2 and shaper.moments.mean == 2.0
    # normalised by (mean 2, var 1): -1 and +1, then the missing-EOS penalty on the second row
    torch.testing.assert_close(shaped, torch.tensor([-1.0, 0.0]), atol=1e-6, rtol=0)
    shaper(torch.tensor([10.0, 10.0]), stopped)  # evaluation: no gather, statistics unchanged
    assert shaper.moments.count == 2


class KLSchedule(PPOCallback):
    """README's example: the coefficient annealed to zero over the run."""

    def on_rollout_end(self, args, state, control, rollout_stats, **kwargs):
        state.kl_coef = args.kl_coef * (1 - state.global_step / state.max_steps)


def test_a_schedule_callback_sets_the_coefficient_next_to_the_default_fixed_controller(tiny, tmp_path):
    args = tiny.args(tmp_path, max_steps=2, kl_coef=0.2)
    trainer = PPOTrainer(args, tiny.tokenizer, tiny.policy(), value_model=tiny.value(),
                         reward_funcs=[tiny.reward_yes], train_dataset=tiny.dataset(), callbacks=[KLSchedule()])
    trainer.train()
    with open(tmp_path / "ppo_log.jsonl", encoding="utf-8") as handle:
        logged = [json.loads(line)["kl_coef"] for line in handle]
    assert logged == pytest.approx([0.2, 0.1]) and trainer.state.kl_coef == pytest.approx(0.1)
