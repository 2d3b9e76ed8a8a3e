"""The demo task: deterministic generation, correct answers, the specified imperfections of the
demonstrations, gold-ranked pairs and held-out prompts that no stage sees."""

import random

import pytest

from rlhf_recipes.demo.task import (
    CORPUS_OPS,
    TaskSettings,
    apply_op,
    corpus_records,
    demonstration,
    format_prompt,
    gold_answer,
    is_hard,
    parse_prompt,
    preference_records,
    prompt_records,
    score_answer,
    sft_records,
    split_prompts,
)

SETTINGS = TaskSettings()


def test_prompt_round_trip_and_gold_answer():
    prompt = format_prompt((3, 7, 1, 4))
    assert prompt == "Q: max 3 7 1 4 A:"
    assert parse_prompt(prompt) == (3, 7, 1, 4)
    assert gold_answer(prompt) == "7"
    assert [apply_op((3, 7, 1, 4), op) for op in ("first", "last", "min")] == [3, 4, 1]
    with pytest.raises(ValueError):
        parse_prompt("max 3 7 1 4")


def test_hard_subset_is_last_digit_unique_max():
    assert is_hard((1, 2, 3, 9))
    assert not is_hard((9, 2, 3, 9))
    assert not is_hard((1, 9, 3, 4))


@pytest.mark.parametrize(
    ("answer", "correct", "repetitive", "length"),
    [
        (" 7", True, False, 1),
        ("7", True, False, 1),
        (" 7 7 7", False, True, 3),
        (" 3", False, False, 1),
        (" 7 3", False, False, 2),
        (" 3 7 7", False, True, 3),
        ("", False, False, 0),
    ],
)
def test_gold_scorer_on_hand_made_answers(answer, correct, repetitive, length):
    score = score_answer("Q: max 3 7 1 4 A:", answer)
    assert (score.correct, score.repetitive, score.length) == (correct, repetitive, length)


def test_generation_is_deterministic_by_seed():
    pools = split_prompts(0, SETTINGS)
    assert pools == split_prompts(0, SETTINGS)
    assert pools.heldout != split_prompts(1, SETTINGS).heldout
    assert sft_records(pools.sft, 0, SETTINGS) == sft_records(pools.sft, 0, SETTINGS)
    assert sft_records(pools.sft, 0, SETTINGS) != sft_records(pools.sft, 1, SETTINGS)
    assert preference_records(pools.reward, 0, SETTINGS) == preference_records(pools.reward, 0, SETTINGS)
    assert corpus_records(pools.heldout, 0, SETTINGS) == corpus_records(pools.heldout, 0, SETTINGS)


def test_pools_are_disjoint_and_split_two_four_four():
    pools = split_prompts(3, SETTINGS)
    groups = [pools.heldout, pools.validation, pools.sft, pools.reward, pools.ppo]
    assert sum(len(g) for g in groups) == 10_000
    assert len({d for g in groups for d in g}) == 10_000
    assert len(pools.heldout) == 200
    assert len(pools.reward) == len(pools.ppo) == 2 * len(pools.sft)


def test_heldout_prompts_appear_in_no_stage_data():
    pools = split_prompts(5, SETTINGS)
    heldout = set(pools.heldout)
    seen = [parse_prompt(r["prompt"]) for r in sft_records(pools.sft, 5, SETTINGS)]
    seen += [parse_prompt(r["prompt"]) for r in preference_records(pools.reward, 5, SETTINGS)]
    seen += [parse_prompt(r["prompt"]) for r in prompt_records(pools.ppo)]
    seen += [parse_prompt(r["prompt"]) for r in corpus_records(pools.heldout, 5, SETTINGS)]
    seen += pools.validation
    assert heldout.isdisjoint(seen)


def test_demonstrations_err_on_the_hard_subset_and_repeat_as_specified():
    pool = split_prompts(0, SETTINGS).sft
    records = sft_records(pool, 0, SETTINGS)
    assert [parse_prompt(r["prompt"]) for r in records] == pool
    hard = [r for r in records if is_hard(parse_prompt(r["prompt"]))]
    easy = [r for r in records if not is_hard(parse_prompt(r["prompt"]))]
    words = lambda r: r["completion"].split()  # noqa: E731
    hard_wrong = sum(words(r)[0] == str(parse_prompt(r["prompt"])[0]) for r in hard) / len(hard)
    easy_wrong = sum(words(r)[0] != gold_answer(r["prompt"]) for r in easy)
    repetitive = sum(score_answer(r["prompt"], r["completion"]).repetitive for r in records) / len(records)
    assert 0.68 < hard_wrong < 0.82
    assert easy_wrong == 0
    assert 0.12 < repetitive < 0.18
    assert all(r["completion"].startswith(" ") for r in records)


def test_demonstration_rates_follow_the_settings():
    rng = random.Random(0)
    clean = TaskSettings(hard_error_rate=0.0, repetition_rate=0.0)
    assert demonstration((1, 2, 3, 9), rng, clean) == " 9"
    lazy = TaskSettings(hard_error_rate=1.0, repetition_rate=1.0)
    assert demonstration((1, 2, 3, 9), rng, lazy).split()[0] == "1"
    assert len(demonstration((1, 2, 3, 9), rng, lazy).split()) >= 2


def test_pairs_prefer_the_correct_clean_answer_with_distractor_negatives():
    records = preference_records(split_prompts(0, SETTINGS).reward, 0, SETTINGS)
    assert len(records) == SETTINGS.num_pairs
    assert len({(r["prompt"], r["rejected"]) for r in records}) == len(records)
    for r in records:
        chosen, rejected = score_answer(r["prompt"], r["chosen"]), score_answer(r["prompt"], r["rejected"])
        assert chosen.correct and not chosen.repetitive
        assert not rejected.correct
    distractors = [r for r in records if r["negative"] == "distractor"]
    overshoots = [r for r in records if r["negative"] == "overshoot"]
    assert len(distractors) / len(records) > 0.3 and len(overshoots) / len(records) > 0.1
    assert all(int(r["rejected"]) in parse_prompt(r["prompt"]) for r in distractors)
    assert all(int(r["rejected"]) > int(gold_answer(r["prompt"])) for r in overshoots)


def test_corpus_teaches_the_format_but_never_the_task():
    records = corpus_records([], 0, SETTINGS)
    assert len(records) == SETTINGS.num_corpus
    assert len({r["prompt"] for r in records}) == len(records)
    ops = {r["prompt"].split()[1] for r in records}
    assert ops == set(CORPUS_OPS)
    for r in records:
        op, digits = r["prompt"].split()[1], parse_prompt(r["prompt"])
        assert r["completion"] == f" {apply_op(digits, op)}"
