"""Less padded work in PPO's passes: rows grouped by length into chunks, each cut to its real columns.

Sequences are [left-padded prompt | response padded on the right] (`rollout`). A chunk lays its rows out as
left-padded sequences instead: each row's prompt and response move right until the response ends in the last
column (the row's padding after its response wraps round to the left), and only the columns from the start of
its longest sequence on are kept. Attention ignores padding and positions count real tokens only
(`position_ids_from`), so what a row computes at its real tokens does not change: the chunk removes work, not
information. Its rows x max(prompt + response) positions are then close to its real tokens when its rows have
similar total lengths, which grouping by length gives: with HH-RLHF's prompts (tens to hundreds of tokens) and
chat answers that stop early, random chunks kept in the batch's layout are about half padding
(../shared/FIELD_NOTES.md, "real HH lengths"). Per-response-token tensors (B x R, each response from column 0)
are read with `Chunk.response` in the chunk's layout and written back by `over_chunks`.

Packed chunks (`chunks(..., pack=True)`, the PPO update on unsharded launches) hold as many length-grouped rows as
fit in the positions of `size` untrimmed rows (the activations a microbatch of the user's size would hold), so
short rows share one forward and backward: every call reads all the weights once, which at a few hundred
positions costs as much as the tokens themselves (SmolLM2-135M, 1 CPU thread: ~0.44 s per forward+backward plus
~7 ms per position), and the gradients do not depend on how the rows are grouped (`PPOTrainer._update` weights
each chunk by its tokens).
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
    """Some rows of a batch, each moved `shift` columns right (its response then ends in the chunk's last
    column), the columns from `start` on of [prompt | first `response_width` response columns] kept."""

    rows: torch.Tensor
    shift: torch.Tensor
    start: int
    response_width: int

    @classmethod
    def of(cls, rows: torch.Tensor, prompt_mask: torch.Tensor, response_mask: torch.Tensor) -> "Chunk":
        response_lengths = response_mask[rows].sum(1)
        width = int(response_lengths.max())
        longest = int((prompt_mask[rows].sum(1) + response_lengths).max())
        return cls(rows, width - response_lengths, prompt_mask.shape[1] + width - longest, width)

    def _rolled(self, tensor: torch.Tensor, sign: int) -> torch.Tensor:
        """Each row of a rows x C tensor rolled right (sign 1) or left (sign -1) by its shift."""
        columns = torch.arange(tensor.shape[1], device=tensor.device)
        return tensor.gather(1, (columns - sign * self.shift.unsqueeze(1)) % tensor.shape[1])

    def response(self, tensor: torch.Tensor) -> torch.Tensor:
        """The chunk's rows of a B x R per-response-token tensor, in the chunk's layout."""
        return self._rolled(tensor[self.rows, : self.response_width], 1)

    def sequences(self, prompt_part: torch.Tensor, response_part: torch.Tensor) -> torch.Tensor:
        """The chunk's rows of [prompt | response] (ids or mask), left-padded, cut to their real columns."""
        whole = torch.cat([prompt_part[self.rows], response_part[self.rows, : self.response_width]], dim=1)
        return self._rolled(whole, 1)[:, self.start :]

    def unshifted(self, output: torch.Tensor) -> torch.Tensor:
        """A rows x response_width output in the chunk's layout, each response from column 0 again."""
        return self._rolled(output, -1)


def packed(rows: torch.Tensor, lengths: torch.Tensor, size: int, width: int) -> list[torch.Tensor]:
    """`rows` longest first in consecutive groups, each as large as fits in `size` rows of `width` positions
    (a group computes its rows x its longest length). Every group holds at least `size` rows but the last,
    so there are never more groups than `length_grouped` makes. Rows that all fit in one group keep their
    order (see `length_grouped`)."""
    if len(rows) * int(lengths.max()) <= size * width:
        return [rows]
    groups, current = [], []
    for index in torch.argsort(lengths, descending=True, stable=True).tolist():
        if current and (len(current) + 1) * int(lengths[current[0]]) > size * width:
            groups.append(current)
            current = []
        current.append(index)
    groups.append(current)
    return [rows[group] for group in groups]


def chunks(
    prompt_mask: torch.Tensor, response_mask: torch.Tensor, size: int, rows: torch.Tensor | None = None,
    pack: bool = False,
) -> list[Chunk]:
    """`rows` (default: all) in length-grouped chunks of `size` rows, by real prompt + response tokens, each
    cut to its real columns; with `pack`, in chunks that each compute no more positions than `size`
    untrimmed rows (`packed`). A rendered sequence with no response part passes a B x 0 `response_mask`."""
    if rows is None:
        rows = torch.arange(prompt_mask.shape[0], device=prompt_mask.device)
    lengths = prompt_mask[rows].sum(1) + response_mask[rows].sum(1)
    if pack:
        groups = packed(rows, lengths, size, prompt_mask.shape[1] + response_mask.shape[1])
    else:
        groups = length_grouped(rows, lengths, size)
    return [Chunk.of(group, prompt_mask, response_mask) for group in groups]


@torch.no_grad()  # not inference_mode, for ZeRO-3 (see rollout.collect_rollout)
def over_chunks(fn: Callable[[Chunk], torch.Tensor], parts: list[Chunk], width: int | None = None) -> torch.Tensor:
    """`fn` on each chunk, its outputs put back at the chunk's rows: one value per row (`width` None),
    or one per response token (rows x `chunk.response_width`, in the chunk's layout) in a B x `width` tensor
    whose responses start at column 0, 0 past each chunk's longest response. The chunks must cover rows 0 .. B-1."""
    outputs = [fn(chunk) for chunk in parts]
    batch = sum(len(chunk.rows) for chunk in parts)
    result = outputs[0].new_zeros((batch,) if width is None else (batch, width))
    for chunk, output in zip(parts, outputs, strict=True):
        if width is None:
            result[chunk.rows] = output
        else:
            result[chunk.rows, : output.shape[1]] = chunk.unshifted(output)
    return result
