"""Every saved model (full, LoRA adapter, merged LoRA; SFT, reward model, PPO policy and critic)
reloads with plain transformers/peft `from_pretrained` and gives the logits it gave before saving."""

import pytest
import torch
from datasets import Dataset
from peft import AutoPeftModelForCausalLM, AutoPeftModelForSequenceClassification, LoraConfig
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer, TrainerCallback
from trl import RewardConfig, SFTConfig

from rlhf_recipes.models import ModelArguments
from rlhf_recipes.ppo import PPOConfig, PPOTrainer
from rlhf_recipes.stages.reward import train_reward
from rlhf_recipes.artifacts.saving import MERGED_SUBDIR
from rlhf_recipes.stages.sft import train_sft

from reliability_helpers import CPU

TEXT = "Q: 3 plus 4? A: 7"
ROWS = [{"prompt": f"Q: {i} plus 1? A:", "chosen": f" {i + 1}", "rejected": f" {i}"} for i in range(8)]
LORA = dict(use_peft=True, lora_r=4, lora_target_modules=["q_proj", "v_proj"], merge_lora=True)


def logits(model, ids) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(input_ids=ids).logits


class LogitsBeforeSaving(TrainerCallback):
    """The trained model's logits at the end of training, before the stage saves (and merges) it."""

    def __init__(self, ids):
        self.ids, self.logits = ids, None

    def on_train_end(self, args, state, control, model=None, **kwargs):
        self.logits = logits(model, self.ids)


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
@pytest.mark.parametrize("stage", ["sft", "reward"])
def test_stage_models_reload_with_the_logits_they_had(stage, lora, tiny_dirs, tmp_path):
    ids = AutoTokenizer.from_pretrained(tiny_dirs["sft"])(TEXT, return_tensors="pt")["input_ids"]
    probe = LogitsBeforeSaving(ids)
    model_args = ModelArguments(model_name_or_path=tiny_dirs["sft"], **(LORA if lora else {}))
    settings = dict(output_dir=str(tmp_path), **CPU, max_length=32,
                    max_steps=2, per_device_train_batch_size=4, learning_rate=1e-2, save_strategy="no")
    if stage == "sft":
        rows = [{"prompt": row["prompt"], "completion": row["chosen"]} for row in ROWS]
        train_sft(model_args, SFTConfig(**settings), Dataset.from_list(rows), callbacks=[probe])
        auto, auto_peft = AutoModelForCausalLM, AutoPeftModelForCausalLM
    else:
        train_reward(model_args, RewardConfig(**settings), Dataset.from_list(ROWS), callbacks=[probe])
        auto, auto_peft = AutoModelForSequenceClassification, AutoPeftModelForSequenceClassification

    if not lora:
        torch.testing.assert_close(logits(auto.from_pretrained(tmp_path), ids), probe.logits)
        return
    # a reward adapter's base is the SFT causal LM, whose config knows nothing of a 1-output score head
    head = {"num_labels": 1} if stage == "reward" else {}
    torch.testing.assert_close(logits(auto_peft.from_pretrained(tmp_path, **head), ids), probe.logits)
    torch.testing.assert_close(logits(auto.from_pretrained(tmp_path / MERGED_SUBDIR), ids), probe.logits,
                               atol=1e-5, rtol=1e-4)
    if stage == "sft":  # the adapter changed the model: reloading the base alone would not pass
        assert not torch.allclose(logits(auto.from_pretrained(tiny_dirs["sft"]), ids), probe.logits)


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_ppo_policy_and_critic_reload_with_the_logits_they_had(lora, tiny_dirs, tmp_path):
    tokenizer = AutoTokenizer.from_pretrained(tiny_dirs["sft"])
    ids = tokenizer(TEXT, return_tensors="pt")["input_ids"]
    args = PPOConfig(output_dir=str(tmp_path), **CPU, max_steps=2,
                     per_device_train_batch_size=4, num_mini_batches=1, num_ppo_epochs=1, response_length=4,
                     max_prompt_length=16, learning_rate=1e-2, sample_every=0, save_strategy="no")
    peft_config = LoraConfig(r=4, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM") if lora else None
    trainer = PPOTrainer(
        args, tokenizer, AutoModelForCausalLM.from_pretrained(tiny_dirs["sft"]),
        value_model=AutoModelForSequenceClassification.from_pretrained(tiny_dirs["reward"]),
        reward_funcs=[lambda prompts, completions, **kwargs: [float(len(c)) for c in completions]],
        train_dataset=Dataset.from_list([{"prompt": row["prompt"]} for row in ROWS]), peft_config=peft_config,
    )
    trainer.train()
    policy, critic = logits(trainer.unwrapped_actor, ids), logits(trainer.unwrapped_critic.model, ids)

    trainer.save_model(merge_lora=lora)

    torch.testing.assert_close(logits(AutoModelForSequenceClassification.from_pretrained(tmp_path / "critic"), ids),
                               critic)
    if not lora:
        torch.testing.assert_close(logits(AutoModelForCausalLM.from_pretrained(tmp_path), ids), policy)
        return
    torch.testing.assert_close(logits(AutoPeftModelForCausalLM.from_pretrained(tmp_path), ids), policy)
    torch.testing.assert_close(logits(AutoModelForCausalLM.from_pretrained(tmp_path / MERGED_SUBDIR), ids), policy,
                               atol=1e-5, rtol=1e-4)
