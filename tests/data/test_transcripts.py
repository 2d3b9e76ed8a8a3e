"""The HH-RLHF transcript parser and the hh_rlhf / rm_static adapters, by example and by property."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rlhf_recipes.data.adapters import DropRow, hh_rlhf, rm_static
from rlhf_recipes.data.transcripts import TranscriptError, parse_transcript

SPEAKER = {"user": "Human", "assistant": "Assistant"}

# Turn text as it appears in hh-rlhf: stripped, never containing a turn marker.
turn_text = st.text(st.characters(codec="utf-8"), max_size=40).map(str.strip).filter(
    lambda text: "\n\nHuman:" not in text and "\n\nAssistant:" not in text
)
# Arbitrary strings, biased towards the marker fragments the parser splits on.
transcript_like = st.one_of(
    st.text(),
    st.lists(st.sampled_from(["\n\nHuman:", "\n\nAssistant:", "\n\n", " ", "Human:", "hi", "\n"])).map("".join),
)


def transcript(turns: list[dict]) -> str:
    return "".join(f"\n\n{SPEAKER[turn['role']]}: {turn['content']}" for turn in turns)


def dialogue(texts: list[str]) -> list[dict]:
    """Alternating turns starting with the user."""
    return [{"role": ("user", "assistant")[i % 2], "content": text} for i, text in enumerate(texts)]


def test_parses_turns_and_strips_marker_spacing():
    text = "\n\nHuman: Hi there\n\nAssistant:  Hello!\n\nHuman: Bye\n\nAssistant:"
    assert parse_transcript(text) == [
        {"role": "user", "content": "Hi there"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "Bye"},
        {"role": "assistant", "content": ""},
    ]


def test_merges_consecutive_turns_of_one_speaker():
    text = "\n\nHuman: Q\n\nAssistant: A1\n\nAssistant: A2\n\nHuman: Q2"
    assert parse_transcript(text) == dialogue(["Q", "A1\n\nA2", "Q2"])


@pytest.mark.parametrize("text", ["", "no markers at all", "Intro\n\nHuman: hi", "\n\nAssistant: I start"])
def test_rejects_text_that_is_not_a_transcript(text):
    with pytest.raises(TranscriptError, match="does not start with"):
        parse_transcript(text)


@given(st.lists(turn_text, min_size=1, max_size=8))
def test_round_trip_of_alternating_turns(texts):
    turns = dialogue(texts)
    assert parse_transcript(transcript(turns)) == turns


@given(transcript_like)
def test_parser_returns_alternating_dialogue_or_its_own_error(text):
    try:
        turns = parse_transcript(text)
    except TranscriptError:
        return
    roles = [turn["role"] for turn in turns]
    assert roles[0] == "user"
    assert all(a != b for a, b in zip(roles, roles[1:]))


@given(st.lists(turn_text, min_size=0, max_size=3), turn_text, turn_text, turn_text)
def test_hh_adapter_splits_shared_context_from_final_replies(history, question, good, bad):
    context = dialogue([*history[: len(history) // 2 * 2], question])
    row = {
        "chosen": transcript([*context, {"role": "assistant", "content": good}]),
        "rejected": transcript([*context, {"role": "assistant", "content": bad}]),
    }
    assert hh_rlhf(row) == {
        "prompt": context,
        "chosen": [{"role": "assistant", "content": good}],
        "rejected": [{"role": "assistant", "content": bad}],
    }


@given(transcript_like, transcript_like)
def test_hh_adapter_never_fails_other_than_by_dropping_the_row(chosen, rejected):
    try:
        record = hh_rlhf({"chosen": chosen, "rejected": rejected})
    except DropRow as drop:
        assert drop.reason in {"malformed_transcript", "last_turn_not_assistant", "diverged_before_last_turn"}
        return
    assert record["prompt"][-1]["role"] == "user"
    assert [m["role"] for m in record["chosen"] + record["rejected"]] == ["assistant", "assistant"]


def test_hh_adapter_drops_dialogues_that_diverge_before_the_last_turn():
    row = {
        "chosen": "\n\nHuman: Q\n\nAssistant: A\n\nHuman: Q2\n\nAssistant: B",
        "rejected": "\n\nHuman: Q\n\nAssistant: other\n\nHuman: Q2\n\nAssistant: C",
    }
    with pytest.raises(DropRow) as drop:
        hh_rlhf(row)
    assert drop.value.reason == "diverged_before_last_turn"


def test_hh_adapter_keeps_an_extra_final_assistant_turn_as_part_of_the_reply():
    row = {
        "chosen": "\n\nHuman: Q\n\nAssistant: A",
        "rejected": "\n\nHuman: Q\n\nAssistant: B\n\nAssistant: more",
    }
    assert hh_rlhf(row)["rejected"] == [{"role": "assistant", "content": "B\n\nmore"}]


@given(st.lists(turn_text, min_size=0, max_size=3), turn_text, turn_text, turn_text)
def test_rm_static_prompt_parses_like_the_hh_context(history, question, good, bad):
    context = dialogue([*history[: len(history) // 2 * 2], question])
    row = {"prompt": transcript(context) + "\n\nAssistant:", "response": " " + good, "chosen": " " + good, "rejected": " " + bad}
    record = rm_static(row)
    assert record["prompt"] == context
    assert record["chosen"] == [{"role": "assistant", "content": good}]
    assert record["rejected"] == [{"role": "assistant", "content": bad}]


def test_rm_static_drops_a_prompt_without_the_final_assistant_marker():
    with pytest.raises(DropRow) as drop:
        rm_static({"prompt": "\n\nHuman: Q", "response": " A", "chosen": " A", "rejected": " B"})
    assert drop.value.reason == "malformed_transcript"
