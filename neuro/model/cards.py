"""Browse cached results without the weights.

Whenever an analysis saves a result, the model's card (config, tokenizer and identity, a few MB at most)
is kept beside it under `cache/models/<identity>/`. Copy `cache/` from a GPU box to a laptop and open
that card folder as the model: it loads on PyTorch's meta device (shapes, no weights, no memory), its
identity matches the cached results, so every page and CLI command shows them; anything that would run
the model stops with `WeightsNotLoaded` and says so.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import torch

from neuro.model.adapters import adapter_for
from neuro.model.errors import BROWSE_ONLY_MESSAGE, ModelLoadError, WeightsNotLoaded
from neuro.model.loading import LoadedModel, prepare
from neuro.paths import cache_dir

__all__ = ["WeightsNotLoaded", "ModelCard", "list_cards", "load_browse_only", "remember_model"]

log = logging.getLogger(__name__)

CARDS_DIR = "models"

CARD_FILE = "neuro-card.json"

@dataclass(frozen=True)
class ModelCard:
    folder: Path
    identity: str
    fingerprint: str
    source: str
    model_type: str
    n_layers: int
    neurons_per_layer: int
    parameters: int
    saved: float

    @property
    def label(self) -> str:
        day = time.strftime("%Y-%m-%d", time.localtime(self.saved))
        return f"{self.source} ({self.model_type}, {self.n_layers} layers, cached {day})"

def cards_root(root: str | Path | None = None) -> Path:
    return Path(root if root is not None else cache_dir()) / CARDS_DIR

def is_card_folder(folder: Path) -> bool:
    return (folder / CARD_FILE).is_file()

def remember_model(loaded: LoadedModel, root: str | Path | None = None) -> Path | None:
    """Keep the model's card in the cache (once per identity); never fails the analysis that called it."""
    if not loaded.weights_loaded:
        return None  # a browse-only model came from a card
    folder = cards_root(root) / loaded.identity
    if is_card_folder(folder):
        return folder
    tmp = folder.parent / f".tmp-{uuid.uuid4().hex[:8]}"
    try:
        tmp.mkdir(parents=True)
        loaded.config.save_pretrained(tmp)
        if loaded.tokenizer is not None and hasattr(loaded.tokenizer, "save_pretrained"):
            loaded.tokenizer.save_pretrained(tmp)
        card = {"identity": loaded.identity, "fingerprint": loaded.fingerprint, "source": loaded.source,
                "model_type": loaded.config.model_type, "n_layers": loaded.n_layers,
                "neurons_per_layer": loaded.n_neurons,
                "parameters": sum(p.numel() for p in loaded.model.parameters()), "saved": time.time()}
        (tmp / CARD_FILE).write_text(json.dumps(card, indent=1))
        tmp.rename(folder)
        return folder
    except OSError as err:  # another process won the race, or the disk is read-only: results still count
        log.warning("could not keep the model card for %s: %s", loaded.identity, err)
        return folder if is_card_folder(folder) else None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

def read_card(folder: Path) -> ModelCard:
    data = json.loads((folder / CARD_FILE).read_text())
    return ModelCard(folder=folder, **{k: data[k] for k in ModelCard.__dataclass_fields__ if k != "folder"})

def list_cards(root: str | Path | None = None) -> list[ModelCard]:
    """Every model with cached results, newest first; unreadable cards are skipped."""
    cards = []
    base = cards_root(root)
    for folder in sorted(base.iterdir()) if base.is_dir() else []:
        if folder.name.startswith(".") or not is_card_folder(folder):
            continue
        try:
            cards.append(read_card(folder))
        except (OSError, ValueError, KeyError, TypeError) as err:
            log.warning("skipping the model card in %s: %s", folder, err)
    return sorted(cards, key=lambda c: -c.saved)

def _refuse(*_args, **_kwargs):
    raise WeightsNotLoaded(BROWSE_ONLY_MESSAGE)

def load_browse_only(folder: str | Path, trust_remote_code: bool = False) -> LoadedModel:
    """The model of a card folder on the meta device: shapes and tokenizer, no weights."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    folder = Path(folder)
    try:
        card = read_card(folder)
        config = AutoConfig.from_pretrained(folder, trust_remote_code=trust_remote_code)
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ModelLoadError(f"cannot read the model card in {folder}: {err}") from None
    adapter_for(config)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as err:
        log.warning("no tokenizer in %s (%s): token views are unavailable", folder, err)
        tokenizer = None
    model.register_forward_pre_hook(_refuse)
    model.get_input_embeddings().register_forward_pre_hook(_refuse)
    loaded = prepare(model, tokenizer, source=card.source, fingerprint=card.fingerprint)
    if loaded.identity != card.identity:
        raise ModelLoadError(f"the card in {folder} is inconsistent: {loaded.identity} != {card.identity}")
    return loaded
