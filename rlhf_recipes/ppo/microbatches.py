"""Less padded work in PPO's passes: rows grouped by length into chunks, each cut to its real columns.

Sequences are [left-padded prompt | response padded on the right] (`rollout`). A set of rows needs only the
columns from the first token of its longest prompt to the last token of its longest response: every other
column is padding in all of its rows. Attention ignores padding and positions count real tokens only
(`position_ids_from`), so what a row computes at its real tokens does not depend on the all-pad columns
around it: cutting them removes work, not information. Grouping rows of similar length into the same chunk
keeps those columns few: with HH-RLHF's prompts (tens to hundreds of tokens) and chat answers that stop
early, random chunks are about half padding (../shared/FIELD_NOTES.md, "real HH lengths").
"""

from collections.abc import Callable
from dataclasses import dataclass

import torch


def length_grouped(rows: torch.Tensor, lengths: torch.Tensor, size: int) -> list[torch.Tensor]:
    """`rows` in groups of `size` (the last may be smaller) of similar `lengths` (one per row), longest
    first. Rows that fit in one group keep their order: there is nothing to group, and the sums over
    the group stay in the order of the ungrouped computation."""
    if len(rows) <= size:
        return [rows]
    return list(rows[torch.argsort(lengths, descending=True, stable=True)].split(size))


@dataclass(frozen=True)
class Chunk:
    """Some rows of a batch and the columns that hold their real tokens: prompt columns from `start`
    on, response columns up to `response_width` (their longest response)."""

    rows: torch.Tensor
    start: int
    response_width: int

    @classmethod
    def of(cls, rows: torch.Tensor, prompt_mask: torch.Tensor, response_mask: torch.Tensor) -> "Chunk":
        has_token = prompt_mask[rows].any(0)
        start = int(has_token.int().argmax()) if has_token.any() else prompt_mask.shape[1]
        return cls(rows, start, int(response_mask[rows].sum(1).max()))

    def prompt(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor[self.rows, self.start :]

    def response(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor[self.rows, : self.response_width]

    def sequences(self, prompt_part: torch.Tensor, response_part: torch.Tensor) -> torch.Tensor:
        """The chunk's rows of [prompt | response] (ids or mask), cut to its real columns."""
        return torch.cat([self.prompt(prompt_part), self.response(response_part)], dim=1)


def chunks(
    prompt_mask: torch.Tensor, response_mask: torch.Tensor, size: int, rows: torch.Tensor | None = None
) -> list[Chunk]:
    """`rows` (default: all) in length-grouped chunks of `size`, by real prompt + response tokens, each
    cut to its real columns. A rendered sequence with no response part passes a B x 0 `response_mask`."""
    if rows is None:
        rows = torch.arange(prompt_mask.shape[0], device=prompt_mask.device)
    lengths = prompt_mask[rows].sum(1) + response_mask[rows].sum(1)
    return [Chunk.of(group, prompt_mask, response_mask) for group in length_grouped(rows, lengths, size)]


@torch.no_grad()  # not inference_mode, for ZeRO-3 (see rollout.collect_rollout)
def over_chunks(fn: Callable[[Chunk], torch.Tensor], parts: list[Chunk], width: int | None = None) -> torch.Tensor:
    """`fn` on each chunk, its outputs put back at the chunk's rows: one value per row (`width` None),
    or one per response token (rows x `chunk.response_width`) in a B x `width` tensor that holds 0 after
    each chunk's responses. The chunks must cover rows 0 .. B-1."""
    outputs = [fn(chunk) for chunk in parts]
    batch = sum(len(chunk.rows) for chunk in parts)
    result = outputs[0].new_zeros((batch,) if width is None else (batch, width))
    for chunk, output in zip(parts, outputs, strict=True):
        if width is None:
            result[chunk.rows] = output
        else:
            result[chunk.rows, : output.shape[1]] = output
    return result
