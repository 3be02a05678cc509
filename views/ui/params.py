"""Page controls built from a config dataclass's field (neuro.params.ParamSpec): label, range, step, default,
number format and help come from the field, so a page never types them again. `overrides` change one of
them for one control (e.g. a help text that names the page's own context)."""

from __future__ import annotations

import streamlit as st

from neuro.params import ParamSpec


def _control(s: ParamSpec, key: str, overrides: dict) -> dict:
    args = dict(label=s.label or s.name, min_value=s.min_value, max_value=s.max_value, value=s.default,
                step=None if s.step is None else s.type(s.step), format=s.fmt, key=key, help=s.help or None)
    return {**args, **overrides}


def slider(s: ParamSpec, *, key: str, container=st, **overrides):
    """A slider over the field's shown range (its valid range unless `shown` narrows it)."""
    return container.slider(**_control(s, key, overrides))


def number_input(s: ParamSpec, *, key: str, container=st, **overrides):
    """A number input within the field's shown range; the value comes back as the field's type."""
    return s.type(container.number_input(**_control(s, key, overrides)))
