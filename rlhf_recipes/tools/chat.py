"""Talk to, or generate with, any stage's saved model.

`rlhf-recipes generate --model_name_or_path DIR --prompt "..." [--prompt ...]` prints one
completion per prompt; `rlhf-recipes chat --model_name_or_path DIR` reads turns from stdin until
EOF or `/exit` (`/reset` forgets the conversation). A LoRA adapter directory is loaded on its base
model. The tokenizer's chat template is applied when it has one whose own words it can encode
(the demo's closed word-level vocabulary cannot encode "Human:"), else prompts are plain text;
`--chat_template yes|no` overrides the check.
"""

import argparse
import os
import sys
from collections.abc import Sequence

import torch
from peft import AutoPeftModelForCausalLM
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase

from ..models.generation import SamplingConfig, generate, stop_tokens_of
from ..models.gguf import resolve_model_path


def template_usable(tokenizer: PreTrainedTokenizerBase) -> bool:
    """True when the tokenizer has a chat template and encodes its wrapper text without unknown tokens."""
    if not tokenizer.chat_template:
        return False
    rendered = tokenizer.apply_chat_template([{"role": "user", "content": ""}], tokenize=False, add_generation_prompt=True)
    ids = tokenizer(rendered, add_special_tokens=False)["input_ids"]
    return tokenizer.unk_token_id is None or tokenizer.unk_token_id not in ids


def load_for_generation(path: str):
    """(model, tokenizer) from a stage's output directory (or a GGUF file / its alias), in eval mode, on GPU
    when there is one."""
    path = resolve_model_path(path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    is_adapter = os.path.isfile(os.path.join(path, "adapter_config.json"))
    model = (AutoPeftModelForCausalLM if is_adapter else AutoModelForCausalLM).from_pretrained(path)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    return model.to(device).eval(), tokenizer


class Generator:
    """Completions of a prompt or a conversation with one model, template applied or not."""

    def __init__(self, model, tokenizer, use_template: bool, max_new_tokens: int, temperature: float, seed: int):
        self.model, self.tokenizer, self.use_template = model, tokenizer, use_template
        self.config = SamplingConfig(
            max_new_tokens=max_new_tokens,
            pad_token_id=tokenizer.pad_token_id,
            temperature=temperature or 1.0,
            stop_token_ids=stop_tokens_of(model, tokenizer),
            greedy=temperature == 0,
        )
        torch.manual_seed(seed)

    def reply(self, messages: list[dict]) -> str:
        """The answer to the conversation (with the template), or to its last message as plain text."""
        prompt = messages if self.use_template else messages[-1]["content"]
        (answer,) = generate(self.model, self.tokenizer, [prompt], self.config, batch_size=1)
        return self.tokenizer.decode(answer, skip_special_tokens=True).strip()


def _parser(command: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"rlhf-recipes {command}", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model_name_or_path", required=True, help="A stage's output directory (or a Hub model).")
    if command == "generate":
        parser.add_argument("--prompt", action="append", required=True, help="A prompt; repeat for several.")
    parser.add_argument("--max_new_tokens", type=int, default=64)
    parser.add_argument("--temperature", type=float, default=0.0, help="0 = greedy decoding.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--chat_template", choices=("auto", "yes", "no"), default="auto")
    return parser


def _chat_loop(generator: Generator, lines, out) -> None:
    messages: list[dict] = []
    print("Type a message; /reset starts over, /exit or Ctrl-D quits.", file=out)
    for line in lines:
        text = line.rstrip("\n")
        if text.strip() == "/exit":
            break
        if text.strip() == "/reset":
            messages = []
            print("(conversation reset)", file=out)
            continue
        if not text.strip():
            continue
        messages = (messages if generator.use_template else []) + [{"role": "user", "content": text}]
        answer = generator.reply(messages)
        messages.append({"role": "assistant", "content": answer})
        print(f"assistant: {answer}", file=out, flush=True)


def main(argv: Sequence[str]) -> int:
    """`argv[0]` is "chat" or "generate" (as the CLI passes it); the rest are the options."""
    command, rest = argv[0], list(argv[1:])
    if command not in ("chat", "generate"):
        raise ValueError(f"rlhf_recipes.tools.chat.main expects 'chat' or 'generate' first, got {command!r}.")
    args = _parser(command).parse_args(rest)
    model, tokenizer = load_for_generation(args.model_name_or_path)
    use_template = template_usable(tokenizer) if args.chat_template == "auto" else args.chat_template == "yes"
    generator = Generator(model, tokenizer, use_template, args.max_new_tokens, args.temperature, args.seed)
    if command == "generate":
        for prompt in args.prompt:
            print(f"prompt: {prompt}\nanswer: {generator.reply([{'role': 'user', 'content': prompt}])}\n")
        return 0
    _chat_loop(generator, sys.stdin, sys.stdout)
    return 0
