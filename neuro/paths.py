"""Where the project's shipped assets and its cache live."""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent

REPO_DIR = PACKAGE_DIR.parent

ASSETS_DIR = PACKAGE_DIR / "assets"

DEMO_MODEL_DIR = ASSETS_DIR / "demo_model"

DEMO_CORPUS_FILE = ASSETS_DIR / "demo_corpus.jsonl"

# results of the demo model on the demo corpus shipped with the repository (`python -m neuro precompute`
# rebuilds them): a read-only layer under the cache, so a first view on the embedded default opens at once
PRECOMPUTED_DIR = ASSETS_DIR / "precomputed"


def cache_dir() -> Path:
    """The results cache: `$NEURO_CACHE` if set, else `cache/` in the repository."""
    return Path(os.environ.get("NEURO_CACHE", REPO_DIR / "cache"))


def precomputed_dir() -> Path | None:
    """The shipped read-only results: `$NEURO_PRECOMPUTED` if set (empty or "none": none), else
    neuro/assets/precomputed."""
    value = os.environ.get("NEURO_PRECOMPUTED")
    if value is None:
        return PRECOMPUTED_DIR
    return None if value.strip().lower() in ("", "none") else Path(value)


def demo_model_available() -> bool:
    return (DEMO_MODEL_DIR / "config.json").is_file()


def demo_corpus_available() -> bool:
    return DEMO_CORPUS_FILE.is_file()
