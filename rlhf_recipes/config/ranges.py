"""The allowed range of every numeric setting of the stages, in one table, standard library only.

Used twice: on the raw YAML + command-line values before anything heavy is imported (`precheck`), and
on the parsed dataclasses (`parse_args`, and `__post_init__` of the package's own argument classes),
so a learning rate of -0.001 or a batch size of 0 fails with the field's name instead of a torch or
DataLoader error after the model has loaded. A field name means the same thing in every stage that
has it; `None` (an unset optional field) always passes. Rules that relate two fields (PPO's
minibatches dividing the batch) live with their dataclass.
"""

import math
from collections.abc import Mapping
from dataclasses import dataclass

from .errors import ConfigError


@dataclass(frozen=True)
class Range:
    """`low <= value <= high` (strict where `*_open`), a whole number when `whole`, or one of `also`, or
    with `or_count` any whole number >= 1 (a fraction or a row count)."""

    low: float = -math.inf
    high: float = math.inf
    low_open: bool = False
    high_open: bool = False
    whole: bool = False
    also: tuple = ()
    or_count: bool = False
    note: str = ""

    def allows(self, value: float) -> bool:
        if value in self.also or (self.or_count and value >= 1 and float(value).is_integer()):
            return True
        if self.whole and not float(value).is_integer():
            return False
        above = value > self.low if self.low_open else value >= self.low
        below = value < self.high if self.high_open else value <= self.high
        return above and below

    def describe(self) -> str:
        kind = "a whole number" if self.whole else "a fraction" if self.or_count else "a number"
        if self.low > -math.inf and self.high < math.inf:
            text = f"{kind} in {'(' if self.low_open else '['}{self.low:g}, {self.high}{')' if self.high_open else ']'}"
        elif self.low > -math.inf:
            text = f"{kind} {'>' if self.low_open else '>='} {self.low:g}"
        else:
            text = kind
        alternatives = [*(f"{value:g}" for value in self.also), text]
        text = " or ".join(alternatives + ["a whole row count >= 1"] * self.or_count)
        return f"{text} ({self.note})" if self.note else text


POSITIVE = Range(low=0, low_open=True)
NON_NEGATIVE = Range(low=0)
COUNT = Range(low=1, whole=True)
WHOLE_NON_NEGATIVE = Range(low=0, whole=True)
PROBABILITY = Range(low=0, high=1, high_open=True)  # dropout-like: 1 would drop everything
UNIT = Range(low=0, high=1)

RANGES: dict[str, Range] = {
    # transformers.TrainingArguments (every stage)
    "learning_rate": POSITIVE,
    "critic_learning_rate": POSITIVE,
    "per_device_train_batch_size": COUNT,
    "per_device_eval_batch_size": COUNT,
    "gradient_accumulation_steps": COUNT,
    "num_train_epochs": POSITIVE,
    "max_steps": Range(low=1, whole=True, also=(-1,), note="-1 trains num_train_epochs"),
    "warmup_steps": NON_NEGATIVE,
    "warmup_ratio": UNIT,
    "weight_decay": NON_NEGATIVE,
    "max_grad_norm": Range(low=0, note="0 turns clipping off"),
    "adam_beta1": PROBABILITY,
    "adam_beta2": PROBABILITY,
    "adam_epsilon": POSITIVE,
    "logging_steps": POSITIVE,
    "save_steps": POSITIVE,
    "eval_steps": POSITIVE,
    "save_total_limit": COUNT,
    "seed": Range(low=0, high=2**32 - 1, whole=True),
    "data_seed": Range(low=0, high=2**32 - 1, whole=True),
    "dataloader_num_workers": WHOLE_NON_NEGATIVE,
    "max_length": COUNT,
    # ModelArguments (LoRA and dropout)
    "lora_r": COUNT,
    "lora_alpha": POSITIVE,
    "lora_dropout": PROBABILITY,
    "dropout": PROBABILITY,
    # DataArguments
    "eval_split_size": Range(low=0, high=1, high_open=True, or_count=True, note="0 holds nothing out"),
    "max_samples": COUNT,
    "split_seed": WHOLE_NON_NEGATIVE,
    # PPOConfig
    "total_episodes": COUNT,
    "max_prompt_length": COUNT,
    "response_length": COUNT,
    "temperature": Range(low=0, note="0 is greedy where a command allows it; PPO needs > 0"),
    "top_k": WHOLE_NON_NEGATIVE,
    "top_p": Range(low=0, high=1, low_open=True),
    "local_rollout_forward_batch_size": COUNT,
    "missing_eos_penalty": Range(low=0, note="it is subtracted"),
    "reward_clip": POSITIVE,
    "kl_coef": NON_NEGATIVE,
    "target_kl": POSITIVE,
    "kl_horizon": POSITIVE,
    "num_ppo_epochs": COUNT,
    "num_mini_batches": COUNT,
    "cliprange": POSITIVE,
    "cliprange_value": POSITIVE,
    "vf_coef": NON_NEGATIVE,
    "gamma": UNIT,
    "lam": UNIT,
    "ptx_coef": NON_NEGATIVE,
    "ema_decay": Range(low=0, high=1, low_open=True, high_open=True),
    "sample_every": Range(low=0, whole=True, note="0 turns sample tables off"),
    "num_sample_completions": COUNT,
    "max_nonfinite_steps": COUNT,
    # reward stage, eval-rm, make-pairs
    "eval_rm_num_samples": COUNT,
    "eval_rm_show_pairs": WHOLE_NON_NEGATIVE,
    "num_samples": COUNT,
    "batch_size": COUNT,
    "max_new_tokens": COUNT,
    # pipeline
    "torch_threads": COUNT,
}


def _number(value) -> float | None:
    if isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) else number


def check_ranges(values: Mapping[str, object], where: str | None = None) -> None:
    """`ConfigError` for the first value in `values` outside its field's range; `where` names the source
    ("config file x.yaml", "command line")."""
    for key, value in values.items():
        if key not in RANGES or value is None or value in ("null", "None"):
            continue
        number = _number(value)
        if number is None or not RANGES[key].allows(number):
            given = f"the {where} gives {value!r}" if where else f"got {value!r}"
            raise ConfigError(f"{key} must be {RANGES[key].describe()}; {given}.")
