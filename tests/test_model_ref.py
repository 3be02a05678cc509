"""A model's reference read from its files (neuro.model.reference) matches the model loaded from them,
for every architecture the adapters know, and needs no transformers model code."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ARCHITECTURES, save_tiny

from neuro.model.cards import remember_model
from neuro.model.errors import ModelLoadError
from neuro.model.loading import load_model
from neuro.model.reference import model_ref
from neuro.paths import DEMO_MODEL_DIR, demo_model_available

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("kind", ARCHITECTURES)
def test_the_reference_is_what_loading_gives(kind, tmp_path):
    save_tiny(tmp_path, kind)
    ref, loaded = model_ref(tmp_path), load_model(tmp_path, device="cpu")
    assert ref is not None
    assert (ref.source, ref.identity, ref.n_layers, ref.n_neurons) == (
        loaded.source, loaded.identity, loaded.n_layers, loaded.n_neurons)


def test_the_reference_follows_the_weights(tmp_path):
    save_tiny(tmp_path / "a")
    save_tiny(tmp_path / "b", seed=1)
    assert model_ref(tmp_path / "a").identity != model_ref(tmp_path / "b").identity


def test_a_card_folder_gives_the_cards_reference(tmp_path):
    save_tiny(tmp_path / "model", "qwen2")
    loaded = load_model(tmp_path / "model", device="cpu")
    card = remember_model(loaded, tmp_path / "cache")
    ref = model_ref(card)
    assert (ref.source, ref.identity, ref.n_layers, ref.n_neurons) == (
        loaded.source, loaded.identity, loaded.n_layers, loaded.n_neurons)


def test_a_config_that_does_not_say_its_sizes_gives_none(tmp_path):
    save_tiny(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    del config["intermediate_size"]  # transformers would fill in its default: only loading knows
    (tmp_path / "config.json").write_text(json.dumps(config))
    assert model_ref(tmp_path) is None
    config["model_type"] = "phi"
    (tmp_path / "config.json").write_text(json.dumps(config))
    assert model_ref(tmp_path) is None


def test_bad_sources_fail_as_loading_does(tmp_path):
    with pytest.raises(ModelLoadError, match="does not exist"):
        model_ref(tmp_path / "nowhere")
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ModelLoadError, match="cannot read the config"):
        model_ref(tmp_path)


@pytest.mark.skipif(not demo_model_available(), reason="the demo model is not in this checkout")
def test_the_demo_reference_imports_no_model_code():
    code = ("import sys\nfrom neuro.model.reference import model_ref\n"
            f"ref = model_ref({str(DEMO_MODEL_DIR)!r})\n"
            "print(ref.identity, ref.n_layers, ref.n_neurons)\n"
            "print(sorted(m for m in sys.modules if m.startswith('transformers')))\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    identity, modules = out.stdout.splitlines()
    loaded = load_model(DEMO_MODEL_DIR, device="cpu")
    assert identity == f"{loaded.identity} {loaded.n_layers} {loaded.n_neurons}"
    assert modules == "[]"


@pytest.mark.skipif(not demo_model_available(), reason="the demo model is not in this checkout")
def test_the_demo_reference_finds_what_the_model_finds():
    """The Overview draws its findings from the reference before the model is loaded: they must be the
    findings the loaded model reads from the same (shipped) results."""
    from neuro.code.corpus import load_corpus
    from neuro.results.findings import gather_findings

    corpus = load_corpus(None)
    by_ref = gather_findings(model_ref(DEMO_MODEL_DIR), corpus)
    assert by_ref == gather_findings(load_model(DEMO_MODEL_DIR, device="cpu"), corpus)
    found = {f.key for f in by_ref if f.computed}  # the shipped results (no clone evaluation) were found
    assert {"specific", "universal", "placement", "family", "concept"} <= found, [f.text for f in by_ref]
    with pytest.raises(TypeError, match="needs the loaded model"):
        gather_findings(model_ref(DEMO_MODEL_DIR), corpus, compute=True)
