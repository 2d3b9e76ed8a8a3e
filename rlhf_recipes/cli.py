"""The `rlhf-recipes` command: one subcommand per recipe, each reusing the recipe's own parser.

Before a subcommand's module (and with it trl, transformers and torch) is imported, its settings
go through `config.precheck`, so a missing file or an impossible value fails in a fraction of a
second. A user error (`UserError`: `ConfigError`, `DataError`) or a model that does not fit in
memory prints one paragraph and exits with status 2; `--debug` (or RLHF_RECIPES_DEBUG=1) shows the
traceback instead. The recipe scripts (`recipes/*.py`) run through `run` too.
"""

import gc
import importlib
import os
import sys
from collections.abc import Sequence

from .config.errors import UserError
from .config.precheck import precheck

# subcommand -> (module with a `main(argv)` function, one-line help)
COMMANDS = {
    "sft": ("rlhf_recipes.stages.sft", "Step 1: supervised fine-tuning (trl.SFTTrainer)."),
    "reward": ("rlhf_recipes.stages.reward", "Step 2: pairwise reward model (trl.RewardTrainer) + RM evaluation."),
    "eval-rm": ("rlhf_recipes.stages.reward_eval", "Score chosen vs rejected answers with a reward model."),
    "ppo": ("rlhf_recipes.ppo.run", "Step 3: PPO(-ptx) against the reward model."),
    "pipeline": ("rlhf_recipes.pipeline.runner", "Run the stages of a pipeline YAML in order."),
    "demo": ("rlhf_recipes.demo.run", "The offline CPU demo: all of RLHF on a checkable toy task."),
    "report": ("rlhf_recipes.report.build", "Build report.html/report.md for a run directory."),
    "generate": ("rlhf_recipes.tools.chat", "Generate completions for prompts with any stage's model."),
    "chat": ("rlhf_recipes.tools.chat", "Talk to any stage's model in the terminal."),
    "make-pairs": ("rlhf_recipes.tools.make_pairs", "Preference pairs whose rejected answer comes from a model."),
}
DEBUG_FLAG = "--debug"
DEBUG_ENV = "RLHF_RECIPES_DEBUG"
USER_ERROR_STATUS = 2


def _usage() -> str:
    lines = [
        "usage: rlhf-recipes <command> [--config FILE.yaml] [--field value ...] [--print-config] [--debug]",
        "",
        "commands:",
    ]
    lines += [f"  {name:<11} {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "`rlhf-recipes <command> --help` lists the command's fields with their defaults."]
    return "\n".join(lines)


def _out_of_memory(err: BaseException) -> bool:
    torch = sys.modules.get("torch")
    return isinstance(err, MemoryError) or (torch is not None and isinstance(err, torch.OutOfMemoryError))


def _message(err: BaseException) -> str:
    if isinstance(err, UserError):
        return str(err)
    return (
        f"the model does not fit in memory ({str(err).splitlines()[0] if str(err) else type(err).__name__}). "
        "Lower per_device_train_batch_size (gradient_accumulation_steps keeps the effective batch), set "
        "gradient_checkpointing: true, or train LoRA/QLoRA adapters (use_peft: true, load_in_4bit: true)."
    )


def _import_then_freeze(module_name: str):
    """Import a subcommand's module with the cyclic garbage collector paused, then `gc.freeze` what exists.

    torch, transformers and trl leave millions of long-lived objects: collections during their import,
    and every full collection afterwards, would walk them all again (about 5% of the demo's CPU time).
    """
    gc.disable()
    try:
        return importlib.import_module(module_name)
    finally:
        gc.freeze()
        gc.enable()


def run(name: str, argv: Sequence[str], report_errors: bool = True) -> int:
    """Run subcommand `name` with its options `argv`; returns the exit status.

    With `report_errors`, a user error prints one paragraph to stderr and returns 2 (unless `--debug`
    or RLHF_RECIPES_DEBUG=1); without, it propagates as the exception.
    """
    argv = list(argv)
    debug = DEBUG_FLAG in argv or os.environ.get(DEBUG_ENV, "") not in ("", "0")
    argv = [token for token in argv if token != DEBUG_FLAG]
    try:
        if not {"-h", "--help"} & set(argv):
            precheck(name, argv)
        module = _import_then_freeze(COMMANDS[name][0])
        return module.main([name, *argv] if name in ("chat", "generate") else argv) or 0
    except Exception as err:
        if debug or not report_errors or not (isinstance(err, UserError) or _out_of_memory(err)):
            raise
        print(f"rlhf-recipes {name}: error: {_message(err)} (--debug shows the traceback.)", file=sys.stderr)
        return USER_ERROR_STATUS


def main(argv: list[str] | None = None) -> int:
    """The console script (no `argv`: user errors become a paragraph and exit status 2), or the same
    command from Python (`main(["sft", "--config", ...])`: user errors raise)."""
    console = argv is None
    argv = list(sys.argv[1:] if console else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"rlhf-recipes: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    if console:
        sys.argv[0] = f"rlhf-recipes {name}"  # argparse's usage line names the subcommand
    return run(name, rest, report_errors=console)


if __name__ == "__main__":
    sys.exit(main())
