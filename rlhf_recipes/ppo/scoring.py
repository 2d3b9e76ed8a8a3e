"""Raw scores for PPO: a reward model and/or Python reward functions behind one interface (the
shaping of their sum is in `experience`).

Reward functions follow TRL GRPO's convention: `func(prompts, completions, **kwargs) -> list[float]`,
where `prompts` are the dataset's prompts as given (strings or chat messages), `completions`
the decoded responses (for chat prompts, `[{"role": "assistant", "content": text}]`), and
`kwargs` the dataset's other columns for the same rows plus `completion_ids`. `None` in the
result marks a row the function cannot score; it counts as non-finite.
"""

from collections.abc import Callable, Sequence
from contextlib import nullcontext

import torch
from transformers import PreTrainedTokenizerBase

from ..data.records import is_messages
from ..models.generation import left_pad
from ..models.introspection import max_positions
from . import microbatches
from .rollout import Rollout, ValueModel

RewardFunc = Callable[..., list[float | None]]


class RewardScorer:
    """Score = reward model at the last real token of prompt + response (plus) each reward function.

    The reward model reads the text as TRL's RewardTrainer trained it. Chat prompts: the chat
    template over prompt + decoded answer, whose end differs from a rollout cut at its stop token
    (Qwen's template ends a turn with `<|im_end|>\n`, GLM-4's with nothing, while a GLM-4 rollout
    stops at `<|user|>`). Plain prompts: the rollout's own tokens, or, with a `reward_tokenizer`
    different from the policy's, the decoded text re-tokenised, plus the reward tokenizer's EOS
    after an answer that stopped (TRL appends it in training).
    `reward_model` is a sequence-classification model or a `ValueModel` over one (under FSDP the sharded
    root, whose own forward gathers the weights the model's sub-modules do not).
    `reward_context()` is entered around the reward model's passes: with a LoRA critic sharing the
    reward model's weights, it disables the critic's adapter, which leaves the reward model.
    """

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        reward_model=None,
        reward_funcs: Sequence[RewardFunc] | None = None,
        reward_tokenizer: PreTrainedTokenizerBase | None = None,
        chunk_size: int = 64,
        reward_context=nullcontext,
    ):
        if reward_model is None and not reward_funcs:
            raise ValueError("PPO needs a reward_model, reward_funcs, or both.")
        self.tokenizer = tokenizer
        if reward_model is not None and not isinstance(reward_model, ValueModel):
            reward_model = ValueModel(reward_model)
        self.reward_model = reward_model.eval() if reward_model is not None else None
        self.reward_funcs = list(reward_funcs or [])
        self.reward_tokenizer = reward_tokenizer if reward_tokenizer is not tokenizer else None
        self.chunk_size = chunk_size
        self.reward_context = reward_context

    def completion_ids(self, rollout: Rollout) -> list[list[int]]:
        return [row[mask.bool()].tolist() for row, mask in zip(rollout.responses, rollout.response_mask, strict=True)]

    def decode(self, rollout: Rollout) -> list[str]:
        return self.tokenizer.batch_decode(self.completion_ids(rollout), skip_special_tokens=True)

    @torch.no_grad()
    def __call__(self, rollout: Rollout, prompts: list, columns: dict[str, list] | None = None) -> torch.Tensor:
        """Raw scores, one float per row of the rollout (before any shaping)."""
        device = rollout.responses.device
        total = torch.zeros(rollout.responses.shape[0], dtype=torch.float32, device=device)
        need_text = self.reward_funcs or self._rendered(prompts)
        texts = self.decode(rollout) if need_text else None
        if self.reward_model is not None:
            total += self._model_scores(rollout, prompts, texts)
        if self.reward_funcs:
            completions = [
                [{"role": "assistant", "content": text}] if is_messages(prompt) else text
                for prompt, text in zip(prompts, texts, strict=True)
            ]
            kwargs = dict(columns or {}, completion_ids=self.completion_ids(rollout))
            for func in self.reward_funcs:
                values = func(prompts=prompts, completions=completions, **kwargs)
                if len(values) != len(prompts):
                    name = getattr(func, "__name__", type(func).__name__)
                    raise ValueError(f"Reward function {name} returned {len(values)} scores for {len(prompts)} rows.")
                total += torch.tensor([float("nan") if v is None else float(v) for v in values], device=device)
        return total

    def _rendered(self, prompts: list) -> bool:
        """Whether the reward model reads re-rendered text instead of the rollout's tokens."""
        return self.reward_model is not None and (self.reward_tokenizer is not None or is_messages(prompts[0]))

    def _model_scores(self, rollout: Rollout, prompts: list, texts: list[str] | None) -> torch.Tensor:
        if not self._rendered(prompts):
            sequence = rollout.prompt_ids, rollout.prompt_mask, rollout.responses, rollout.response_mask
        else:  # left-padded texts: a prompt part without a response part
            ids, mask = (t.to(rollout.responses.device) for t in self._render(rollout, prompts, texts))
            sequence = ids, mask, ids[:, :0], mask[:, :0]
        prompt_ids, prompt_mask, response_ids, response_mask = sequence

        def score(chunk):  # every row of a chunk ends in its last column
            ids, mask = chunk.sequences(prompt_ids, response_ids), chunk.sequences(prompt_mask, response_mask)
            return self.reward_model(ids, mask)[:, -1].float()

        with self.reward_context():
            parts = microbatches.chunks(prompt_mask, response_mask, self.chunk_size)
            return microbatches.over_chunks(score, parts)

    def _render(self, rollout: Rollout, prompts: list, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Chat prompts: the reward model's chat template over prompt + assistant answer. Plain
        prompts: the whole sequence decoded by the policy tokenizer (which keeps the spacing
        between prompt and answer right), plus the reward tokenizer's EOS if the answer stopped.
        Each keeps its last tokens that fit the reward model's positions: the prompt is whole
        here, where the rollout kept only its last `max_prompt_length` tokens."""
        tok = self.reward_tokenizer or self.tokenizer
        if is_messages(prompts[0]):
            full = [tok.apply_chat_template(p + [{"role": "assistant", "content": t}], tokenize=False)
                    for p, t in zip(prompts, texts, strict=True)]
            sequences = tok(full, add_special_tokens=False)["input_ids"]
        else:
            rows = zip(rollout.input_ids, rollout.attention_mask, strict=True)
            decoded = self.tokenizer.batch_decode([row[mask.bool()].tolist() for row, mask in rows],
                                                  skip_special_tokens=True)
            eos = tok.eos_token or ""
            sequences = tok([text + (eos if stop else "") for text, stop in zip(decoded, rollout.has_stop.tolist(),
                                                                                 strict=True)])["input_ids"]
        limit = max_positions(self.reward_model.network.config)
        return left_pad([seq[-limit:] if limit else seq for seq in sequences], tok.pad_token_id)

