"""Every closed set of string choices the backend takes, written once as a `Literal` alias.

A type checker (mypy, run by tests/test_typecheck.py on neuro/) then rejects a misspelled value before
anything runs; at run time the same sets come from `choices(Alias)` (the CLI's `choices=`, the pages'
radios and selectboxes, the checks in `__post_init__` and `validate_*`), so no set is typed twice.

The aliases live here, below every package (the bottom layer in pyproject's import contract), because
their users span floors: a selection score is named by neuro.instrument's statistics, neuro.analysis's
selection, neuro.jobs' analysis jobs and the CLI. The order of each alias is the order shown to users.
"""

from __future__ import annotations

from typing import Any, Literal, get_args

# ---------------------------------------------------------------------------- neuron selection (neuro.analysis)
SelectionMethod = Literal["pls", "lape"]
"""PLS (activation x gradient, the paper's) or LAPE (entropy of activation probabilities)."""

Score = Literal["pls", "attribution"]
"""The per-neuron score PLS selection ranks by (SelectionParams.score)."""

Normalization = Literal["none", "language", "language_layer"]
"""How PLS is scaled before selection (SelectionParams.normalize)."""

NeuronClass = Literal["specific", "universal", "other"]

# ---------------------------------------------------------------------------- experiments (neuro.experiments)
FinetuneMethod = Literal["neurons", "random", "full", "lora"]
"""What a fine-tuning run trains: the chosen neurons' rows and columns, as many random neurons, every
parameter, or LoRA on the chosen neurons' FFNs (neuro/experiments/finetune.py, one class each)."""

NeuronSetName = Literal["specific", "specific+universal"]

TransferMethod = Literal["lora", "full"]

LayerChoice = Literal["concept", "all", "lower", "custom"]
"""Which layers a transfer run adapts (neuro.experiments.transfer.resolve_layers)."""

# ---------------------------------------------------------------------------- embeddings and clones
CenterChoice = Literal["language", "corpus", "none"]
"""What is subtracted from pooled states before cosine (neuro.analysis.embeddings.CENTERINGS)."""

# ---------------------------------------------------------------------------- passes (neuro.instrument, neuro.model)
# (an intervention's operation is neuro.instrument.intervention.Op, next to what each operation does)
QuadratureRule = Literal["midpoint", "gauss"]
"""Path attribution's integration rule (neuro.instrument.path_attribution.quadrature)."""

PassKind = Literal["forward", "backward"]
"""A pass over a model whose memory `neuro.model.plan.batch_plan` sizes."""

# ---------------------------------------------------------------------------- model loading (neuro.model)
DeviceMap = Literal["auto", "balanced", "balanced_low_0", "sequential"]
"""accelerate's named device maps (a dict map is also accepted by load_model)."""

# ---------------------------------------------------------------------------- jobs (neuro.jobs)
JobState = Literal["queued", "running", "finished", "failed", "cancelled"]
ActiveState = Literal["queued", "running"]
TerminalState = Literal["finished", "failed", "cancelled"]

# ---------------------------------------------------------------------------- the sandbox (neuro.code)
ExecutionStatus = Literal["passed", "failed", "compile_error", "timeout", "memory", "killed", "error"]
"""The outcome of running one program against its test (neuro.code.sandbox.ExecutionResult.status)."""

Isolation = Literal["bubblewrap", "namespaces", "none"]
"""How the sandbox isolates a program: bubblewrap, bare user namespaces, or nothing."""


def choices(alias: object) -> tuple[str, ...]:
    """The values of a Literal alias, in its order: what a CLI's `choices=` or a page's radio offers."""
    values = get_args(alias)
    if not values or not all(isinstance(v, str) for v in values):
        raise TypeError(f"{alias!r} is not a Literal of strings")
    return values


def _typed_choices(alias: object) -> tuple[Any, ...]:
    """`choices(alias)` for a constant annotated `tuple[Alias, ...]` below: a return type cannot name "the
    values of this alias", so the annotation on the constant says it, once, and callers get the Literal."""
    return choices(alias)


# The sets the backend passes on as typed values (a default of a `Sequence[Alias]` parameter, a loop whose
# values go into a typed field); `choices(Alias)` serves wherever a plain list of strings does.
NORMALIZATIONS: tuple[Normalization, ...] = _typed_choices(Normalization)
