"""The Chinese recipes' data through the tokenizers the offline tests use, and through chat templates."""

import pytest

from rlhf_recipes.data import DataArguments, load_stage_dataset
from rlhf_recipes.models import FALLBACK_CHAT_TEMPLATE, ModelArguments, build_byte_tokenizer, load_tokenizer

CHINESE_FILES = {
    "llamafactory_alpaca_zh_demo.json": "sft",
    "llamafactory_dpo_zh_demo.json": "reward",
    "medicalgpt_dpo_zh_500.jsonl": "reward",
    "medicalgpt_medical_reward_zh.jsonl": "reward",
}
SPLIT = {"sft": "1,0,0", "reward": "0,1,0"}
CHATML = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _conversations(rows, stage: str):
    """Every full conversation of the stage's rows, as message lists."""
    answers = ("completion",) if stage == "sft" else ("chosen", "rejected")
    for row in rows:
        prompt = row["prompt"] if isinstance(row["prompt"], list) else [{"role": "user", "content": row["prompt"]}]
        for column in answers:
            answer = row[column] if isinstance(row[column], list) else [{"role": "assistant", "content": row[column]}]
            yield prompt + answer


@pytest.mark.parametrize("name", sorted(CHINESE_FILES))
def test_byte_level_tokenizer_round_trips_every_chinese_row(name, shared_data):
    stage = CHINESE_FILES[name]
    args = DataArguments(dataset_name=str(shared_data / name), data_split=SPLIT[stage], eval_split_size=0)
    rows = load_stage_dataset(args, stage)["train"]
    tokenizer = build_byte_tokenizer()
    conversations = list(_conversations(rows, stage))
    assert len(conversations) >= len(rows)
    for conversation in conversations:
        text = tokenizer.apply_chat_template(conversation, tokenize=False)
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        assert tokenizer.unk_token_id not in ids
        assert tokenizer.decode(ids) == text
        content = conversation[-1]["content"]  # no special tokens inside: one token per UTF-8 byte
        assert len(tokenizer(content, add_special_tokens=False)["input_ids"]) == len(content.encode("utf-8"))
    assert any("\u4e00" <= ch <= "\u9fff" for ch in conversations[0][-1]["content"])


def test_a_tokenizer_with_its_own_chat_template_keeps_it(tmp_path, shared_data):
    own = build_byte_tokenizer()
    own.chat_template = CHATML
    own.save_pretrained(tmp_path)
    tokenizer = load_tokenizer(ModelArguments(model_name_or_path="tiny:qwen2", tokenizer_name_or_path=str(tmp_path)))
    messages = [{"role": "user", "content": "识别并解释给定列表中的两个科学理论"}]
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert text == "<|im_start|>user\n识别并解释给定列表中的两个科学理论<|im_end|>\n<|im_start|>assistant\n"


def test_a_tokenizer_without_a_chat_template_gets_the_documented_fallback(tmp_path):
    bare = build_byte_tokenizer()
    bare.chat_template = None
    bare.save_pretrained(tmp_path)
    tokenizer = load_tokenizer(ModelArguments(model_name_or_path="tiny:opt", tokenizer_name_or_path=str(tmp_path)))
    assert tokenizer.chat_template == FALLBACK_CHAT_TEMPLATE
    text = tokenizer.apply_chat_template([{"role": "user", "content": "你好"}], tokenize=False, add_generation_prompt=True)
    assert text == "Human: 你好\n\nAssistant:"
