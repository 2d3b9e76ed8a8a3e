"""The one generation helper: its draws are `model.generate`'s at the same seed, responses end at the
first stop token, and the model's own end-of-turn tokens stop it too."""

import torch
from transformers import set_seed

from rlhf_recipes.demo.task import VOCABULARY
from rlhf_recipes.models import build_tiny_model, build_word_tokenizer
from rlhf_recipes.models.generation import SamplingConfig, generate, left_pad, stop_tokens_of, tokenize_prompts

PROMPTS = ["Q: max 3 7 1 4 A:", "Q: max 1 2 A:", "Q: max 5 5 0 2 A:"] * 8


def _model_and_tokenizer():
    tokenizer = build_word_tokenizer(VOCABULARY)
    set_seed(0)
    return build_tiny_model("tiny:opt", tokenizer).eval(), tokenizer


def test_sampled_responses_are_the_draws_of_generate_at_the_same_seed():
    model, tokenizer = _model_and_tokenizer()
    pad, eos = tokenizer.pad_token_id, tokenizer.eos_token_id
    config = SamplingConfig(max_new_tokens=6, pad_token_id=pad, stop_token_ids=(eos,))
    torch.manual_seed(5)
    ours = generate(model, tokenizer, PROMPTS, config, batch_size=len(PROMPTS))
    prompt_ids, prompt_mask = left_pad(tokenize_prompts(PROMPTS, tokenizer)[0], pad)
    torch.manual_seed(5)
    with torch.no_grad():
        output = model.generate(input_ids=prompt_ids, attention_mask=prompt_mask, do_sample=True, top_k=0, top_p=1.0,
                                max_new_tokens=6, pad_token_id=pad, eos_token_id=eos)
    expected = []
    for row in output[:, prompt_ids.shape[1] :].tolist():
        expected.append(row[: row.index(eos) + 1] if eos in row else row)
    assert ours == expected
    assert any(eos in row for row in ours) and any(len(row) > 1 for row in ours)


def test_the_generation_configs_end_of_turn_tokens_stop_too():
    model, tokenizer = _model_and_tokenizer()
    model.generation_config.eos_token_id = [tokenizer.eos_token_id, 7]
    assert stop_tokens_of(model, tokenizer) == (tokenizer.eos_token_id, 7)
    model.generation_config.eos_token_id = None
    assert stop_tokens_of(model, tokenizer) == (tokenizer.eos_token_id,)
