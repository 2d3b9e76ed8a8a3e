"""Argument parsing shared by every recipe: TRL's `TrlParser` (YAML via --config, CLI flags
override YAML) with errors that name unknown keys and suggest the closest valid one, and that name
the field, the value and the expected type of a wrong value (argparse would print its whole usage
for a flag, and never checks values from the YAML, which then fail deep inside a dataclass)."""

import argparse
import dataclasses
import difflib
import enum
import sys
import types
import typing
from collections.abc import Sequence

import torch
import yaml
from trl import TrlParser

from .errors import ConfigError
from .precheck import read_yaml_mapping
from .ranges import check_ranges


def _suggest(key: str, valid: Sequence[str]) -> str:
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _unknown_keys(argv: list[str], valid: set[str]) -> list[tuple[str, str]]:
    unknown = []
    if "--config" in argv:
        path = argv[argv.index("--config") + 1]
        config = read_yaml_mapping(path)
        unknown += [(key, f"config file {path}") for key in config if key not in valid | {"env"}]
    for token in argv:
        key = token[2:].split("=", 1)[0].replace("-", "_")
        if token.startswith("--") and key not in valid | {"config"}:
            unknown.append((key, "command line"))
    return unknown


def _expected(action: argparse.Action) -> str:
    name = getattr(action.type, "__name__", "value")
    return {"string_to_bool": "true or false", "int": "a whole number", "float": "a number"}.get(name, f"a valid {name}")


def _check_value(key: str, value, action: argparse.Action, where: str) -> None:
    """A YAML value must convert with the field's argparse type and be one of its choices."""
    values = value if isinstance(value, list) and action.nargs in ("+", "*") else [value]
    for item in values:
        if item is None or isinstance(item, dict | list) or action.type is None:
            continue
        # YAML reads unquoted yes/no/on/off as booleans, which a text field then gets as True/False.
        hint = " (YAML reads unquoted no/yes as false/true: quote the value)" if isinstance(item, bool) else ""
        try:
            converted = action.type(str(item))
        except (ValueError, TypeError, argparse.ArgumentTypeError):
            raise ConfigError(f"{key} must be {_expected(action)}; the {where} gives {item!r}.") from None
        if action.choices is not None and converted not in action.choices:
            choices = [str(choice) for choice in action.choices]
            raise ConfigError(
                f"{key} must be one of {', '.join(choices)}; the {where} gives {item!r}"
                f"{_suggest(str(item), choices)}{hint}."
            )


def _check_config_values(argv: list[str], parser: TrlParser) -> None:
    if "--config" not in argv:
        return
    path = argv[argv.index("--config") + 1]
    config = read_yaml_mapping(path)
    actions = {action.dest: action for action in parser._actions}
    for key, value in config.items():
        if key in actions:
            _check_value(key, value, actions[key], f"config file {path}")


NULL_WORDS = ("null", "None")


def _str_or_none(value: str) -> str | None:
    return None if value in NULL_WORDS else value


def _optional_str_fields(dataclass_types: Sequence[type]) -> set[str]:
    """Fields typed `str | None`: argparse would otherwise hand them the word 'null' as a string."""
    names = set()
    for dtype in dataclass_types:
        hints = typing.get_type_hints(dtype)
        for field in dataclasses.fields(dtype):
            hint = hints.get(field.name)
            if typing.get_origin(hint) in (typing.Union, types.UnionType) and set(typing.get_args(hint)) == {
                str,
                type(None),
            }:
                names.add(field.name)
    return names


def _raise_config_error(message: str):
    """argparse's error hook: a flag with a wrong value becomes a `ConfigError` instead of usage + exit."""
    raise ConfigError(f"Command line: {message.rstrip('.')}.")


HELP_FLAGS = ("-h", "--help")
PRINT_CONFIG_FLAG = "--print-config"
_HIDDEN = "<hidden>"


