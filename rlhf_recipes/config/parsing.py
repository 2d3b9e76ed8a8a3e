"""Argument parsing shared by every recipe: TRL's `TrlParser` (YAML via --config, CLI flags
override YAML) with errors that name unknown keys and suggest the closest valid one, and that name
the field, the value and the expected type of a wrong value (argparse would print its whole usage
for a flag, and never checks values from the YAML, which then fail deep inside a dataclass)."""

import argparse
import dataclasses
import difflib
import sys
import types
import typing
from collections.abc import Sequence

import torch
import yaml
from trl import TrlParser


class ConfigError(ValueError):
    """A recipe configuration that cannot run; raised before any model is loaded."""


def _suggest(key: str, valid: Sequence[str]) -> str:
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _unknown_keys(argv: list[str], valid: set[str]) -> list[tuple[str, str]]:
    unknown = []
    if "--config" in argv:
        path = argv[argv.index("--config") + 1]
        with open(path, encoding="utf-8") as handle:
            config = yaml.safe_load(handle)
        if not isinstance(config, dict):
            raise ConfigError(f"Config file {path} must contain a YAML mapping of field: value.")
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
    with open(path, encoding="utf-8") as handle:
        config = yaml.safe_load(handle)
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


def parse_args(dataclass_types: Sequence[type], argv: Sequence[str] | None = None) -> tuple:
    """Parse `--config file.yaml` plus command-line flags into the given dataclasses.

    Unknown keys, in the YAML or on the command line, and values that do not fit their field's
    type or choices raise `ConfigError` naming each key and where it came from, before any
    dataclass is built. On the command line, `null` (or `None`) unsets an optional field. Without
    CUDA, `bf16` defaults to false and `use_cpu` to true (TRL defaults bf16 to true, which fails on
    a CPU); YAML and flags still win.
    """
    parser = TrlParser(dataclass_types=list(dataclass_types))
    valid = {action.dest for action in parser._actions if action.dest != "help"}
    if not torch.cuda.is_available():
        parser.set_defaults(**{key: value for key, value in (("bf16", False), ("use_cpu", True)) if key in valid})
    argv = list(sys.argv[1:] if argv is None else argv)
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
    return tuple(parser.parse_args_and_config(argv))
