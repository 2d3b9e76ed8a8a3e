"""Runs a recipe script in this process and freezes it at a chosen point, so that a test can
SIGKILL it exactly there (no timing guesses).

usage: python pause_runner.py {step,save} N FLAG_FILE SCRIPT [SCRIPT ARGS...]

- step: right after optimizer step N, before that step's log line and checkpoint (any trainer
  built on transformers' callbacks: SFT, reward model, PPO);
- save: in the middle of writing checkpoint-N (weights and optimizer written, RNG and trainer
  state not yet): HF Trainer stages only.

FLAG_FILE is written when the process is frozen; it then sleeps until killed.
"""

import runpy
import sys
import time
from pathlib import Path

from transformers import Trainer, TrainerCallback
from transformers.trainer import DEFAULT_CALLBACKS


def freeze(flag: str) -> None:
    Path(flag).write_text("paused", encoding="utf-8")
    while True:
        time.sleep(60)


class FreezeAfterStep(TrainerCallback):
    def __init__(self, step: int, flag: str):
        self.step, self.flag = step, flag

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            freeze(self.flag)


def freeze_while_saving(step: int, flag: str) -> None:
    save_rng_state = Trainer._save_rng_state

    def frozen_at_step(self, output_dir):
        if self.state.global_step == step:
            freeze(flag)
        return save_rng_state(self, output_dir)

    Trainer._save_rng_state = frozen_at_step


if __name__ == "__main__":
    when, step, flag, script, *script_args = sys.argv[1:]
    if when == "step":
        DEFAULT_CALLBACKS.append(FreezeAfterStep(int(step), flag))  # the list every trainer starts from
    else:
        freeze_while_saving(int(step), flag)
    sys.argv = [script, *script_args]
    runpy.run_path(script, run_name="__main__")
