"""Typed pieces of a transfer result (result.json): the scores of one language, of one evaluated program, and a
kept sample summary.

Why here and typed: pages, the CLI and the comparison helpers read these, and a misspelled string key failed
only at run time. Each type reads and writes exactly the JSON the result has always held (`from_json` /
`to_json`): optional keys absent when unset (a run without the evaluation before training has no "*_before"; a
job from before intervals existed has no "*_ci"), an interval as `Interval.summary()` with NaN written as null.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, Literal

from neuro.analysis.uncertainty import Interval
from neuro.experiments.intervals import interval_from_summary, interval_summary

Metric = Literal["bleu4", "rouge_l"]
METRICS: tuple[Metric, ...] = ("bleu4", "rouge_l")


def _optional(**values) -> dict:
    return {k: v for k, v in values.items() if v is not None}


class _Scored:
    """`score(metric)` and `before(metric)` of a record holding both metrics after and before training."""

    bleu4: float
    rouge_l: float
    bleu4_before: float | None
    rouge_l_before: float | None

    def score(self, metric: Metric) -> float:
        return self.bleu4 if metric == "bleu4" else self.rouge_l

    def before(self, metric: Metric) -> float | None:
        return self.bleu4_before if metric == "bleu4" else self.rouge_l_before


@dataclass(frozen=True)
class LanguageScores(_Scored):
    """One evaluated language (x 100): smoothed BLEU-4 and ROUGE-L after training over its `n` programs, the same
    before training (None when the run skipped that evaluation), and their intervals over evaluation tasks."""

    bleu4: float
    rouge_l: float
    n: int
    bleu4_before: float | None = None
    rouge_l_before: float | None = None
    bleu4_ci: Interval | None = None
    rouge_l_ci: Interval | None = None

    def ci(self, metric: Metric) -> Interval | None:
        return self.bleu4_ci if metric == "bleu4" else self.rouge_l_ci

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> LanguageScores:
        return cls(bleu4=data["bleu4"], rouge_l=data["rouge_l"], n=data["n"], bleu4_before=data.get("bleu4_before"),
                   rouge_l_before=data.get("rouge_l_before"), bleu4_ci=interval_from_summary(data.get("bleu4_ci")),
                   rouge_l_ci=interval_from_summary(data.get("rouge_l_ci")))

    def to_json(self) -> dict[str, Any]:
        return {"bleu4": self.bleu4, "rouge_l": self.rouge_l, "n": self.n,
                **_optional(bleu4_before=self.bleu4_before, rouge_l_before=self.rouge_l_before,
                            bleu4_ci=interval_summary(self.bleu4_ci), rouge_l_ci=interval_summary(self.rouge_l_ci))}


@dataclass(frozen=True)
class ProgramScores(_Scored):
    """One evaluated program's sentence BLEU-4 and ROUGE-L (x 100) after (and before) training: the input of the
    intervals (their per-language means are the scores `LanguageScores` reports)."""

    id: str
    lang: str
    task: str
    bleu4: float
    rouge_l: float
    bleu4_before: float | None = None
    rouge_l_before: float | None = None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ProgramScores:
        return cls(id=data["id"], lang=data["lang"], task=data["task"], bleu4=data["bleu4"], rouge_l=data["rouge_l"],
                   bleu4_before=data.get("bleu4_before"), rouge_l_before=data.get("rouge_l_before"))

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "lang": self.lang, "task": self.task, "bleu4": self.bleu4, "rouge_l": self.rouge_l,
                **_optional(bleu4_before=self.bleu4_before, rouge_l_before=self.rouge_l_before)}


@dataclass(frozen=True)
class SummarySample:
    """A summary kept to show: the program (code cut to 600 characters), its reference summary, the prediction
    after training and before (None when not evaluated before), and the prediction's scores (x 100, rounded)."""

    lang: str
    task: str
    reference: str
    prediction: str
    before: str | None
    bleu4: float
    rouge_l: float
    code: str

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SummarySample:
        return cls(lang=data["lang"], task=data["task"], reference=data["reference"], prediction=data["prediction"],
                   before=data.get("before"), bleu4=data["bleu4"], rouge_l=data["rouge_l"], code=data["code"])

    def to_json(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}