def _first_line(dtype: type) -> str:
    doc = (dtype.__doc__ or "").strip()
    return "" if doc.startswith(f"{dtype.__name__}(") else doc.split("\n", 1)[0]  # dataclass's generated doc


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Defaults after each help text, and each field once (HfArgumentParser adds a --dashed-alias of every flag)."""

    def _format_action_invocation(self, action: argparse.Action) -> str:
        if not action.option_strings or action.nargs == 0:
            return super()._format_action_invocation(action)
        return f"{action.option_strings[0]} {self._format_args(action, self._get_default_metavar_for_optional(action))}"


def _grouped_help(parser: TrlParser, dataclass_types: Sequence[type], argv: list[str]) -> str:
    """The parser's help with each dataclass's fields under its own heading, defaults from `--config` if given."""
    parser.formatter_class = _HelpFormatter
    parser.usage = f"{parser.prog} [--config FILE.yaml] [--field value ...] [{PRINT_CONFIG_FLAG}] [--debug]"
    parser.epilog = (
        "Fields come from the --config YAML (field: value) and flags (--field value); flags win. "
        f"{PRINT_CONFIG_FLAG} prints the resolved fields as YAML and exits; --debug shows tracebacks."
    )
    if "--config" in argv:
        config = read_yaml_mapping(argv[argv.index("--config") + 1])
        parser.set_defaults_with_config(**{key: value for key, value in config.items() if key != "env"})
    for dtype in dataclass_types:
        names = {field.name for field in dataclasses.fields(dtype)}
        group = parser.add_argument_group(dtype.__name__, _first_line(dtype))
        for action in [action for action in parser._optionals._group_actions if action.dest in names]:
            parser._optionals._group_actions.remove(action)
            group._group_actions.append(action)
    return parser.format_help()


def _plain(value):
    """`value` as YAML-safe data: enums as their value, nested dataclasses as mappings."""
    if isinstance(value, enum.Enum):
        return value.value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {field.name: _plain(getattr(value, field.name)) for field in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return value if value is None or isinstance(value, bool | int | float | str) else str(value)


def resolved_yaml(parsed: Sequence) -> str:
    """Every field of the parsed dataclasses as YAML (a `--config` file that reproduces them), one commented
    block per dataclass; a Hub token is hidden."""
    blocks = []
    for obj in parsed:
        values = {
            field.name: _HIDDEN if field.name.endswith("hub_token") and getattr(obj, field.name) else _plain(
                getattr(obj, field.name)
            )
            for field in dataclasses.fields(obj)
            if field.init
        }
        blocks.append(f"# {type(obj).__name__}\n" + yaml.safe_dump(values, sort_keys=False, allow_unicode=True))
    return "\n".join(blocks)


def _gives(argv: Sequence[str], key: str) -> bool:
    """Whether the command line or its --config YAML sets `key`."""
    if "--config" in argv and key in read_yaml_mapping(argv[argv.index("--config") + 1]):
        return True
    return any(token[2:].split("=", 1)[0].replace("-", "_") == key for token in argv if token.startswith("--"))


def parse_args(dataclass_types: Sequence[type], argv: Sequence[str] | None = None) -> tuple:
    """Parse `--config file.yaml` plus command-line flags into the given dataclasses.

    Unknown keys, in the YAML or on the command line, and values that do not fit their field's
    type or choices raise `ConfigError` naming each key and where it came from, before any
    dataclass is built; so do numbers outside their range (`config.ranges`) and a `ValueError` of a
    dataclass's own checks. On the command line, `null` (or `None`) unsets an optional field. Without
    CUDA, `bf16` defaults to false and `use_cpu` to true (TRL defaults bf16 to true, which fails on
    a CPU); YAML and flags still win. `--help` prints the fields grouped by dataclass with their
    defaults and `--print-config` the resolved fields as YAML; both then exit with status 0.
    """
    parser = TrlParser(dataclass_types=list(dataclass_types))
    valid = {action.dest for action in parser._actions if action.dest != "help"}
    if not torch.cuda.is_available():
        parser.set_defaults(**{key: value for key, value in (("bf16", False), ("use_cpu", True)) if key in valid})
    argv = list(sys.argv[1:] if argv is None else argv)
    if "activation_checkpointing" in valid and not _gives(argv, "gradient_checkpointing"):
        # TRL keeps its default (true) on transformers' deprecated alias, which then warns on every run that
        # sets neither name: the same default on the current name instead.
        alias_default = parser.get_default("gradient_checkpointing")
        parser.set_defaults(activation_checkpointing=alias_default, gradient_checkpointing=None)
    if set(HELP_FLAGS) & set(argv):
        print(_grouped_help(parser, dataclass_types, argv))
        raise SystemExit(0)
    print_config = PRINT_CONFIG_FLAG in argv
    argv = [token for token in argv if token != PRINT_CONFIG_FLAG]
    unknown = _unknown_keys(argv, valid)
    if unknown:
        details = "; ".join(f"{key!r} in the {where}{_suggest(key, sorted(valid))}" for key, where in unknown)
        raise ConfigError(f"Unknown argument(s): {details}.")
    _check_config_values(argv, parser)
    optional = _optional_str_fields(dataclass_types)
    for action in parser._actions:
        if action.dest in optional and action.type is str:
            action.type = _str_or_none  # `--stop_token null` unsets a field, as `stop_token: null` does in YAML
    parser.error = _raise_config_error
    try:
        parsed = tuple(parser.parse_args_and_config(argv))
    except ConfigError:
        raise
    except ValueError as err:  # a dataclass's own check (TrainingArguments: "--load_best_model_at_end requires...")
        raise ConfigError(str(err)) from err
    for obj in parsed:
        check_ranges({field.name: getattr(obj, field.name) for field in dataclasses.fields(obj)})
    if print_config:
        print(resolved_yaml(parsed), end="")
        raise SystemExit(0)
    return parsed
