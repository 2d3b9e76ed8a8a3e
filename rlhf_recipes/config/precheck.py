"""Checks on a command's raw settings (the `--config` YAML and the command-line flags) that need only
the standard library and PyYAML: the config file exists and is a mapping, local model and data paths
exist, and numbers are in range. The command line runs them before it imports the stage (trl,
transformers, torch), so a typo fails in a fraction of a second; the full dataclass parse still runs
afterwards and remains the authority on types, unknown keys and rules that relate fields.
"""

import json
import os
from collections.abc import Sequence

import yaml

from .errors import ConfigError
from .paths import DATA_FILE_SUFFIXES, STEP_1, STEP_2, check_local_path, check_model_reference
from .ranges import check_ranges

# command -> model path fields, each with the step whose output_dir it names (None: a base model).
MODEL_PATHS = {
    "sft": {"model_name_or_path": None, "tokenizer_name_or_path": None},
    "reward": {"model_name_or_path": STEP_1, "tokenizer_name_or_path": None},
    "ppo": {
        "model_name_or_path": STEP_1,
        "sft_model_path": STEP_1,
        "ref_model_path": STEP_1,
        "reward_model_path": STEP_2,
        "value_model_path": STEP_2,
        "tokenizer_name_or_path": None,
    },
    "eval-rm": {"model_name_or_path": STEP_2},
    "make-pairs": {"model_name_or_path": None},
    "generate": {"model_name_or_path": None},
    "chat": {"model_name_or_path": None},
}
DATA_PATHS = ("dataset_name", "ptx_dataset_name", "dataset")
CONFIG_COMMANDS = ("sft", "reward", "ppo", "eval-rm", "make-pairs")
RESUMABLE = ("sft", "reward", "ppo")


def read_yaml_mapping(path: str) -> dict:
    """The mapping in YAML file `path`, or a `ConfigError` saying why there is none."""
    if not os.path.isfile(path):
        raise ConfigError(f"Config file {path!r} does not exist; check the --config path (relative to {os.getcwd()}).")
    try:
        with open(path, encoding="utf-8") as handle:
            config = yaml.safe_load(handle)
    except yaml.YAMLError as err:
        raise ConfigError(f"Config file {path!r} is not valid YAML: {err}") from None
    if not isinstance(config, dict):
        raise ConfigError(f"Config file {path} must contain a YAML mapping of field: value.")
    return config


def command_line_settings(argv: Sequence[str]) -> dict:
    """`--key value`, `--key=value` and bare `--flag` (true) as a mapping of strings; other tokens are skipped."""
    settings, tokens = {}, list(argv)
    for index, token in enumerate(tokens):
        if not token.startswith("--"):
            continue
        key, has_value, value = token[2:].partition("=")
        if not has_value:
            following = tokens[index + 1] if index + 1 < len(tokens) else "--"
            value = "true" if following.startswith("--") else following
        settings[key.replace("-", "_")] = value
    return settings


def _mixer_sources(mixer) -> list[str]:
    if isinstance(mixer, str):
        try:
            mixer = json.loads(mixer)
        except json.JSONDecodeError:
            return []  # DataArguments names the bad JSON
    return [source for source in mixer if isinstance(source, str)] if isinstance(mixer, dict) else []


def check_settings(command: str, settings: dict, where: str, paths: bool = True) -> None:
    """Ranges of every numeric field in `settings`; with `paths`, that local model and data paths exist."""
    check_ranges(settings, where)
    if not paths:
        return
    for field, step in MODEL_PATHS.get(command, {}).items():
        value = settings.get(field)
        if isinstance(value, str):
            check_model_reference(field, value, step)
    data = [(field, settings.get(field)) for field in DATA_PATHS]
    data += [("dataset_mixer", source) for source in _mixer_sources(settings.get("dataset_mixer"))]
    for field, value in data:
        if isinstance(value, str):
            check_local_path(field, value, file_suffixes=DATA_FILE_SUFFIXES)


def _check_resume(settings: dict) -> None:
    """A resume_from_checkpoint that names no complete checkpoint (or `true` with none in output_dir)."""
    from ..artifacts.checkpointing import resolve_resume  # standard library only, like this module

    if settings.get("resume_from_checkpoint") is not None and settings.get("output_dir"):
        resolve_resume(settings["resume_from_checkpoint"], str(settings["output_dir"]))


def _config_path(argv: Sequence[str]) -> str | None:
    if "--config" not in argv:
        return None
    index = list(argv).index("--config")
    if index + 1 >= len(argv):
        raise ConfigError("--config needs a YAML file name after it.")
    return argv[index + 1]


def _check_pipeline(argv: Sequence[str], paths: bool) -> None:
    path = _config_path(argv)
    if path is None:
        return  # argparse reports the missing required --config
    spec = read_yaml_mapping(path)
    overrides = {key: value for key, value in command_line_settings(argv).items() if key != "config"}
    check_ranges(overrides, "command line")
    top_level = {key: spec.get(key) for key in ("seed", "torch_threads") if key not in overrides}
    check_ranges(top_level, f"config file {path}")
    base_dir = os.path.dirname(os.path.abspath(path))
    model = spec.get("model") if isinstance(spec.get("model"), dict) else {}
    check_settings("sft", model, f"'model' section of {path}", paths)
    for stage, fields in (spec.get("stages") or {}).items():
        if not isinstance(fields, dict):
            continue
        if isinstance(fields.get("config"), str):
            fields = {**read_yaml_mapping(os.path.join(base_dir, fields["config"])), **fields}
        # Model paths of later stages are written by the earlier ones; only data and numbers are checked.
        check_ranges(fields, f"'{stage}' stage of {path}")
        for field in DATA_PATHS:
            if paths and isinstance(fields.get(field), str):
                check_local_path(f"stages.{stage}.{field}", fields[field], file_suffixes=DATA_FILE_SUFFIXES)


def precheck(command: str, argv: Sequence[str]) -> None:
    """Everything about `rlhf-recipes <command> <argv>` that can be checked without importing the stage.

    `--print-config` skips the path checks: it shows a configuration whose inputs need not exist yet.
    """
    paths = "--print-config" not in argv
    if command == "pipeline":
        _check_pipeline(argv, paths)
    elif command in CONFIG_COMMANDS or command in ("generate", "chat"):
        cli = {key: value for key, value in command_line_settings(argv).items() if key != "config"}
        config = _config_path(argv) if command in CONFIG_COMMANDS else None
        from_file = read_yaml_mapping(config) if config is not None else {}
        check_settings(command, cli, "command line", paths)
        not_overridden = {key: value for key, value in from_file.items() if key not in cli}
        check_settings(command, not_overridden, f"config file {config}", paths)
        if paths and command in RESUMABLE:
            _check_resume({**from_file, **cli})
    elif command == "report":
        run_dirs = [token for token in argv if not token.startswith("-")]
        if run_dirs and paths and not os.path.isdir(run_dirs[0]):
            raise ConfigError(
                f"Run directory {run_dirs[0]!r} does not exist: give the output_dir of a demo or pipeline run."
            )
