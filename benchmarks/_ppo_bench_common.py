"""Pieces shared by both sides of `ppo_vs_trl.py`; imported from the project venv and the trl 1.11 venv.

Only torch and transformers are used here (both venvs have the same versions), so the two
workers load the same workload from disk, score with the same reward and time the same way.
"""

import json
import time
from pathlib import Path

import torch
from torch import nn
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer, TrainerCallback
from transformers.modeling_outputs import BaseModelOutput, SequenceClassifierOutput

DIGITS = "0123456789"


class _CountBackbone(nn.Module):
    """Per position: how many target tokens the (attended part of the) sequence has up to there."""

    def __init__(self, target_ids: list[int]):
        super().__init__()
        self.register_buffer("target_ids", torch.tensor(target_ids), persistent=False)

    def forward(self, input_ids, attention_mask=None, **_):
        hits = torch.isin(input_ids, self.target_ids)
        if attention_mask is not None:
            hits = hits & attention_mask.bool()
        counts = hits.cumsum(dim=1).unsqueeze(-1).float()
        return BaseModelOutput(last_hidden_state=counts, hidden_states=(counts,))


class _IdentityHead(nn.Module):
    """The score head of `DigitReward`: returns the counts unchanged. Its `weight` holds no
    parameter; callers that cast the hidden states to the head's dtype read it (float32)."""

    def __init__(self):
        super().__init__()
        self.register_buffer("weight", torch.ones(1), persistent=False)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return hidden


class DigitReward(nn.Module):
    """A Python reward function dressed as a reward model: the number of digit tokens in the text.

    The prompts contain no digits, so the score counts the digits in the response (about
    response_length x 10/260 at random init, response_length when the policy writes only
    digits). It is served through both interfaces a PPO trainer may use:
    - TRL 1.11's `get_reward`: `getattr(model, model.base_model_prefix)(...).hidden_states[-1]`,
      then `model.score(hidden)` per position, read at the last response token;
    - a sequence-classification call `model(input_ids, attention_mask).logits` of shape
      (batch, 1), read at the last attended token like `*ForSequenceClassification`.
    It has no parameters, so it costs the same negligible time in both trainers.
    """

    base_model_prefix = "backbone"

    def __init__(self, target_ids: list[int]):
        super().__init__()
        self.backbone = _CountBackbone(target_ids)
        self.score = _IdentityHead()

    def forward(self, input_ids, attention_mask=None, **_):
        per_position = self.score(self.backbone(input_ids, attention_mask).last_hidden_state)
        if attention_mask is None:
            last = torch.full((input_ids.shape[0],), input_ids.shape[1] - 1, device=input_ids.device)
        else:
            positions = torch.arange(input_ids.shape[1], device=input_ids.device)
            last = (attention_mask.bool() * positions).argmax(dim=1)
        logits = per_position[torch.arange(input_ids.shape[0], device=input_ids.device), last]
        return SequenceClassifierOutput(logits=logits)


def load_workload(workdir: Path, dtype: torch.dtype = torch.float32):
    """Tokenizer, policy, reference, value model, reward and prompt rows ({"prompt", "input_ids"}) written by
    `ppo_vs_trl.py` (reward: `DigitReward`) or `ppo_vs_trl_real.py` (reward: the model in workdir/reward); the
    models' weights in `dtype`."""
    tokenizer = AutoTokenizer.from_pretrained(workdir / "tokenizer")
    tokenizer.padding_side = "left"  # prompts are left-padded for generation; not kept by save_pretrained
    policy = AutoModelForCausalLM.from_pretrained(workdir / "policy", dtype=dtype)
    ref = AutoModelForCausalLM.from_pretrained(workdir / "policy", dtype=dtype)
    value = AutoModelForSequenceClassification.from_pretrained(workdir / "value", dtype=dtype)
    if (workdir / "reward").is_dir():
        reward = AutoModelForSequenceClassification.from_pretrained(workdir / "reward", dtype=dtype)
    else:
        reward = DigitReward(tokenizer.convert_tokens_to_ids(list(DIGITS)))
    prompts = [json.loads(line) for line in (workdir / "prompts.jsonl").read_text().splitlines()]
    return tokenizer, policy, ref, value, reward, prompts


