"""Checkpoint directory conventions shared by every stage (SFT, reward model, PPO).

`output_dir/checkpoint-<step>/` is written under `output_dir/.tmp-checkpoint-<step>/`, marked
with a `COMPLETE` file when every file is on disk, then renamed into place; the `latest` file
(the newest checkpoint's name) is replaced after that. A kill at any moment therefore leaves
either no `checkpoint-<step>` or a complete one. Resume and rotation only ever consider
directories that carry the marker, so a half-written or foreign checkpoint is never resumed
from, and rotation never deletes the last complete one.
"""

import glob
import os
import re
import shutil
from collections.abc import Iterable

from ..config.errors import ConfigError
from .run_dir import read_jsonl, write_jsonl

PREFIX = "checkpoint-"
MARKER = "COMPLETE"
LATEST = "latest"
STAGING_PREFIX = ".tmp-"
_TRUE = {"true", "yes", "1"}
_FALSE = {"false", "no", "0", "", "none", "null"}


def checkpoint_name(step: int) -> str:
    return f"{PREFIX}{step}"


def is_complete(path: str) -> bool:
    return os.path.isfile(os.path.join(path, MARKER))


def _checkpoint_dirs(output_dir: str) -> list[tuple[int, str]]:
    found = []
    for path in glob.glob(os.path.join(glob.escape(output_dir), PREFIX + "*")):
        match = re.fullmatch(re.escape(PREFIX) + r"(\d+)", os.path.basename(path))
        if match and os.path.isdir(path):
            found.append((int(match.group(1)), path))
    return sorted(found)


def complete_checkpoints(output_dir: str) -> list[tuple[int, str]]:
    """(step, path) of every complete checkpoint, lowest step first."""
    return [(step, path) for step, path in _checkpoint_dirs(output_dir) if is_complete(path)]


def latest_checkpoint(output_dir: str) -> str | None:
    """The newest complete checkpoint: the one `latest` names if complete, else the highest step.

    The pointer matters after resuming from an older checkpoint: the checkpoints it then writes
    are newer than higher-numbered ones left over from the abandoned run.
    """
    pointer = os.path.join(output_dir, LATEST)
    if os.path.isfile(pointer):
        with open(pointer, encoding="utf-8") as handle:
            path = os.path.join(output_dir, handle.read().strip())
        if is_complete(path):
            return path
    found = complete_checkpoints(output_dir)
    return found[-1][1] if found else None


def parse_resume(value) -> bool | str | None:
    """`resume_from_checkpoint` as given in YAML/CLI/Python: None (start fresh), True (latest) or a path."""
    if value is None or value is False:
        return None
    if value is True:
        return True
    text = str(value).strip()
    if text.lower() in _FALSE:
        return None
    return True if text.lower() in _TRUE else text


def _not_resumable_hint(output_dir: str) -> str:
    partial = [os.path.basename(path) for _, path in _checkpoint_dirs(output_dir) if not is_complete(path)]
    if not partial:
        return ""
    return (
        f" It holds {', '.join(partial)} without the {MARKER} marker (an interrupted save, or written by another "
        f"tool); if you know one is whole, create an empty {MARKER} file in it and pass its path."
    )


def resolve_resume(value, output_dir: str) -> str | None:
    """The checkpoint to resume from: None -> start fresh; True/"true" -> the latest complete one in
    `output_dir`; a path -> that checkpoint, which must be complete. Raises `ConfigError` otherwise."""
    value = parse_resume(value)
    if value is None:
        return None
    if value is True:
        path = latest_checkpoint(output_dir) if os.path.isdir(output_dir) else None
        if path is None:
            raise ConfigError(
                f"resume_from_checkpoint is true but {output_dir!r} holds no complete checkpoint to resume from."
                + (_not_resumable_hint(output_dir) if os.path.isdir(output_dir) else "")
                + " Drop resume_from_checkpoint to start fresh."
            )
        return path
    if not os.path.isdir(value):
        raise ConfigError(f"resume_from_checkpoint: {value!r} is not a checkpoint directory.")
    if not is_complete(value):
        raise ConfigError(
            f"resume_from_checkpoint: {value!r} is not a complete checkpoint (no {MARKER} marker): its save was "
            f"interrupted, or another tool wrote it. Use resume_from_checkpoint: true for the latest complete one."
        )
    return value


def staging_dir(output_dir: str, step: int) -> str:
    return os.path.join(output_dir, STAGING_PREFIX + checkpoint_name(step))


def commit(output_dir: str, staged: str, step: int, save_total_limit: int | None, keep: Iterable[str] = ()) -> str:
    """Mark `staged` complete, move it to `checkpoint-<step>`, point `latest` at it, then rotate.

    `staged` holds every file of the checkpoint. An existing `checkpoint-<step>` (from a run that
    was resumed from an earlier step) is replaced. Leftover staging directories of interrupted
    saves are removed. Returns the final path.
    """
    open(os.path.join(staged, MARKER), "w").close()
    final = os.path.join(output_dir, checkpoint_name(step))
    if os.path.exists(final):
        replaced = os.path.join(output_dir, STAGING_PREFIX + checkpoint_name(step) + ".replaced")
        shutil.rmtree(replaced, ignore_errors=True)
        os.replace(final, replaced)
    os.replace(staged, final)
    pointer = os.path.join(output_dir, LATEST)
    with open(pointer + ".tmp", "w", encoding="utf-8") as handle:
        handle.write(os.path.basename(final))
    os.replace(pointer + ".tmp", pointer)
    for leftover in glob.glob(os.path.join(glob.escape(output_dir), STAGING_PREFIX + PREFIX + "*")):
        shutil.rmtree(leftover, ignore_errors=True)
    rotate(output_dir, save_total_limit, keep=[final, *keep])
    return final


def rotate(output_dir: str, save_total_limit: int | None, keep: Iterable[str] = ()) -> list[str]:
    """Delete the lowest-step complete checkpoints beyond `save_total_limit`; returns the deleted paths.

    The newest (`latest`) and the paths in `keep` (e.g. the best model) always stay, and
    incomplete directories are neither counted nor deleted, so the last complete checkpoint
    survives whatever else is in `output_dir`.
    """
    if not save_total_limit or save_total_limit <= 0:
        return []
    newest = latest_checkpoint(output_dir)
    protected = {os.path.abspath(path) for path in [*keep, newest] if path}
    found = [path for _, path in complete_checkpoints(output_dir)]
    deletable = [path for path in found if os.path.abspath(path) not in protected]
    excess = len(found) - max(save_total_limit, len(found) - len(deletable))
    deleted = deletable[:excess] if excess > 0 else []
    for path in deleted:
        shutil.rmtree(path)
    return deleted


def trim_step_log(path: str, last_step: int) -> None:
    """Keep only the records of a per-step JSONL log with `step <= last_step`, rewritten atomically.

    Called when training (re)starts at `last_step`: records of steps a kill threw away, or of an
    earlier run in the same output_dir, would otherwise sit next to the redone ones. A line torn
    by a kill can only be the last one, of a step after the checkpoint: `read_jsonl` drops it.
    """
    if os.path.isfile(path):
        write_jsonl(path, [record for record in read_jsonl(path) if record.get("step", 0) <= last_step])
