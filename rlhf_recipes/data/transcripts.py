"""Anthropic HH-RLHF transcripts ("\\n\\nHuman: ...\\n\\nAssistant: ...") parsed into chat messages.

Parsing rules (also used for Dahoas/rm-static prompts, which are the same transcripts cut after
the last "\\n\\nAssistant:"):
- a transcript must start with "\\n\\nHuman:" (leading whitespace aside);
- each turn's content is stripped of surrounding whitespace (the markers are followed by a space
  or nothing, which is formatting, not content);
- consecutive turns of the same speaker (a few hh-rlhf rows have two Assistant turns in a row)
  are merged into one message, joined by a blank line, so roles always alternate as chat
  templates require.
"""

import re

from rlhf_recipes.data.errors import DataError

ROLES = {"Human": "user", "Assistant": "assistant"}
_MARKER = re.compile(r"\n\n(Human|Assistant):")


class TranscriptError(DataError):
    """A string that is not an HH-RLHF transcript."""


def parse_transcript(text: str) -> list[dict[str, str]]:
    """Split a transcript into `[{"role": "user"|"assistant", "content": ...}, ...]`."""
    if not isinstance(text, str):
        raise TranscriptError(f"expected a transcript string, got {type(text).__name__}")
    parts = _MARKER.split(text)
    if parts[0].strip() or len(parts) == 1:
        raise TranscriptError(f"transcript does not start with '\\n\\nHuman:': {text[:60]!r}")
    messages: list[dict[str, str]] = []
    for speaker, content in zip(parts[1::2], parts[2::2]):
        role, content = ROLES[speaker], content.strip()
        if messages and messages[-1]["role"] == role:
            messages[-1]["content"] = f"{messages[-1]['content']}\n\n{content}".strip()
        else:
            messages.append({"role": role, "content": content})
    if messages[0]["role"] != "user":
        raise TranscriptError(f"transcript does not start with '\\n\\nHuman:': {text[:60]!r}")
    return messages