class UpdateTimer(TrainerCallback):
    """Timestamps every PPO update (`on_step_end`) and splits it into sampling, rollout passes and training.

    The seconds of update k are the gap between the ends of updates k-1 and k, so everything a
    trainer does per update (generation, scoring, optimisation, logging, its `gc.collect()`
    calls) is counted. Both wall time and this process's CPU time are recorded: on a shared
    machine other processes stretch the wall time, while the CPU time of a single-threaded run
    barely moves. Within an update:
    - sampling: time inside `policy.generate` (TRL), or inside the function given to `time_sampling`
      (ours samples with its own KV-cache loop);
    - training: from the first forward pass of the policy with gradients on (the first PPO microbatch) to
      the end of the update: PPO epochs, optimizer steps, logging;
    - rollout passes: the rest (reference, value and reward passes, advantages; update minus the two above).
    """

    def __init__(self, policy):
        self.step_ends: list[float] = []
        self.step_end_cpu: list[float] = []
        self.logs: list[dict] = []
        self._sampling = {"wall": 0.0, "cpu": 0.0}
        self.sampling_at_step_end: list[dict] = []
        self.training_starts: list[tuple[float, float] | None] = []
        self._training_start = None
        self._start = self._start_cpu = None
        self.time_sampling(policy, "generate")
        policy.register_forward_pre_hook(self._mark_training)

    def time_sampling(self, owner, name: str) -> None:
        """Count the time spent inside `owner.<name>(...)` as sampling."""
        inner = getattr(owner, name)

        def timed(*args, **kwargs):
            _sync()
            wall, cpu = time.perf_counter(), time.process_time()
            try:
                return inner(*args, **kwargs)
            finally:
                _sync()
                self._sampling["wall"] += time.perf_counter() - wall
                self._sampling["cpu"] += time.process_time() - cpu

        setattr(owner, name, timed)

    def _mark_training(self, module, args):
        if torch.is_grad_enabled() and self._training_start is None:
            _sync()
            self._training_start = (time.perf_counter(), time.process_time())

    def on_train_begin(self, args, state, control, **kwargs):
        self._start, self._start_cpu = time.perf_counter(), time.process_time()

    def on_step_end(self, args, state, control, **kwargs):
        _sync()
        self.step_ends.append(time.perf_counter())
        self.step_end_cpu.append(time.process_time())
        self.sampling_at_step_end.append(dict(self._sampling))
        self.training_starts.append(self._training_start)
        self._training_start = None

    def on_log(self, args, state, control, logs=None, **kwargs):
        self.logs.append(dict(logs or {}))

    def result(self) -> dict:
        """Per-update wall and CPU seconds (update 1 measured from `on_train_begin`), and of those the sampling
        and training seconds (None for training where an update ran no gradient pass)."""

        def gaps(points):
            return [b - a for a, b in zip(points, points[1:])]

        def training(index, clock):
            start = self.training_starts[index]
            end = (self.step_ends, self.step_end_cpu)[clock][index]
            return None if start is None else end - start[clock]

        updates = range(len(self.step_ends))
        return {
            "update_seconds": gaps([self._start, *self.step_ends]),
            "update_cpu_seconds": gaps([self._start_cpu, *self.step_end_cpu]),
            "generate_seconds": gaps([0.0, *(s["wall"] for s in self.sampling_at_step_end)]),
            "sampling_cpu_seconds": gaps([0.0, *(s["cpu"] for s in self.sampling_at_step_end)]),
            "training_seconds": [training(k, 0) for k in updates],
            "training_cpu_seconds": [training(k, 1) for k in updates],
        }


def _sync() -> None:
    """Wait for queued GPU work, so that a timestamp covers it (no-op on CPU)."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def write_json(path: Path, payload: dict) -> None:
    path.write_text(json.dumps(payload, indent=1))
