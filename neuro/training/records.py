"""Typed job configs and results that round-trip through a job folder's JSON (spec.json, result.json).

A job folder outlives the code that wrote it, so reading is lenient: keys this version does not know are
ignored and missing ones take their field's default; an older job still lists, tabulates and resumes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields
from typing import Any, ClassVar, TypeVar

R = TypeVar("R", bound="Record")


class Record:
    """Base of the dataclasses a job kind reads and writes. A field with metadata {"saved": False} stays
    out of the JSON (e.g. per-step losses, which metrics.json already holds); a nested Record is written
    as its own JSON and read back by the subclass's `from_json`."""

    __dataclass_fields__: ClassVar[dict[str, Any]]  # every Record is a dataclass (for the checker; not set here)

    def to_json(self) -> dict[str, Any]:
        return {f.name: _plain(getattr(self, f.name)) for f in fields(self) if f.metadata.get("saved", True)}

    @classmethod
    def from_json(cls: type[R], data: Mapping[str, Any]) -> R:
        return cls(**{f.name: data[f.name] for f in fields(cls) if f.init and f.name in data})


def _plain(value):
    return value.to_json() if isinstance(value, Record) else value
