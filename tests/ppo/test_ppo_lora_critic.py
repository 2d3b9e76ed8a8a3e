"""The LoRA critic (`critic_use_peft`): only its adapter and head train, a critic made from the reward
model shares that model's weights, and scoring reads them with the adapter disabled, i.e. the RM as given."""

import copy

import pytest
import torch
from peft import LoraConfig, PeftModel

from rlhf_recipes.config.parsing import ConfigError
from rlhf_recipes.ppo import PPOTrainer
from rlhf_recipes.ppo.rollout import ValueModel
from rlhf_recipes.ppo.scoring import RewardScorer

POLICY_LORA = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")


def test_a_lora_critic_made_from_the_reward_model_shares_its_weights_and_leaves_scores_unchanged(
    tiny, tmp_path, monkeypatch
):
    reward_model = tiny.value(seed=5)
    original = copy.deepcopy(reward_model).eval()
    seen = []
    real_call = RewardScorer.__call__

    def spy(self, rollout, prompts, columns=None):
        scores = real_call(self, rollout, prompts, columns)
        seen.append((rollout.input_ids, rollout.attention_mask, rollout.last_token_index, scores))
        return scores

    monkeypatch.setattr(RewardScorer, "__call__", spy)
    args = tiny.args(tmp_path, max_steps=2, critic_use_peft=True, activation_checkpointing=True)
    trainer = PPOTrainer(args, tiny.tokenizer, tiny.policy(), reward_model=reward_model,
                         train_dataset=tiny.dataset(), peft_config=POLICY_LORA)
    critic = trainer.unwrapped_critic
    assert isinstance(critic.model, PeftModel) and critic.network is reward_model  # no deepcopy
    assert critic.network.is_activation_checkpointing
    trainable = {name: p.detach().clone() for name, p in critic.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in name or "score.modules_to_save" in name for name in trainable)
    assert any("score.modules_to_save" in name for name in trainable)
    # full-size copies: the actor's base (also the reference) and the RM's (also the critic's base)
    embeddings = {trainer.unwrapped_actor.get_input_embeddings().weight.data_ptr(),
                  critic.backbone.get_input_embeddings().weight.data_ptr(),
                  trainer.scorer.reward_model.backbone.get_input_embeddings().weight.data_ptr()}
    assert trainer.ref_model is None and len(embeddings) == 2

    trainer.train()
    moved = [name for name, p in critic.named_parameters() if p.requires_grad and not torch.equal(p, trainable[name])]
    assert any("lora_B" in name for name in moved) and any("score.modules_to_save" in name for name in moved)
    # step 2 was scored after step 1 had changed the critic: still exactly the original reward model
    assert len(seen) == 2
    for ids, mask, last, scores in seen:
        with torch.no_grad():
            expected = ValueModel(original)(ids, mask).gather(1, last.unsqueeze(1)).squeeze(1)
        torch.testing.assert_close(scores, expected, rtol=0, atol=0)
    ids, mask = seen[-1][:2]
    with torch.no_grad():
        values = critic.eval()(ids, mask)
    assert not torch.allclose(values, ValueModel(original)(ids, mask))  # while the critic did learn

    trainer.save_model()
    saved = sorted(path.name for path in (tmp_path / "critic").iterdir())
    assert "adapter_model.safetensors" in saved and "model.safetensors" not in saved  # adapter + head only
    reloaded = ValueModel(PeftModel.from_pretrained(copy.deepcopy(original), tmp_path / "critic")).eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(ids, mask), values)


def test_a_lora_critic_with_its_own_value_model_and_config_leaves_the_reward_model_frozen(tiny, tmp_path):
    value_model, reward_model = tiny.value(seed=1), tiny.value(seed=5)
    lora = LoraConfig(r=2, lora_alpha=4, target_modules=["fc1"], task_type="SEQ_CLS")
    args = tiny.args(tmp_path, max_steps=1, critic_use_peft=True)
    trainer = PPOTrainer(args, tiny.tokenizer, tiny.policy(), value_model=value_model, reward_model=reward_model,
                         train_dataset=tiny.dataset(), value_peft_config=lora)
    critic = trainer.unwrapped_critic
    assert not trainer.is_peft and critic.network is value_model and not trainer.shares_reward_model
    assert critic.model.peft_config["default"].r == 2
    assert trainer.scorer.reward_model.model is reward_model
    assert not any(p.requires_grad for p in reward_model.parameters())


@pytest.mark.parametrize(
    ("overrides", "kwargs", "message"),
    [
        (dict(critic_use_peft=True), {}, "critic_use_peft needs a LoRA config"),
        ({}, dict(value_peft_config=LoraConfig(task_type="SEQ_CLS")), "critic_use_peft is false"),
        (dict(critic_use_peft=True), dict(value_peft_config=LoraConfig(task_type="CAUSAL_LM")), "SEQ_CLS"),
        (dict(critic_use_peft=True), dict(peft_config=POLICY_LORA, adapted=True), "already carries a LoRA adapter"),
    ],
)
def test_contradictory_lora_critic_settings_are_config_errors(tiny, tmp_path, overrides, kwargs, message):
    from peft import get_peft_model

    value_model = tiny.value()
    if kwargs.pop("adapted", False):
        value_model = get_peft_model(value_model, LoraConfig(target_modules=["fc1"], task_type="SEQ_CLS"))
    with pytest.raises(ConfigError, match=message):
        PPOTrainer(tiny.args(tmp_path, **overrides), tiny.tokenizer, tiny.policy(), value_model=value_model,
                   reward_funcs=[tiny.reward_yes], train_dataset=tiny.dataset(), **kwargs)


def test_a_fully_trained_critic_from_a_quantized_reward_model_is_a_config_error(tiny, tmp_path):
    reward_model = tiny.value()
    reward_model.hf_quantizer = object()  # what from_pretrained sets on a 4/8-bit load
    with pytest.raises(ConfigError, match="set critic_use_peft"):
        PPOTrainer(tiny.args(tmp_path), tiny.tokenizer, tiny.policy(), reward_model=reward_model,
                   train_dataset=tiny.dataset())
