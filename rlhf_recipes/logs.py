"""Quiet, plain logs for every stage. `configure(training_args)` runs in each stage's entry point once its
arguments are parsed (again for each stage of a pipeline: it is idempotent):

- our own messages (`logging.getLogger("rlhf_recipes")`): one line each, without level or time prefix;
- Python warnings: one line each (`UserWarning: ...`, no source line), each text once per process;
- under DDP (`RANK` set by torchrun / accelerate launch) only rank 0 prints warnings and notices;
- progress bars (datasets, transformers, the Trainer's) only when stderr is a terminal; otherwise the
  Trainer prints its metric dicts as plain lines (`PrinterCallback`);
- DeepSpeed is imported only by launches that use it (see `_leave_deepspeed_unimported`).

`-W` / `PYTHONWARNINGS` still decide which warnings show when given.
"""

import logging
import os
import sys
import warnings

logger = logging.getLogger("rlhf_recipes")

# peft 0.21 (`PeftModel.__init__`) reads transformers' deprecated `is_gradient_checkpointing` alias on every
# LoRA model it builds; no argument of ours avoids that call.
_THIRD_PARTY_DEPRECATIONS = (r"`is_gradient_checkpointing` is deprecated",)


def is_main_rank() -> bool:
    """Rank 0, or a single process (no `RANK` in the environment)."""
    return int(os.environ.get("RANK", "0")) == 0


def bars_wanted() -> bool:
    """Progress bars redraw a line with carriage returns: useful on a terminal, noise in a log file."""
    return sys.stderr.isatty()


def _one_line(message, category, filename, lineno, line=None) -> str:
    return f"{category.__name__}: {message}\n"


def _configure_warnings(main: bool) -> None:
    warnings.formatwarning = _one_line
    if not sys.warnoptions:
        for category in (UserWarning, FutureWarning, RuntimeWarning):
            warnings.filterwarnings("once" if main else "ignore", category=category)
    for pattern in _THIRD_PARTY_DEPRECATIONS:  # inserted last, so matched first
        warnings.filterwarnings("ignore", message=pattern, category=FutureWarning)


def _configure_our_logger(main: bool) -> None:
    if not any(getattr(handler, "_rlhf_recipes", False) for handler in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        handler._rlhf_recipes = True
        logger.addHandler(handler)
        logger.propagate = False
    logger.setLevel(logging.WARNING if main else logging.ERROR)


def _configure_libraries(main: bool, training_args) -> None:
    import datasets
    import transformers

    level = logging.WARNING if main else logging.ERROR
    transformers.utils.logging.set_verbosity(level)
    datasets.utils.logging.set_verbosity(level)
    if not bars_wanted():
        transformers.utils.logging.disable_progress_bar()
        datasets.disable_progress_bars()
    if training_args is None:
        return
    if not bars_wanted():
        training_args.disable_tqdm = True
    if training_args.log_level_replica == "warning":  # the Trainer resets replicas to this level: keep them quiet
        training_args.log_level_replica = "error"


def _leave_deepspeed_unimported() -> None:
    """accelerate's `extract_model_from_parallel` (behind every `unwrap_model` and peft check) imports deepspeed
    whenever it is installed, to test `isinstance(model, DeepSpeedEngine)`: that import prints "Setting
    accelerator to CPU" and takes seconds on runs without DeepSpeed. A model can be a `DeepSpeedEngine` only
    once deepspeed is imported, so the test asks exactly that (launches with DeepSpeed import it when they
    prepare the model)."""
    import accelerate.utils.other

    accelerate.utils.other.is_deepspeed_available = lambda: "deepspeed" in sys.modules


def configure(training_args=None) -> None:
    """Set up the logs of this process; `training_args` (a `TrainingArguments`) gets its progress-bar and
    replica log level settings."""
    main = is_main_rank()
    _configure_warnings(main)
    _configure_our_logger(main)
    _configure_libraries(main, training_args)
    _leave_deepspeed_unimported()
