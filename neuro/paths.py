"""Where the project's shipped assets and its cache live."""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent

REPO_DIR = PACKAGE_DIR.parent

ASSETS_DIR = PACKAGE_DIR / "assets"

DEMO_MODEL_DIR = ASSETS_DIR / "demo_model"

DEMO_CORPUS_FILE = ASSETS_DIR / "demo_corpus.jsonl"


def cache_dir() -> Path:
    """The results cache: `$NEURO_CACHE` if set, else `cache/` in the repository."""
    return Path(os.environ.get("NEURO_CACHE", REPO_DIR / "cache"))


def demo_model_available() -> bool:
    return (DEMO_MODEL_DIR / "config.json").is_file()


def demo_corpus_available() -> bool:
    return DEMO_CORPUS_FILE.is_file()
