import pytest
import torch
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

from rlhf_recipes.models import (
    TINY_FAMILIES,
    ModelArguments,
    build_byte_tokenizer,
    build_word_tokenizer,
    load_model,
    load_tokenizer,
)
from rlhf_recipes.models.loading import _quantization_kwargs
from rlhf_recipes.models.tokenizers import FALLBACK_CHAT_TEMPLATE


def test_byte_tokenizer_round_trips_any_text():
    tokenizer = build_byte_tokenizer()
    text = "Human: 你好, ça va?\n\nAssistant: 42"
    ids = tokenizer(text)["input_ids"]
    assert len(ids) == len(text.encode("utf-8"))
    assert tokenizer.decode(ids) == text
    assert len(tokenizer) == 260


@pytest.mark.parametrize("build", [build_byte_tokenizer, lambda: build_word_tokenizer(["a", "b"])])
def test_local_tokenizers_reload_with_left_padding_and_chat_template(build, tmp_path):
    build().save_pretrained(tmp_path)
    reloaded = AutoTokenizer.from_pretrained(tmp_path)
    assert reloaded.padding_side == "left"
    assert reloaded.chat_template == FALLBACK_CHAT_TEMPLATE
    padded = reloaded(["a", "a b"], padding=True)["input_ids"]
    assert padded[0][0] == reloaded.pad_token_id


def test_word_tokenizer_maps_unknown_words_to_unk():
    tokenizer = build_word_tokenizer(["Q:", "max", "A:", "1", "2"])
    ids = tokenizer("Q: max 1 7 A:")["input_ids"]
    assert ids[3] == tokenizer.unk_token_id
    assert tokenizer.decode(ids[:3]) == "Q: max 1"


@pytest.mark.parametrize("family", sorted(TINY_FAMILIES))
def test_tiny_models_save_and_reload_by_path_with_equal_logits(family, tmp_path):
    args = ModelArguments(model_name_or_path=f"tiny:{family}")
    tokenizer = load_tokenizer(args)
    model = load_model(args, tokenizer).eval()
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)

    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    ids = AutoTokenizer.from_pretrained(tmp_path)("hello", return_tensors="pt")["input_ids"]
    torch.testing.assert_close(model(ids).logits, reloaded(ids).logits)

    reward = load_model(ModelArguments(model_name_or_path=str(tmp_path)), tokenizer, task="seq-cls")
    assert isinstance(reward, AutoModelForSequenceClassification._model_mapping[type(reward.config)])
    assert reward.config.num_labels == 1
    assert reward.config.pad_token_id == tokenizer.pad_token_id


def test_overrides_and_dropout_reach_the_config():
    args = ModelArguments(
        model_name_or_path="tiny:opt",
        model_config_overrides='{"hidden_size": 32, "word_embed_proj_dim": 32, "num_hidden_layers": 1}',
        dropout=0.1,
    )
    model = load_model(args, load_tokenizer(args))
    assert (model.config.hidden_size, model.config.num_hidden_layers) == (32, 1)
    assert model.config.dropout == model.config.attention_dropout == 0.1
    # the layers themselves, not only the config, must carry it
    assert model.model.decoder.layers[0].dropout == 0.1


def test_bad_overrides_json_is_rejected():
    with pytest.raises(ValueError, match="not valid JSON"):
        ModelArguments(model_name_or_path="tiny:opt", model_config_overrides="{hidden_size: 32")


def test_unknown_tiny_family_lists_the_valid_ones():
    args = ModelArguments(model_name_or_path="tiny:gpt9")
    with pytest.raises(ValueError, match="Unknown tiny model family 'gpt9'.*opt"):
        load_model(args, load_tokenizer(args))


def test_quantization_requires_lora():
    args = ModelArguments(model_name_or_path="tiny:opt", load_in_4bit=True)
    with pytest.raises(ValueError, match="use_peft"):
        _quantization_kwargs(args)
