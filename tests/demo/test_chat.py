"""`rlhf-recipes chat` / `generate` on tiny saved models: template detection, greedy answers that
match the model's own generation, the stdin loop, LoRA adapter directories."""

import io
import sys

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, set_seed

from rlhf_recipes.tools import chat
from rlhf_recipes.tools.chat import Generator, _chat_loop, load_for_generation, main, template_usable
from rlhf_recipes.cli import main as cli_main
from rlhf_recipes.demo.task import VOCABULARY
from rlhf_recipes.models import build_byte_tokenizer, build_tiny_model, build_word_tokenizer


@pytest.fixture(scope="module")
def word_model_dir(tmp_path_factory):
    set_seed(0)
    tokenizer = build_word_tokenizer(VOCABULARY)
    model = build_tiny_model("tiny:opt", tokenizer)
    path = tmp_path_factory.mktemp("word_model")
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def byte_adapter_dir(tmp_path_factory):
    set_seed(0)
    tokenizer = build_byte_tokenizer()
    base = build_tiny_model("tiny:opt", tokenizer)
    base_dir = tmp_path_factory.mktemp("byte_base")
    base.save_pretrained(base_dir)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base_dir), LoraConfig(r=4, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
    path = tmp_path_factory.mktemp("byte_adapter")
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def test_template_is_used_only_when_the_vocabulary_can_encode_it():
    assert template_usable(build_byte_tokenizer())
    assert not template_usable(build_word_tokenizer(VOCABULARY))
    plain = build_byte_tokenizer()
    plain.chat_template = None
    assert not template_usable(plain)


def test_generate_prints_the_models_greedy_answer(word_model_dir, capsys):
    model, tokenizer = load_for_generation(str(word_model_dir))
    prompt = "Q: max 3 7 1 4 A:"
    ids = tokenizer(prompt, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        expected = model.generate(ids, max_new_tokens=5, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    expected_text = tokenizer.decode(expected[0, ids.shape[1] :], skip_special_tokens=True).strip()
    assert cli_main(["generate", "--model_name_or_path", str(word_model_dir), "--prompt", prompt,
                     "--prompt", "Q: max 1 2 3 9 A:", "--max_new_tokens", "5"]) == 0
    out = capsys.readouterr().out
    assert f"prompt: {prompt}\nanswer: {expected_text}\n" in out
    assert out.count("prompt: ") == 2


def test_sampled_generation_is_seeded(word_model_dir, capsys):
    argv = ["generate", "--model_name_or_path", str(word_model_dir), "--prompt", "Q: max 3 7 1 4 A:",
            "--temperature", "1.0", "--max_new_tokens", "8", "--seed", "5"]
    main(argv)
    first = capsys.readouterr().out
    main(argv)
    assert capsys.readouterr().out == first


def test_chat_loop_answers_each_line_and_handles_commands(word_model_dir):
    model, tokenizer = load_for_generation(str(word_model_dir))
    generator = Generator(model, tokenizer, use_template=False, max_new_tokens=4, temperature=0.0, seed=0)
    out = io.StringIO()
    _chat_loop(generator, io.StringIO("Q: max 3 7 1 4 A:\n\n/reset\nQ: max 1 2 3 9 A:\n/exit\nnever read\n"), out)
    lines = out.getvalue().splitlines()
    assert sum(line.startswith("assistant: ") for line in lines) == 2
    assert "(conversation reset)" in lines


def test_chat_with_a_template_keeps_the_history(byte_adapter_dir, monkeypatch, capsys):
    model, tokenizer = load_for_generation(str(byte_adapter_dir))
    assert hasattr(model, "peft_config")
    seen = []
    generator = Generator(model, tokenizer, use_template=True, max_new_tokens=3, temperature=0.0, seed=0)
    original = chat.generate
    monkeypatch.setattr(chat, "generate", lambda model, tok, prompts, *rest, **kw: seen.append(list(prompts[0])) or
                        original(model, tok, prompts, *rest, **kw))
    _chat_loop(generator, io.StringIO("hello\nhow are you\n"), io.StringIO())
    assert [m["role"] for m in seen[1]] == ["user", "assistant", "user"]
    assert "Human: hello" in tokenizer.apply_chat_template(seen[1], tokenize=False, add_generation_prompt=True)
    monkeypatch.setattr(sys, "stdin", io.StringIO("hi\n"))
    assert main(["chat", "--model_name_or_path", str(byte_adapter_dir), "--max_new_tokens", "3"]) == 0
    assert "assistant: " in capsys.readouterr().out
