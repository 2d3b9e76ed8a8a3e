import json
import os

import pytest
import torch
from datasets import Dataset
from peft import AutoPeftModelForCausalLM
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import SFTConfig

from rlhf_recipes.artifacts.checkpointing import MARKER
from rlhf_recipes.models import ModelArguments
from rlhf_recipes.config.parsing import ConfigError
from rlhf_recipes.artifacts.saving import MERGED_SUBDIR
from rlhf_recipes.stages.sft import train_sft
from rlhf_recipes.stages.train_and_save import resume_checkpoint

# Eight fixed demonstrations: a tiny model can start memorising them within a few steps.
COLOURS = ["red", "blue", "green", "red", "blue", "green", "red", "blue"]
ROWS = [{"prompt": f"Q: colour of item {i}? A:", "completion": f" {colour}"} for i, colour in enumerate(COLOURS)]


def _config(output_dir, fast, **overrides) -> SFTConfig:
    settings = dict(fast, max_steps=5, per_device_train_batch_size=8, learning_rate=3e-3)
    return SFTConfig(output_dir=str(output_dir), **{**settings, **overrides})


def _logits(model, tokenizer, text="Q: colour of item 3? A: red"):
    ids = tokenizer(text, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        return model.eval()(ids).logits


def test_sft_lowers_the_loss_and_saves_a_reloadable_model(tiny_base, tmp_path, fast):
    trainer = train_sft(ModelArguments(model_name_or_path=tiny_base), _config(tmp_path, fast), Dataset.from_list(ROWS))

    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert len(losses) == 5
    assert losses[-1] < losses[0]
    tokenizer = AutoTokenizer.from_pretrained(tmp_path)
    trained = AutoModelForCausalLM.from_pretrained(tmp_path)
    initial = AutoModelForCausalLM.from_pretrained(tiny_base)
    assert not torch.allclose(_logits(trained, tokenizer), _logits(initial, tokenizer))
    assert json.loads((tmp_path / "trainer_state.json").read_text())["global_step"] == 5


def test_lora_sft_saves_an_adapter_and_merged_weights_with_equal_logits(tiny_base, tmp_path, fast):
    model_args = ModelArguments(
        model_name_or_path=tiny_base, use_peft=True, lora_r=4, lora_target_modules=["q_proj", "v_proj"], merge_lora=True
    )
    train_sft(model_args, _config(tmp_path, fast), Dataset.from_list(ROWS))

    assert (tmp_path / "adapter_config.json").is_file()
    assert not (tmp_path / "model.safetensors").exists()
    tokenizer = AutoTokenizer.from_pretrained(tmp_path)
    adapter = AutoPeftModelForCausalLM.from_pretrained(tmp_path)
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / MERGED_SUBDIR)
    base = AutoModelForCausalLM.from_pretrained(tiny_base)
    torch.testing.assert_close(_logits(merged, tokenizer), _logits(adapter, tokenizer), atol=1e-5, rtol=1e-4)
    assert not torch.allclose(_logits(merged, tokenizer), _logits(base, tokenizer))


def test_resume_true_continues_from_the_latest_checkpoint(tiny_base, tmp_path, fast):
    model_args = ModelArguments(model_name_or_path=tiny_base)
    first_run = _config(tmp_path, fast, max_steps=4, save_strategy="steps", save_steps=2)
    train_sft(model_args, first_run, Dataset.from_list(ROWS))
    state_file = tmp_path / "checkpoint-4" / "trainer_state.json"
    state = json.loads(state_file.read_text())
    state["log_history"].append({"step": 4, "marker": "from checkpoint-4"})
    state_file.write_text(json.dumps(state))

    resumed = _config(tmp_path, fast, max_steps=5, resume_from_checkpoint="true")
    trainer = train_sft(model_args, resumed, Dataset.from_list(ROWS))

    assert trainer.state.global_step == 5
    assert {"step": 4, "marker": "from checkpoint-4"} in trainer.state.log_history
    assert [entry["step"] for entry in trainer.state.log_history if "loss" in entry] == [1, 2, 3, 4, 5]


def test_resume_values(tmp_path, fast):
    for name in ("checkpoint-2", "checkpoint-10", "checkpoint-12"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "trainer_state.json").write_text("{}")
    for name in ("checkpoint-2", "checkpoint-10"):  # checkpoint-12's save never finished
        (tmp_path / name / MARKER).touch()

    def resolve(value):
        return resume_checkpoint(SFTConfig(output_dir=str(tmp_path), resume_from_checkpoint=value, **fast))

    assert resolve(None) is None
    assert resolve("false") is None
    assert resolve("true") == os.path.join(str(tmp_path), "checkpoint-10")
    assert resolve(str(tmp_path / "checkpoint-2")) == str(tmp_path / "checkpoint-2")
    with pytest.raises(ConfigError, match="not a checkpoint directory"):
        resolve(str(tmp_path / "checkpoint-3"))
    with pytest.raises(ConfigError, match="not a complete checkpoint"):
        resolve(str(tmp_path / "checkpoint-12"))
    with pytest.raises(ConfigError, match="holds no complete checkpoint"):
        resume_checkpoint(SFTConfig(output_dir=str(tmp_path / "empty"), resume_from_checkpoint="true", **fast))


def test_qlora_sft_trains_lora_on_a_4bit_base_and_saves_the_adapter(tiny_base, tmp_path, fast):
    bnb = pytest.importorskip("bitsandbytes")
    model_args = ModelArguments(
        model_name_or_path=tiny_base,
        load_in_4bit=True,
        use_peft=True,
        lora_r=4,
        lora_target_modules=["q_proj", "v_proj"],
    )

    trainer = train_sft(model_args, _config(tmp_path, fast, max_steps=2), Dataset.from_list(ROWS))

    assert isinstance(trainer.model.get_base_model().model.decoder.layers[0].self_attn.k_proj, bnb.nn.Linear4bit)
    assert trainer.state.global_step == 2
    adapter = AutoPeftModelForCausalLM.from_pretrained(tmp_path)
    assert adapter.peft_config["default"].r == 4


def test_merge_lora_without_lora_fails_before_training(tiny_base, tmp_path, fast):
    with pytest.raises(ConfigError, match="merge_lora: true needs LoRA"):
        model_args = ModelArguments(model_name_or_path=tiny_base, merge_lora=True)
        train_sft(model_args, _config(tmp_path, fast), Dataset.from_list(ROWS))
    assert not tmp_path.exists() or not any(tmp_path.iterdir())
