"""One source per parameter: a config dataclass's field carries its default, valid range, step, label and help,
and the CLI's options (neuro.cli.params) and the pages' controls (views.ui.params) are built from it, so no
caller types a default or a range again.

    candidate_quantile: float = param(0.90, low=0.0, high=1.0, shown=(0.5, 0.999), step=0.005,
                                      label="Candidate threshold quantile", help="...")

`low`/`high` bound what the dataclass accepts (the CLI refuses anything outside; `check` raises for it);
`shown` is the part of that range a page's control offers (default: all of it), `step` and `fmt` its
granularity and number format. Plain data on the floor of the package stack: anything may import it.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass
from typing import Any

_KEY = "param"


@dataclass(frozen=True)
class ParamSpec:
    """What a UI control or a CLI option needs to know about one field (see `param`)."""

    name: str
    type: type  # int or float (what the CLI converts to, what a control keeps)
    default: Any
    low: float | None = None
    high: float | None = None
    exclusive_low: bool = False  # low itself is refused: (low, high]
    step: float | None = None
    label: str = ""
    help: str = ""
    fmt: str | None = None
    shown: tuple[float, float] | None = None

    @property
    def flag(self) -> str:
        """The CLI option: `--candidate-quantile` for `candidate_quantile`."""
        return "--" + self.name.replace("_", "-")

    @property
    def min_value(self):
        """The smallest value a control offers."""
        return self._typed(self.shown[0] if self.shown else self.low)

    @property
    def max_value(self):
        """The largest value a control offers."""
        return self._typed(self.shown[1] if self.shown else self.high)

    def _typed(self, value):
        return None if value is None else self.type(value)

    def problem(self, value) -> str | None:
        """Why `value` lies outside the valid range (None: it does not)."""
        lo_ok = self.low is None or (value > self.low if self.exclusive_low else value >= self.low)
        hi_ok = self.high is None or value <= self.high
        if lo_ok and hi_ok and not (isinstance(value, float) and math.isnan(value)):
            return None
        return f"{self.name} must {self.range_text()}, got {value}"

    def range_text(self) -> str:
        """'lie in [0, 1]', 'lie in (0, 1]', 'be >= 1', 'be <= 5': the valid range in words."""
        low, high = _text(self.low), _text(self.high)
        if self.low is not None and self.high is not None:
            return f"lie in {'(' if self.exclusive_low else '['}{low}, {high}]"
        if self.low is not None:
            return f"be {'>' if self.exclusive_low else '>='} {low}"
        return f"be <= {high}" if self.high is not None else "be a number"


def _text(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def param(default, *, low: float | None = None, high: float | None = None, exclusive_low: bool = False,
          step: float | None = None, label: str = "", help: str = "", fmt: str | None = None,
          shown: tuple[float, float] | None = None):
    """A dataclass field with `default` and what a control or an option needs (see the module docstring)."""
    if shown is not None and not ((low is None or shown[0] >= low) and (high is None or shown[1] <= high)):
        raise ValueError(f"shown {shown} lies outside [{low}, {high}]")
    meta = dict(low=low, high=high, exclusive_low=exclusive_low, step=step, label=label, help=help, fmt=fmt,
                shown=shown)
    return dataclasses.field(default=default, metadata={_KEY: meta})


def spec(cls, name: str) -> ParamSpec:
    """The ParamSpec of `cls`'s field `name` (a dataclass class or instance; its default, not the instance's
    value). KeyError when the field carries no `param` metadata."""
    cls = cls if isinstance(cls, type) else type(cls)
    found = {f.name: f for f in dataclasses.fields(cls)}
    if name not in found or _KEY not in found[name].metadata:
        raise KeyError(f"{cls.__name__}.{name} is not declared with neuro.params.param")
    f = found[name]
    kind = typing.get_type_hints(cls).get(name)
    if kind not in (int, float):
        kind = type(f.default)
    return ParamSpec(name=name, type=kind, default=f.default, **f.metadata[_KEY])


def specs(cls) -> list[ParamSpec]:
    """Every field of `cls` declared with `param`, in field order."""
    cls = cls if isinstance(cls, type) else type(cls)
    return [spec(cls, f.name) for f in dataclasses.fields(cls) if _KEY in f.metadata]


def check(instance) -> None:
    """Raise ValueError for the first `param` field of `instance` outside its valid range (for __post_init__)."""
    for s in specs(instance):
        problem = s.problem(getattr(instance, s.name))
        if problem:
            raise ValueError(problem)
