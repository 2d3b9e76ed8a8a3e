"""Checkpoint conventions (`rlhf_recipes.artifacts.checkpointing`) and the HF Trainer stages that follow them."""

import pytest
from datasets import Dataset
from transformers import TrainerCallback
from trl import SFTConfig

from rlhf_recipes.artifacts.checkpointing import (
    LATEST,
    MARKER,
    commit,
    complete_checkpoints,
    latest_checkpoint,
    parse_resume,
    resolve_resume,
    staging_dir,
)
from rlhf_recipes.models import ModelArguments
from rlhf_recipes.config.parsing import ConfigError
from rlhf_recipes.stages.sft import train_sft

from reliability_helpers import CPU, read_jsonl


def checkpoint(output_dir, step, complete=True):
    path = output_dir / f"checkpoint-{step}"
    path.mkdir()
    (path / "model.safetensors").write_bytes(b"weights")
    if complete:
        (path / MARKER).touch()
    return path


def stage(output_dir, step):
    staged = staging_dir(str(output_dir), step)
    checkpoint(output_dir.parent / "scratch", step, complete=False).rename(staged)
    return staged


@pytest.fixture
def output_dir(tmp_path):
    (tmp_path / "scratch").mkdir()
    (tmp_path / "run").mkdir()
    return tmp_path / "run"


def names(output_dir):
    return sorted(p.name for p in output_dir.iterdir())


def test_commit_rotates_among_complete_checkpoints_and_never_deletes_the_last_one(output_dir):
    checkpoint(output_dir, 2)
    checkpoint(output_dir, 6, complete=False)  # a save that died, or HF files without the marker
    (output_dir / ".tmp-checkpoint-5").mkdir()  # leftover staging of a killed save

    commit(str(output_dir), stage(output_dir, 4), 4, save_total_limit=1)

    # plain HF rotation would keep the incomplete checkpoint-6 as "newest" and delete checkpoint-2
    assert [step for step, _ in complete_checkpoints(str(output_dir))] == [4]
    assert names(output_dir) == ["checkpoint-4", "checkpoint-6", LATEST]
    assert (output_dir / LATEST).read_text() == "checkpoint-4"


def test_after_resuming_from_an_older_checkpoint_the_newly_written_one_is_kept(output_dir):
    checkpoint(output_dir, 2)
    checkpoint(output_dir, 8)  # from the abandoned continuation
    (output_dir / LATEST).write_text("checkpoint-2")

    commit(str(output_dir), stage(output_dir, 4), 4, save_total_limit=1)

    assert latest_checkpoint(str(output_dir)) == str(output_dir / "checkpoint-4")
    assert [step for step, _ in complete_checkpoints(str(output_dir))] == [4]


def test_commit_replaces_a_checkpoint_of_the_same_step_and_keeps_protected_ones(output_dir):
    best = checkpoint(output_dir, 2)
    old = checkpoint(output_dir, 4)
    (old / "stale.bin").write_bytes(b"x")

    commit(str(output_dir), stage(output_dir, 4), 4, save_total_limit=1, keep=[str(best)])

    assert names(output_dir) == ["checkpoint-2", "checkpoint-4", LATEST]
    assert not (output_dir / "checkpoint-4" / "stale.bin").exists()


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, None), (False, None), ("false", None), ("", None), ("null", None), (True, True), ("True", True),
     ("yes", True), ("runs/x/checkpoint-3", "runs/x/checkpoint-3")],
)
def test_resume_values_as_yaml_cli_or_python_give_them(value, expected):
    assert parse_resume(value) == expected


def test_resume_reads_only_complete_checkpoints_and_says_how_to_use_a_partial_one(output_dir):
    partial = checkpoint(output_dir, 6, complete=False)
    with pytest.raises(ConfigError, match=r"holds no complete checkpoint.*checkpoint-6 without the COMPLETE marker"):
        resolve_resume(True, str(output_dir))
    with pytest.raises(ConfigError, match="not a complete checkpoint"):
        resolve_resume(str(partial), str(output_dir))
    complete = checkpoint(output_dir, 3)
    (output_dir / LATEST).write_text("checkpoint-6")  # a pointer written before a crash is not trusted blindly
    assert resolve_resume("true", str(output_dir)) == str(complete)
    assert resolve_resume(str(complete), str(output_dir)) == str(complete)


class SaveWatcher(TrainerCallback):
    """What the output directory holds right after each save."""

    def __init__(self, output_dir):
        self.output_dir, self.seen = output_dir, []

    def on_save(self, args, state, control, **kwargs):
        self.seen.append((state.global_step, [p for _, p in complete_checkpoints(str(self.output_dir))],
                          state.best_model_checkpoint, sorted(p.name for p in self.output_dir.glob(".tmp-*"))))


def test_sft_with_save_total_limit_1_and_the_best_model_always_keeps_a_complete_checkpoint(tiny_dirs, tmp_path):
    rows = [{"prompt": f"Q: {i}? A:", "completion": f" {i % 3}"} for i in range(16)]
    args = SFTConfig(output_dir=str(tmp_path), **CPU, max_length=32,
                     max_steps=4, per_device_train_batch_size=4, learning_rate=1e-3, save_strategy="steps",
                     save_steps=1, save_total_limit=1, eval_strategy="steps", eval_steps=1,
                     load_best_model_at_end=True, metric_for_best_model="eval_loss")
    watcher = SaveWatcher(tmp_path)

    train_sft(ModelArguments(model_name_or_path=tiny_dirs["sft"]), args, Dataset.from_list(rows[:12]),
              Dataset.from_list(rows[12:]), callbacks=[watcher])

    assert [step for step, *_ in watcher.seen] == [1, 2, 3, 4]
    for step, complete, best, staging in watcher.seen:
        assert str(tmp_path / f"checkpoint-{step}") in complete
        assert best in complete  # the Trainer's best checkpoint is a committed one, never a staging path
        assert len(complete) <= 2 and staging == []  # the newest and the best; nothing left half-written



def test_resuming_a_finished_run_trains_no_further_step_and_rewrites_the_final_model(tiny_dirs, tmp_path):
    rows = [{"prompt": f"Q: {i}? A:", "completion": f" {i % 3}"} for i in range(16)]
    args = dict(output_dir=str(tmp_path), **CPU, max_length=32, max_steps=3, per_device_train_batch_size=2,
                save_strategy="steps", save_steps=2)
    model_args = ModelArguments(model_name_or_path=tiny_dirs["sft"])
    train_sft(model_args, SFTConfig(**args), Dataset.from_list(rows))
    (tmp_path / "model.safetensors").unlink()  # killed while writing the final model

    trainer = train_sft(model_args, SFTConfig(**args, resume_from_checkpoint="true"), Dataset.from_list(rows))

    assert trainer.state.global_step == 3  # the last step was checkpointed: nothing to redo
    assert (tmp_path / "model.safetensors").is_file()
    assert [line["step"] for line in read_jsonl(tmp_path / "data_order.jsonl")] == [1, 2, 3]
