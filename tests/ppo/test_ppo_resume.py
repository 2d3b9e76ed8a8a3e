"""Checkpoints: a resumed run continues exactly like an uninterrupted one; incomplete checkpoints
are never resumed from; rotation keeps the newest."""

import json
import os

import pytest
import torch

from rlhf_recipes.config.parsing import ConfigError
from rlhf_recipes.ppo import PPOTrainer
from rlhf_recipes.artifacts.checkpointing import MARKER, latest_checkpoint, resolve_resume


def read_log(output_dir):
    with open(output_dir / "ppo_log.jsonl", encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


def make_trainer(tiny, output_dir, **overrides):
    # adaptive KL so that the controller's state matters; 48 prompts / 16 per step: step 4 starts epoch 2.
    # A constant learning rate: a linear schedule depends on max_steps, which the two runs change.
    args = tiny.args(output_dir, adaptive_kl=True, target_kl=0.01, kl_horizon=100, kl_coef=0.05,
                     lr_scheduler_type="constant", **overrides)
    return PPOTrainer(args, tiny.tokenizer, tiny.policy(), value_model=tiny.value(),
                      reward_funcs=[tiny.reward_yes], train_dataset=tiny.dataset())


def test_resume_continues_at_the_next_step_with_the_same_prompts_weights_and_kl_state(tiny, tmp_path):
    straight = make_trainer(tiny, tmp_path / "straight", max_steps=5)
    straight.train()

    first = make_trainer(tiny, tmp_path / "resumed", max_steps=3, save_strategy="steps", save_steps=2,
                         save_total_limit=1)
    first.train()
    assert sorted(p.name for p in (tmp_path / "resumed").glob("checkpoint-*")) == ["checkpoint-3"]  # rotated
    second = make_trainer(tiny, tmp_path / "resumed", max_steps=5)
    second.train(resume_from_checkpoint=True)

    full, resumed = read_log(tmp_path / "straight"), read_log(tmp_path / "resumed")
    assert [row["step"] for row in resumed] == [1, 2, 3, 4, 5]
    assert [row["prompt_indices"] for row in resumed] == [row["prompt_indices"] for row in full]
    assert sorted(i for row in full[:3] for i in row["prompt_indices"]) == list(range(48))  # one epoch, no repeats
    assert resumed[3]["kl_coef"] == pytest.approx(full[3]["kl_coef"], rel=1e-9)
    assert full[3]["kl_coef"] != full[0]["kl_coef"]
    # optimizer moments, scheduler, RNG and weights restored: the continuation matches bit for bit
    for name, weight in straight.unwrapped_actor.state_dict().items():
        torch.testing.assert_close(second.unwrapped_actor.state_dict()[name], weight, rtol=0, atol=0)
    for name, weight in straight.unwrapped_critic.state_dict().items():
        torch.testing.assert_close(second.unwrapped_critic.state_dict()[name], weight, rtol=0, atol=0)
    assert second.actor_scheduler.get_last_lr() == straight.actor_scheduler.get_last_lr()


def test_logs_keep_only_the_steps_the_weights_come_from(tiny, tmp_path):
    first = make_trainer(tiny, tmp_path, max_steps=3, save_strategy="steps", save_steps=2, sample_every=1)
    first.train()
    with open(tmp_path / "ppo_log.jsonl", "a", encoding="utf-8") as handle:
        handle.write('{"step": 4, "objective/kl": 0.')  # a line torn by a kill
    second = make_trainer(tiny, tmp_path, max_steps=4, sample_every=1)
    second.train(resume_from_checkpoint=str(tmp_path / "checkpoint-2"))  # step 3 is redone

    assert [row["step"] for row in read_log(tmp_path)] == [1, 2, 3, 4]
    with open(tmp_path / "samples.jsonl", encoding="utf-8") as handle:
        sample_steps = [json.loads(line)["step"] for line in handle]
    per_step = tiny.args(tmp_path).num_sample_completions
    assert sample_steps == [step for step in (1, 2, 3, 4) for _ in range(per_step)]

    make_trainer(tiny, tmp_path, max_steps=1).train()  # a fresh run in the same output_dir
    assert [row["step"] for row in read_log(tmp_path)] == [1]


def test_resume_ignores_checkpoints_without_the_completion_marker(tiny, tmp_path):
    trainer = make_trainer(tiny, tmp_path, max_steps=1, save_strategy="steps", save_steps=1)
    trainer.train()
    complete = tmp_path / "checkpoint-1"
    assert (complete / MARKER).is_file() and (tmp_path / "latest").read_text() == "checkpoint-1"
    # a crash while writing step 7 leaves a directory without the marker (and a stale pointer)
    broken = tmp_path / "checkpoint-7"
    broken.mkdir()
    (broken / "trainer_state.json").write_text("{}")
    (tmp_path / "latest").write_text("checkpoint-7")
    assert latest_checkpoint(str(tmp_path)) == str(complete)
    assert resolve_resume(True, str(tmp_path)) == str(complete)
    with pytest.raises(ConfigError, match="not a complete"):
        resolve_resume(str(broken), str(tmp_path))
    with pytest.raises(ConfigError, match="no complete checkpoint"):
        resolve_resume("true", str(tmp_path / "empty"))
    assert resolve_resume("false", str(tmp_path)) is None
    assert not any(name.startswith(".tmp-") for name in os.listdir(tmp_path))


@pytest.mark.parametrize("lora_critic", [False, True])
def test_a_lora_run_resumes_from_its_adapter_checkpoint(tiny, tmp_path, lora_critic):
    from peft import LoraConfig

    def lora_trainer(output_dir, **overrides):
        args = tiny.args(output_dir, lr_scheduler_type="constant", critic_use_peft=lora_critic, **overrides)
        lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
        # the LoRA critic is the reward model itself with an adapter: scores depend on restoring it right
        models = dict(reward_model=tiny.value(seed=5)) if lora_critic else dict(
            value_model=tiny.value(), reward_funcs=[tiny.reward_yes])
        return PPOTrainer(args, tiny.tokenizer, tiny.policy(), train_dataset=tiny.dataset(), peft_config=lora,
                          **models)

    straight = lora_trainer(tmp_path / "straight", max_steps=2)
    straight.train()
    lora_trainer(tmp_path / "resumed", max_steps=1, save_strategy="steps", save_steps=1).train()
    for part in ["actor"] + (["critic"] if lora_critic else []):
        assert (tmp_path / "resumed" / "checkpoint-1" / part / "adapter_model.safetensors").is_file()
    resumed = lora_trainer(tmp_path / "resumed", max_steps=2)
    resumed.train(resume_from_checkpoint=str(tmp_path / "resumed" / "checkpoint-1"))
    assert read_log(tmp_path / "resumed")[-1]["objective/scores"] == read_log(tmp_path / "straight")[-1][
        "objective/scores"]
    for model in ("unwrapped_actor", "unwrapped_critic"):
        weights = getattr(resumed, model).state_dict()
        for name, weight in getattr(straight, model).state_dict().items():
            torch.testing.assert_close(weights[name], weight, rtol=0, atol=0)
