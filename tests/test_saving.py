import pytest
import torch
from peft import AutoPeftModelForCausalLM, LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM

from rlhf_recipes.models import ModelArguments, load_model, load_tokenizer
from rlhf_recipes.artifacts.saving import MERGED_SUBDIR, save_model_and_tokenizer


def _tiny(base_dir=None):
    """A tiny OPT; saved to and reloaded from `base_dir` so that an adapter can name its base."""
    args = ModelArguments(model_name_or_path="tiny:opt")
    tokenizer = load_tokenizer(args)
    model = load_model(args, tokenizer)
    if base_dir is not None:
        model.save_pretrained(base_dir)
        model = AutoModelForCausalLM.from_pretrained(base_dir)
    return model.eval(), tokenizer


def test_lora_adapter_and_merged_weights_reload_with_equal_logits(tmp_path):
    model, tokenizer = _tiny(tmp_path / "base")
    tmp_path = tmp_path / "out"
    peft_model = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    ids = tokenizer("some text", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        expected = peft_model(ids).logits

    merged_dir = save_model_and_tokenizer(peft_model, tokenizer, str(tmp_path), merge_lora=True)

    assert merged_dir == str(tmp_path / MERGED_SUBDIR)
    adapter = AutoPeftModelForCausalLM.from_pretrained(tmp_path).eval()
    merged = AutoModelForCausalLM.from_pretrained(merged_dir).eval()
    with torch.no_grad():
        torch.testing.assert_close(adapter(ids).logits, expected)
        torch.testing.assert_close(merged(ids).logits, expected, atol=1e-5, rtol=1e-4)


def test_merge_without_lora_is_an_error(tmp_path):
    model, tokenizer = _tiny()
    with pytest.raises(ValueError, match="no LoRA adapter"):
        save_model_and_tokenizer(model, tokenizer, str(tmp_path), merge_lora=True)
