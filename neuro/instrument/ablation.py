"""Ablation: zero a set of neurons during loss evaluation or generation, and the controls it is compared with.

`ablated(loaded, neurons)` is a context manager: inside it every forward pass of the model (loss,
`generate`) sees the chosen neurons' activations set to zero. It holds the model's lock, so other
sessions sharing the model never see the ablated model. Every other operation (mean, scale, set, patch)
is in neuro.instrument.intervention, through the same hooks.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from neuro.code.corpus import Snippet
from neuro.instrument.intervention import Intervention, intervened, neuron_pairs
from neuro.instrument.losses import model_sample_losses
from neuro.instrument.tokens import collate, encode, length_batches
from neuro.model.loading import LoadedModel
from neuro.model.plan import batch_plan
from neuro.progress import Progress

NeuronSet = Mapping[int, Sequence[int] | np.ndarray]  # layer -> neuron indices (a list or an int array)


def as_layer_map(neurons: NeuronSet | Iterable[tuple[int, int]]) -> dict[int, np.ndarray]:
    """Normalise {layer: indices} or [(layer, neuron), ...] to {layer: sorted unique int array}."""
    if isinstance(neurons, Mapping):
        pairs = [(int(layer), int(n)) for layer, idx in neurons.items() for n in np.asarray(idx).ravel()]
    else:
        pairs = [(int(layer), int(n)) for layer, n in neurons]
    out: dict[int, list[int]] = {}
    for layer, n in pairs:
        out.setdefault(layer, []).append(n)
    return {layer: np.unique(np.array(idx, dtype=np.int64)) for layer, idx in sorted(out.items())}


def count(neurons: NeuronSet) -> int:
    return int(sum(len(v) for v in as_layer_map(neurons).values()))


@contextmanager
def ablated(loaded: LoadedModel, neurons: NeuronSet | Iterable[tuple[int, int]]) -> Iterator[None]:
    """Zero the given neurons (inputs of the FFN output projection) in every forward pass inside: the "zero"
    `Intervention` (neuro.instrument.intervention), the one path every intervention takes."""
    with intervened(loaded, Intervention(neuron_pairs(neurons), "zero")):
        yield


def random_like(neurons: NeuronSet, width: int, seed: int = 0,
                exclude: NeuronSet | None = None) -> dict[int, np.ndarray]:
    """A random control: the same number of neurons in each layer, avoiding `exclude` (`uniform_like`, seeded)."""
    return uniform_like(neurons, width, np.random.default_rng(seed), exclude)


def program_loss_pass(loaded: LoadedModel, snippets: Sequence[Snippet], *, max_length: int = 512,
                      batch_tokens: int | None = None, max_batch: int = 32) -> Callable[[], np.ndarray]:
    """A pass giving each program's mean next-token cross-entropy (in `snippets` order), the programs encoded
    and batched once so that many passes (one per ablated set) cost only their forwards; batches of
    `batch_tokens` padded tokens (default: the memory plan's, neuro.model.plan)."""
    loaded.require_weights()
    encoded = [encode(loaded, s.code, max_length) for s in snippets]
    batch_tokens = batch_tokens or batch_plan(loaded, "forward", max_length).batch_tokens or max_length
    batches = length_batches([len(e.ids) for e in encoded], batch_tokens, max_batch)

    def run() -> np.ndarray:
        out: np.ndarray = np.empty(len(encoded), dtype=np.float64)
        with loaded.lock, torch.inference_mode():
            for batch in batches:
                ids, mask = collate([encoded[i] for i in batch], loaded.pad_id, loaded.device)
                out[batch] = model_sample_losses(loaded, ids, mask).float().cpu().numpy()
        return out
    return run


def program_losses(loaded: LoadedModel, snippets: Sequence[Snippet], **kwargs) -> np.ndarray:
    """Each program's mean next-token cross-entropy (one pass; see `program_loss_pass`)."""
    return program_loss_pass(loaded, snippets, **kwargs)()


def language_losses(loaded: LoadedModel, snippets: Sequence[Snippet], *, max_length: int = 512,
                    batch_tokens: int | None = None, max_batch: int = 32) -> dict[str, float]:
    """Mean next-token cross-entropy per language (mean over programs of each program's mean); batches of
    `batch_tokens` padded tokens (default: the memory plan's, neuro.model.plan)."""
    losses = program_losses(loaded, snippets, max_length=max_length, batch_tokens=batch_tokens, max_batch=max_batch)
    totals: dict[str, list[float]] = {}
    for snippet, loss in zip(snippets, losses.tolist()):
        totals.setdefault(snippet.lang, []).append(loss)
    return {lang: float(np.mean(v)) for lang, v in totals.items()}


# --------------------------------------------------------------------------- controls
DECILES = 10
CONTROLS = ("selected", "matched", "uniform", "top_mean")


def score_deciles(scores: np.ndarray) -> np.ndarray:
    """Decile (0: lowest tenth .. 9: highest) of each of one layer's neurons by its score, by rank (ties by
    position), so every decile holds a tenth of the layer whatever the scores' distribution."""
    scores = np.asarray(scores)
    rank: np.ndarray = np.empty(len(scores), dtype=np.int64)
    rank[np.argsort(scores, kind="stable")] = np.arange(len(scores))
    return rank * DECILES // max(1, len(scores))


def matched_like(neurons: NeuronSet, scores: np.ndarray, rng: np.random.Generator,
                 exclude: NeuronSet | None = None) -> dict[int, np.ndarray]:
    """A control matched on importance: for each neuron of `neurons` one other neuron of the same layer and
    the same score decile within that layer (`scores`: (layers, width), the score the group was selected
    by), avoiding `exclude` and repeats. Where a decile has too few neurons left (a tiny model), the
    rest come from the nearest deciles."""
    scores = np.asarray(scores)
    width = scores.shape[1]
    banned = as_layer_map(exclude or {})
    out: dict[int, np.ndarray] = {}
    for layer, idx in as_layer_map(neurons).items():
        decile = score_deciles(scores[layer])
        free = np.ones(width, dtype=bool)
        free[banned.get(layer, np.array([], dtype=np.int64))] = False
        free[idx] = False
        chosen: list[int] = []
        wanted = np.bincount(decile[idx], minlength=DECILES)
        for q in np.flatnonzero(wanted):
            need = int(wanted[q])
            for near in sorted(range(DECILES), key=lambda d: (abs(d - q), d)):  # q itself first
                pool = np.flatnonzero(free & (decile == near))
                take = rng.choice(pool, size=min(need, len(pool)), replace=False) if len(pool) else pool
                free[take] = False
                chosen.extend(int(t) for t in take)
                need -= len(take)
                if not need:
                    break
        out[layer] = np.sort(np.array(chosen, dtype=np.int64))
    return out


def uniform_like(neurons: NeuronSet, width: int, rng: np.random.Generator,
                 exclude: NeuronSet | None = None) -> dict[int, np.ndarray]:
    """A uniform control: the same number of neurons in each layer, drawn from the whole layer minus `exclude`."""
    banned = as_layer_map(exclude or {})
    out: dict[int, np.ndarray] = {}
    for layer, idx in as_layer_map(neurons).items():
        pool = np.setdiff1d(np.arange(width), banned.get(layer, np.array([], dtype=np.int64)))
        out[layer] = np.sort(rng.choice(pool, size=min(len(idx), len(pool)), replace=False))
    return out


def selection_scores(selection) -> dict[str, np.ndarray]:
    """The score each group of a neuron selection (neuro.analysis.selectivity.NeuronSelection) was chosen by,
    as (layers, width) arrays: a language's own (normalised) score column, and for "universal" the min
    over languages (the frame's `min_<value>`)."""
    frame, shape = selection.frame, (selection.n_layers, selection.n_neurons)
    value = selection.value_name
    out = {lang: frame[f"{value}_{lang}"].to_numpy(dtype=np.float64).reshape(shape) for lang in selection.languages}
    out["universal"] = frame[f"min_{value}"].to_numpy(dtype=np.float64).reshape(shape)
    return out


def top_mean_mask(selection, mean: np.ndarray | None = None) -> np.ndarray:
    """Boolean per neuron (flat over layer x neuron): the universal set's importance-matched control (issue 22,
    1b). In each layer as many neurons as the universal set has there, those with the highest mean score over
    languages (`mean`, flat; default: the selection's own table) among the neurons that are neither universal
    nor specific (ties by position)."""
    if mean is None:
        mean = selection.frame[selection.value_columns].to_numpy(dtype=np.float64).mean(axis=1)
    universal = selection._cls_mask("universal")
    eligible = selection._cls_mask("other")
    layer = np.arange(selection.total) // selection.n_neurons
    out = np.zeros(selection.total, dtype=bool)
    for lay, want in zip(*np.unique(layer[universal], return_counts=True)):
        rows = np.flatnonzero((layer == lay) & eligible)
        out[rows[np.argsort(-mean[rows], kind="stable")[: int(want)]]] = True
    return out


def top_mean_control(selection, mean: np.ndarray | None = None) -> dict[int, np.ndarray]:
    """`top_mean_mask` as {layer: sorted neuron indices}."""
    layer, neuron = np.divmod(np.flatnonzero(top_mean_mask(selection, mean)), selection.n_neurons)
    return {int(lay): np.sort(neuron[layer == lay]).astype(np.int64) for lay in np.unique(layer)}


@dataclass(frozen=True)
class Condition:
    """One ablated set: a group's selected neurons, one of its control draws, or the universal set's
    top-mean control."""

    group: str
    control: str  # one of CONTROLS
    draw: int
    neurons: dict[int, np.ndarray]

    def pairs(self) -> list[tuple[int, int]]:
        return [(layer, int(n)) for layer, idx in as_layer_map(self.neurons).items() for n in idx]


def plan_ablation(groups: Mapping[str, NeuronSet], width: int, *, scores: Mapping[str, np.ndarray] | None = None,
                  draws: int = 100, uniform_draws: int = 20, seed: int = 0,
                  top_mean: NeuronSet | None = None) -> list[Condition]:
    """Every set to ablate, in order: per group its selected neurons, `draws` controls matched on importance
    (`scores[group]`: same layer and score decile) and `uniform_draws` uniform ones (same layer), each
    avoiding every group's neurons; then the universal group's `top_mean` control when given. Draw d of a
    group is the same whatever the number of draws (one generator per group and kind of control)."""
    if draws < 0 or uniform_draws < 0 or draws + uniform_draws < 1:
        raise ValueError(f"draws must be >= 0 and at least one control drawn, got draws={draws}, "
                         f"uniform_draws={uniform_draws}")
    exclude: dict[int, list[int]] = {}
    for neurons in groups.values():
        for layer, idx in as_layer_map(neurons).items():
            exclude.setdefault(layer, []).extend(idx.tolist())
    conditions = []
    for i, (name, group) in enumerate(groups.items()):
        neurons = as_layer_map(group)
        conditions.append(Condition(name, "selected", 0, neurons))
        if draws:
            if scores is None or name not in scores:
                raise ValueError(f"matched controls need the score group {name!r} was selected by")
            rng = np.random.default_rng([seed, i, 1])
            conditions += [Condition(name, "matched", d, matched_like(neurons, scores[name], rng, exclude))
                           for d in range(draws)]
        rng = np.random.default_rng([seed, i, 2])
        conditions += [Condition(name, "uniform", d, uniform_like(neurons, width, rng, exclude))
                       for d in range(uniform_draws)]
    if top_mean is not None and count(top_mean):
        conditions.append(Condition("universal", "top_mean", 0, as_layer_map(top_mean)))
    return conditions


def units_of(snippets: Sequence[Snippet]) -> tuple[list[str], str]:
    """The resampling unit of each program and its name: the task where some task has several programs (the
    same function in several languages, resampled together), else the program itself."""
    tasks = [s.task or s.id for s in snippets]
    if len(set(tasks)) < len(tasks):
        return tasks, "task"
    return [s.id for s in snippets], "program"


@dataclass(frozen=True, eq=False)
class AblationResult:
    """Each evaluation program's mean loss, unablated (`base_losses`) and with each condition's neurons zeroed
    (`losses`, conditions x programs): the measurement every effect, interval and p-value is computed from
    (neuro.analysis.ablation_effects).

    programs: id, lang, unit (the bootstrap unit: task or program) per evaluation program; conditions:
    group, control (selected / matched / uniform / top_mean), draw; neurons: condition (row of
    `conditions`), layer, neuron of every ablated set; selected_by: the score that chose the groups
    ("pls", "attribution", "probability")."""

    programs: pd.DataFrame
    unit: str
    base_losses: np.ndarray
    conditions: pd.DataFrame
    losses: np.ndarray
    neurons: pd.DataFrame
    selected_by: str = "pls"
    seed: int = 0

    @classmethod
    def build(cls, snippets: Sequence[Snippet], base: np.ndarray, conditions: Sequence[Condition],
              losses: np.ndarray, selected_by: str = "pls", seed: int = 0) -> AblationResult:
        units, unit = units_of(snippets)
        programs = pd.DataFrame({"id": [s.id for s in snippets], "lang": [s.lang for s in snippets], "unit": units})
        table = pd.DataFrame({"group": [c.group for c in conditions], "control": [c.control for c in conditions],
                              "draw": np.array([c.draw for c in conditions], dtype=np.int64)})
        rows = [(i, layer, n) for i, c in enumerate(conditions) for layer, n in c.pairs()]
        neurons = pd.DataFrame(np.array(rows, dtype=np.int64).reshape(-1, 3), columns=["condition", "layer", "neuron"])
        return cls(programs, unit, np.asarray(base, dtype=np.float64), table,
                   np.asarray(losses, dtype=np.float64).reshape(len(conditions), len(snippets)), neurons,
                   selected_by, seed)

    @property
    def languages(self) -> list[str]:
        return list(dict.fromkeys(self.programs["lang"]))

    @property
    def groups(self) -> list[str]:
        return list(self.conditions.loc[self.conditions["control"] == "selected", "group"])

    @property
    def base(self) -> dict[str, float]:
        """Mean loss per language, nothing ablated."""
        return self._by_language(self.base_losses[None])[0]

    def rows(self, control: str, group: str | None = None) -> np.ndarray:
        """Indices of the conditions of one kind of control (of one group), in draw order."""
        mask = self.conditions["control"] == control
        if group is not None:
            mask &= self.conditions["group"] == group
        return np.flatnonzero(mask.to_numpy())

    def draws(self, control: str) -> int:
        """Draws of one kind of control per group (0 when none were drawn)."""
        rows: np.ndarray | list[int] = self.rows(control, self.groups[0]) if self.groups else []
        return len(rows)

    def changes(self, row: int) -> np.ndarray:
        """Each program's loss change when condition `row` is ablated."""
        return self.losses[row] - self.base_losses

    def neurons_of(self, row: int) -> dict[int, np.ndarray]:
        part = self.neurons[self.neurons["condition"] == row]
        return as_layer_map(zip(part["layer"], part["neuron"]))

    @property
    def sizes(self) -> dict[str, int]:
        counts = self.neurons["condition"].value_counts()
        return {g: int(counts.get(r, 0)) for g, r in zip(self.groups, self.rows("selected"))}

    def _by_language(self, values: np.ndarray) -> list[dict[str, float]]:
        langs = self.programs["lang"].to_numpy()
        return [{lang: float(v[langs == lang].mean()) for lang in self.languages} for v in values]

    def _frame(self, rows: np.ndarray) -> pd.DataFrame:
        by_lang = self._by_language(self.losses[rows] - self.base_losses)
        names = list(self.conditions["group"].iloc[rows])
        return pd.DataFrame(by_lang, index=names, columns=self.languages)

    @property
    def delta(self) -> pd.DataFrame:
        """Mean loss change per evaluated language (columns) when each group's selected neurons (rows) are zeroed."""
        return self._frame(self.rows("selected"))

    def control_draws(self, control: str) -> list[pd.DataFrame]:
        """One frame like `delta` per draw of one kind of control."""
        return [self._frame(self.rows(control)[self.conditions["draw"].to_numpy()[self.rows(control)] == d])
                for d in range(self.draws(control))]

    def delta_control(self, control: str) -> pd.DataFrame:
        """Mean over draws of one kind of control (like `delta`)."""
        frames = self.control_draws(control)
        return sum(frames) / len(frames) if frames else self.delta * np.nan


def ablation_losses(loaded: LoadedModel, run: Callable[[], np.ndarray], neurons: NeuronSet) -> np.ndarray:
    """Each program's loss (a `program_loss_pass`) with `neurons` zeroed."""
    with ablated(loaded, neurons):
        return run()


def ablation_matrix(loaded: LoadedModel, snippets: Sequence[Snippet], groups: Mapping[str, NeuronSet], *,
                    scores: Mapping[str, np.ndarray] | None = None, draws: int = 100, uniform_draws: int = 20,
                    seed: int = 0, top_mean: NeuronSet | None = None, selected_by: str = "pls",
                    max_length: int = 512, progress: Progress | None = None) -> AblationResult:
    """Each evaluation program's loss with each group's neurons zeroed, beside controls matched on importance
    and uniform ones (`plan_ablation`): one forward pass over `snippets` per set, plus one unablated.

    `snippets` should be programs the groups were NOT selected on (see neuro.code.split)."""
    conditions = plan_ablation(groups, loaded.n_neurons, scores=scores, draws=draws, uniform_draws=uniform_draws,
                               seed=seed, top_mean=top_mean)
    run = program_loss_pass(loaded, snippets, max_length=max_length)
    total = 1 + len(conditions)
    base = run()
    if progress:
        progress(1, total)
    losses = []
    for i, condition in enumerate(conditions):
        losses.append(ablation_losses(loaded, run, condition.neurons))
        if progress:
            progress(i + 2, total)
    return AblationResult.build(snippets, base, conditions, np.array(losses), selected_by, seed)


def neuron_effects(loaded: LoadedModel, snippets: Sequence[Snippet], neurons: Sequence[tuple[int, int]], *,
                   max_length: int = 512, progress: Progress | None = None) -> pd.DataFrame:
    """Measured change of each language's mean loss when each (layer, neuron) alone is zeroed: one row per
    neuron, one column per language (the ground truth an attribution score estimates)."""
    base = language_losses(loaded, snippets, max_length=max_length)
    rows = []
    for i, (layer, neuron) in enumerate(neurons):
        with ablated(loaded, {int(layer): [int(neuron)]}):
            losses = language_losses(loaded, snippets, max_length=max_length)
        rows.append({"layer": int(layer), "neuron": int(neuron), **{k: losses[k] - base[k] for k in base}})
        if progress:
            progress(i + 1, len(neurons))
    return pd.DataFrame(rows, columns=["layer", "neuron", *base])
