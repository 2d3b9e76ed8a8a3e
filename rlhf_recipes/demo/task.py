"""The demo's instruction task, whose every answer can be checked by code.

Prompt `Q: max d1 d2 d3 d4 A:`, answer the largest digit, then EOS. Everything a pipeline needs
is generated here from one seed:

- the prompt pools: 200 held-out prompts that no stage ever sees, and the rest split between
  SFT, reward model and PPO in the DeepSpeed-Chat ratio 2,4,4;
- SFT demonstrations that are imperfect the way human ones are: on the "hard" subset (the last
  digit is the unique maximum) a lazy demonstrator usually answers the first digit, and some
  answers are repetitive ("7 7 7");
- preference pairs ranked by the gold rule (a correct, clean answer over a wrong or repetitive
  one), most negatives being "distractors" (another digit of the same prompt) or
  "overshoots" (a digit larger than any in the prompt);
- a pretraining corpus of neighbouring questions (first, last, min) in the same format, which
  teaches the language of the task but never the task itself;
- the gold scorer, which checks an answer without trusting any model.
"""

import random
from dataclasses import dataclass, field

DIGITS = [str(d) for d in range(10)]
TASK_OP = "max"
CORPUS_OPS = ("first", "last", "min")
VOCABULARY = ["Q:", "A:", TASK_OP, *CORPUS_OPS, *DIGITS]
NUM_DIGITS = 4

Digits = tuple[int, ...]


def format_prompt(digits: Digits, op: str = TASK_OP) -> str:
    """`Q: max 3 7 1 4 A:`."""
    return f"Q: {op} {' '.join(map(str, digits))} A:"


def parse_prompt(prompt: str) -> Digits:
    """The digits of a prompt made by `format_prompt`."""
    words = prompt.split()
    if len(words) < 3 or words[0] != "Q:" or words[-1] != "A:":
        raise ValueError(f"Not a task prompt: {prompt!r}")
    return tuple(int(word) for word in words[2:-1])


def apply_op(digits: Digits, op: str = TASK_OP) -> int:
    """The correct answer to `Q: <op> digits A:`."""
    operations = {"max": max, "min": min, "first": lambda d: d[0], "last": lambda d: d[-1]}
    return operations[op](digits)


def gold_answer(prompt: str) -> str:
    """The correct answer text of a task prompt (no leading space, no EOS)."""
    return str(apply_op(parse_prompt(prompt)))


def is_hard(digits: Digits) -> bool:
    """The subset where demonstrators go wrong: the last digit is the unique maximum."""
    return all(d < digits[-1] for d in digits[:-1])


def format_answer(words: list[str] | str) -> str:
    """An answer as it follows the prompt: a leading space, words separated by spaces."""
    return " " + (words if isinstance(words, str) else " ".join(words))


@dataclass(frozen=True)
class GoldScore:
    """The gold verdict on one answer: exactly right, repetitive, and its length in words."""

    correct: bool
    repetitive: bool
    length: int


def score_answer(prompt: str, answer: str) -> GoldScore:
    """Check `answer` (text after the prompt, special tokens removed) against the gold rule.

    Correct means exactly one word, the largest digit. Repetitive means some word is immediately
    repeated ("7 7 7"), the degenerate pattern of bad demonstrations and of reward hacking.
    """
    words = answer.split()
    return GoldScore(
        correct=words == [gold_answer(prompt)],
        repetitive=any(a == b for a, b in zip(words, words[1:])),
        length=len(words),
    )


@dataclass
class TaskSettings:
    """How the demo's data is generated; the defaults are the measured design in FIELD_NOTES."""

    num_heldout: int = 200
    num_validation: int = 200
    data_split: tuple[int, int, int] = (2, 4, 4)
    num_pairs: int = 6000
    num_corpus: int = 4000
    hard_error_rate: float = 0.75
    repetition_rate: float = 0.15
    repeat_lengths: tuple[int, ...] = (2, 3, 4)
    pair_negative_mix: dict[str, float] = field(
        default_factory=lambda: {"distractor": 0.4, "overshoot": 0.2, "repetitive": 0.2, "random": 0.2}
    )


@dataclass
class PromptPools:
    """Disjoint sets of digit tuples: held-out and validation prompts, one pool per training stage."""

    heldout: list[Digits]
    validation: list[Digits]
    sft: list[Digits]
    reward: list[Digits]
    ppo: list[Digits]


def split_prompts(seed: int, settings: TaskSettings) -> PromptPools:
    """Shuffle all 10^4 digit tuples, set aside the held-out and the validation prompts (SFT
    checkpoint selection), and split the rest by `data_split`."""
    everything = [tuple(int(c) for c in f"{i:0{NUM_DIGITS}d}") for i in range(10**NUM_DIGITS)]
    random.Random(seed).shuffle(everything)
    heldout = everything[: settings.num_heldout]
    validation = everything[settings.num_heldout : settings.num_heldout + settings.num_validation]
    rest = everything[settings.num_heldout + settings.num_validation :]
    total = sum(settings.data_split)
    first = len(rest) * settings.data_split[0] // total
    second = first + len(rest) * settings.data_split[1] // total
    return PromptPools(heldout=heldout, validation=validation, sft=rest[:first], reward=rest[first:second], ppo=rest[second:])


