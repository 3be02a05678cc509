"""A model's cache identity and shape read from its files, without building it.

Reading cached results needs only what `LoadedModel` would key them by (identity, layers, neurons per
layer), and all of it is in config.json, the weight files' digests or a model card. Getting it this way
skips importing transformers' model code and loading the weights (about 4 s for the 20 MB demo model
on 2 cores), so a page that only reads the cache can draw before the model is ready.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from types import SimpleNamespace

from neuro.model.adapters import ADAPTERS
from neuro.model.errors import ModelLoadError
from neuro.model.identity import model_identity, weights_fingerprint
from neuro.model.loading import is_browse_only, read_card, resolve_source


@dataclass(frozen=True)
class ModelRef:
    """What a model's cached results are found by: the same `source`, `identity`, `n_layers` and
    `n_neurons` as the `LoadedModel` of the same folder, with no weights to run."""

    source: str
    model_type: str
    fingerprint: str
    n_layers: int
    n_neurons: int

    @property
    def identity(self) -> str:
        return model_identity(self.model_type, self.fingerprint)


def _layer_count(config: dict) -> int | None:
    for name in ("num_hidden_layers", "n_layer"):
        if isinstance(config.get(name), int):
            return config[name]
    return None


def model_ref(source: str | os.PathLike) -> ModelRef | None:
    """The reference of a model folder, hub snapshot or card folder; None where the files do not say
    enough (an architecture without an adapter, a config that leaves its sizes to transformers'
    defaults), so the caller loads the model instead. Raises ModelLoadError where loading would too."""
    folder = resolve_source(source)
    if is_browse_only(folder):
        try:
            card = read_card(folder)
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise ModelLoadError(f"cannot read the model card in {folder}: {err}") from None
        return ModelRef(card.source, card.model_type, card.fingerprint, card.n_layers, card.neurons_per_layer)
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError) as err:
        raise ModelLoadError(f"cannot read the config of {source}: {err}") from None
    adapter = ADAPTERS.get(config.get("model_type", "")) if isinstance(config, dict) else None
    n_layers = _layer_count(config) if adapter else None
    if adapter is None or n_layers is None:
        return None
    try:
        n_neurons = adapter.intermediate_size(SimpleNamespace(**config))
    except (AttributeError, TypeError, ValueError):
        return None
    return ModelRef(str(source), config["model_type"], weights_fingerprint(folder), n_layers, int(n_neurons))
