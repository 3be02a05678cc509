"""Browse cached results without the weights.

Whenever an analysis saves a result, the model's card (config, tokenizer and identity, a few MB at most)
is kept beside it under `cache/models/<identity>/`. Copy `cache/` from a GPU box to a laptop and open
that card folder as the model: it loads on PyTorch's meta device (shapes, no weights, no memory), its
identity matches the cached results, so every page and CLI command shows them; anything that would run
the model stops with `WeightsNotLoaded` and says so.

This module keeps the cache of cards; the card format and opening one are neuro.model.loading's
(`load_model` opens a card folder browse-only), so loading never imports this module.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
import uuid
from pathlib import Path

from neuro.model.loading import CARD_FILE, LoadedModel, ModelCard, is_card_folder, read_card
from neuro.paths import cache_dir

log = logging.getLogger(__name__)

CARDS_DIR = "models"


def cards_root(root: str | Path | None = None) -> Path:
    return Path(root if root is not None else cache_dir()) / CARDS_DIR


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
