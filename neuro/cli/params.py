"""CLI options built from a config dataclass's fields (neuro.params): `--candidate-quantile` from
`candidate_quantile`, with its type, default and help from the field and its valid range checked as a usage
error. And the parser class that reports usage errors in the --json summary too."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Mapping
from typing import Any

from neuro.params import ParamSpec, spec


class UsageError(SystemExit):
    """argparse's usage error (exit status 2), with its message kept for the --json summary."""

    def __init__(self, message: str):
        super().__init__(2)
        self.message = message


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors keep their message (`UsageError`) after printing as argparse does."""

    def error(self, message: str):
        self.print_usage(sys.stderr)
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        raise UsageError(message)


def checked(s: ParamSpec):
    """argparse `type=` for `s`: converts to its type and refuses values outside its valid range."""

    def convert(text: str):
        try:
            value = s.type(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {'a whole number' if s.type is int else 'a number'}, "
                                             f"got {text!r}") from None
        problem = s.problem(value)
        if problem:
            raise argparse.ArgumentTypeError(problem)
        return value

    convert.__name__ = s.type.__name__  # argparse names the type in its own messages
    return convert


def add_params(parser: argparse.ArgumentParser, cls, names: Iterable[str], *,
               defaults: Mapping[str, Any] | None = None) -> None:
    """Add one option per field `names` of the dataclass `cls`: `--field-name`, dest the field's name,
    type, range, help and default from the field. `defaults`: a field's default overridden for this command
    only (say why where it is used)."""
    defaults = defaults or {}
    for name in names:
        s = spec(cls, name)
        default = defaults.get(name, s.default)
        bounds = f"; must {s.range_text()}" if s.low is not None or s.high is not None else ""
        text = f"{s.help or s.label} (default {_number(default)}{bounds})".replace("%", "%%")
        parser.add_argument(s.flag, dest=name, type=checked(s), default=default, metavar=name.split("_")[-1].upper(),
                            help=text)


def _number(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)
