"""Chat prompts shortened to max_prompt_length on SmolLM2's real tokenizer and ChatML template."""

import pytest
from transformers import AutoTokenizer

from rlhf_recipes.config.errors import ConfigError
from rlhf_recipes.data.truncation import fit_chat_prompt, render_chat_prompt
from rlhf_recipes.models.generation import tokenize_prompts

CONVERSATION = [
    {"role": "user", "content": "What is a good name for a dog? " * 6},
    {"role": "assistant", "content": "Rex, Luna or Max are popular names. " * 4},
    {"role": "user", "content": "Which of them suits a small, very energetic puppy best, and why?"},
]


@pytest.fixture(scope="module")
def tokenizer(smollm2_dir):
    return AutoTokenizer.from_pretrained(smollm2_dir)


def _is_well_formed(text: str) -> bool:
    """Starts with SmolLM2's default system turn, has a whole user turn, ends asking the assistant."""
    return (text.startswith("<|im_start|>system\nYou are a helpful AI assistant named SmolLM")
            and "<|im_start|>user\n" in text and text.endswith("<|im_end|>\n<|im_start|>assistant\n"))


def test_a_prompt_that_fits_is_rendered_unchanged(tokenizer):
    ids, shortened = fit_chat_prompt(CONVERSATION, tokenizer, 10_000)
    assert not shortened and ids == render_chat_prompt(CONVERSATION, tokenizer)


def test_oldest_turns_go_first_and_the_template_stays_whole(tokenizer):
    full = len(render_chat_prompt(CONVERSATION, tokenizer))
    last_turn_only = len(render_chat_prompt(CONVERSATION[2:], tokenizer))
    assert last_turn_only < full
    ids, shortened = fit_chat_prompt(CONVERSATION, tokenizer, last_turn_only)
    text = tokenizer.decode(ids)
    assert shortened and len(ids) == last_turn_only and _is_well_formed(text)
    assert "Rex" not in text and "energetic puppy" in text


def test_then_the_start_of_the_user_message_is_cut(tokenizer):
    budget = len(render_chat_prompt(CONVERSATION[2:], tokenizer)) - 5
    ids, shortened = fit_chat_prompt(CONVERSATION, tokenizer, budget)
    text = tokenizer.decode(ids)
    assert shortened and budget - 2 <= len(ids) <= budget and _is_well_formed(text)
    assert "Which of them" not in text and "puppy best, and why?" in text  # the end of the question is kept


def test_tokenize_prompts_reports_shortened_prompts_and_refuses_an_impossible_budget(tokenizer):
    budget = len(render_chat_prompt(CONVERSATION[2:], tokenizer))
    ids, truncated = tokenize_prompts([CONVERSATION, CONVERSATION[2:]], tokenizer, budget)
    assert truncated == [0] and ids[0] == ids[1]
    with pytest.raises(ConfigError, match="max_prompt_length=8 is shorter than the chat template"):
        tokenize_prompts([CONVERSATION], tokenizer, 8)