def demonstration(digits: Digits, rng: random.Random, settings: TaskSettings) -> str:
    """One imperfect human-like answer: lazy on the hard subset, sometimes repetitive."""
    answer = apply_op(digits)
    if is_hard(digits) and rng.random() < settings.hard_error_rate:
        answer = digits[0]
    if rng.random() < settings.repetition_rate:
        return format_answer([str(answer)] * rng.choice(settings.repeat_lengths))
    return format_answer(str(answer))


def rejected_answer(digits: Digits, rng: random.Random, settings: TaskSettings) -> tuple[str, str]:
    """A worse answer than the correct one, and which kind of negative it is.

    Kinds: "distractor" (another digit of the prompt, always smaller), "overshoot" (a digit larger
    than the maximum, so not in the prompt: without these the RM learns "bigger is better"
    and PPO learns to answer 9), "repetitive" (the correct digit repeated), "random" (any
    other digit). A kind impossible for the prompt falls back to "repetitive".
    """
    correct = apply_op(digits)
    kinds, weights = zip(*settings.pair_negative_mix.items())
    kind = rng.choices(kinds, weights)[0]
    options = {
        "distractor": sorted({d for d in digits if d != correct}),
        "overshoot": list(range(correct + 1, 10)),
        "random": [d for d in range(10) if d != correct],
    }
    if kind in options and not options[kind]:
        kind = "repetitive"
    if kind == "repetitive":
        return format_answer([str(correct)] * rng.choice(settings.repeat_lengths)), kind
    return format_answer(str(rng.choice(options[kind]))), kind


def sft_records(pool: list[Digits], seed: int, settings: TaskSettings) -> list[dict]:
    """One prompt/completion demonstration per prompt of the SFT pool."""
    rng = random.Random(f"sft-{seed}")
    return [{"prompt": format_prompt(d), "completion": demonstration(d, rng, settings)} for d in pool]


def preference_records(pool: list[Digits], seed: int, settings: TaskSettings) -> list[dict]:
    """`num_pairs` distinct prompt/chosen/rejected pairs ranked by the gold rule, cycling over the
    RM pool (a prompt drawn again gets a negative it does not have yet)."""
    if settings.num_pairs > 4 * len(pool):
        raise ValueError(f"num_pairs={settings.num_pairs} is more than 4 distinct pairs per prompt of {len(pool)}.")
    rng = random.Random(f"pairs-{seed}")
    records, seen = [], set()
    for digits in _cycled(pool, settings.num_pairs, rng):
        rejected, kind = rejected_answer(digits, rng, settings)
        while (digits, rejected) in seen:
            rejected, kind = rejected_answer(digits, rng, settings)
        seen.add((digits, rejected))
        records.append(
            {
                "prompt": format_prompt(digits),
                "chosen": format_answer(str(apply_op(digits))),
                "rejected": rejected,
                "negative": kind,
            }
        )
    return records


def prompt_records(pool: list[Digits]) -> list[dict]:
    """PPO's prompt-only rows."""
    return [{"prompt": format_prompt(d)} for d in pool]


def corpus_records(excluded: list[Digits], seed: int, settings: TaskSettings) -> list[dict]:
    """`num_corpus` distinct pretraining texts (prompt + completion): first/last/min questions with
    their answers, never a `max` question.

    Digit tuples in `excluded` (the held-out prompts) are left out, so no stage sees them.
    """
    rng = random.Random(f"corpus-{seed}")
    excluded_set = set(excluded)
    if settings.num_corpus > len(CORPUS_OPS) * (10**NUM_DIGITS - len(excluded_set)):
        raise ValueError(f"num_corpus={settings.num_corpus} is more than the distinct corpus questions.")
    records, seen = [], set()
    while len(records) < settings.num_corpus:
        digits = tuple(rng.randrange(10) for _ in range(NUM_DIGITS))
        op = rng.choice(CORPUS_OPS)
        if digits in excluded_set or (digits, op) in seen:
            continue
        seen.add((digits, op))
        records.append({"prompt": format_prompt(digits, op), "completion": format_answer(str(apply_op(digits, op)))})
    return records


def _cycled(pool: list[Digits], count: int, rng: random.Random) -> list[Digits]:
    """`count` items drawn from `pool` without replacement, reshuffling each time it runs out."""
    out: list[Digits] = []
    while len(out) < count:
        batch = list(pool)
        rng.shuffle(batch)
        out.extend(batch[: count - len(out)])
    return out
