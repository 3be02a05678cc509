"""Browse-only: results computed with the weights are shown later from the cached model card alone."""

import json
import shutil

import numpy as np
import pytest
import torch
from conftest import SNIPPETS
from streamlit.testing.v1 import AppTest

from neuro.analysis.selectivity import select_neurons
from neuro.cli import main
from neuro.code.corpus import save_jsonl
from neuro.code.split import split_corpus
from neuro.instrument.statistics import capture_statistics, trace_tokens
from neuro.model.cards import list_cards
from neuro.model.errors import WeightsNotLoaded
from neuro.model.loading import load_model
from neuro.paths import REPO_DIR
from neuro.results.statistics import STATS
from neuro.results.store import Store

SELECTION = split_corpus(SNIPPETS).selection


@pytest.fixture(scope="module")
def laptop(tmp_path_factory, tiny_env):
    """A "GPU box" computes statistics into its cache; the "laptop" gets a copy of the cache only."""
    box = tiny_env("box")
    with_weights = load_model(box / "model")
    # the defaults of app and CLI: statistics of the split's selection side
    stats, hit = STATS.fetch(with_weights, SELECTION, cache=Store(box / "cache"))
    assert not hit
    home = tmp_path_factory.mktemp("laptop")
    shutil.copytree(box / "cache", home / "cache")
    save_jsonl(SNIPPETS, home / "corpus.jsonl")
    shutil.rmtree(box)  # the weights are gone
    return home, with_weights.identity, stats


def laptop_app(monkeypatch, home, model) -> AppTest:
    """The app on the laptop's copied cache and corpus; `model`: a card folder, or None for the default."""
    if model is None:
        monkeypatch.delenv("NEURO_MODEL", raising=False)
    else:
        monkeypatch.setenv("NEURO_MODEL", str(model))
    monkeypatch.setenv("NEURO_CORPUS", str(home / "corpus.jsonl"))
    monkeypatch.setenv("NEURO_CACHE", str(home / "cache"))
    return AppTest.from_file(str(REPO_DIR / "app.py"), default_timeout=120)


def test_the_card_is_kept_and_listed(laptop):
    home, identity, _ = laptop
    cards = list_cards(home / "cache")
    assert [c.identity for c in cards] == [identity]
    card = cards[0]
    assert (card.n_layers, card.neurons_per_layer, card.model_type) == (3, 48, "llama")
    assert card.source.endswith("model") and card.label.startswith(f"{card.source} (llama, 3 layers, cached 20")
    assert not any(p.suffix == ".safetensors" for p in card.folder.iterdir())


def test_browse_only_model_reads_the_cached_results(laptop):
    home, identity, stats = laptop
    meta = load_model(list_cards(home / "cache")[0].folder)
    assert not meta.weights_loaded and meta.identity == identity
    assert all(p.is_meta for p in meta.model.parameters())  # no memory for weights
    cached = STATS.get(meta, SELECTION, cache=Store(home / "cache"), compute=False)
    assert cached is not None
    np.testing.assert_allclose(cached.pls_sum, stats.pls_sum)
    assert select_neurons(cached, "pls").total == 3 * 48


def test_browse_only_model_refuses_to_run(laptop):
    home, _, _ = laptop
    meta = load_model(list_cards(home / "cache")[0].folder)
    with pytest.raises(WeightsNotLoaded, match="browse-only"):
        trace_tokens(meta, "def f(x):\n    return x\n", layers=[0])
    with pytest.raises(WeightsNotLoaded):
        capture_statistics(meta, SNIPPETS[:2])
    with pytest.raises(WeightsNotLoaded):
        meta.model(input_ids=torch.tensor([[1, 2, 3]]))


def test_cli_lists_cards_and_browses(laptop, capsys):
    home, identity, _ = laptop
    cache = str(home / "cache")
    assert main(["models", "--cache", cache, "--json"]) == 0
    folder = json.loads(capsys.readouterr().out)["models"][0]["folder"]
    corpus = str(home / "corpus.jsonl")
    assert main(["neurons", "--model", folder, "--corpus", corpus, "--cache", cache, "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["model"] == identity and (summary["n_layers"], summary["n_neurons"]) == (3, 48)
    # a corpus it has no results for: a clear refusal, not a meta-tensor traceback
    save_jsonl(SNIPPETS[:3], home / "other.jsonl")
    assert main(["capture", "--model", folder, "--corpus", str(home / "other.jsonl"), "--cache", cache,
                 "--json"]) == 2
    assert "browse-only" in json.loads(capsys.readouterr().out)["error"]


def test_app_browses_the_cache_without_weights(laptop, monkeypatch):
    home, _, _ = laptop
    at = laptop_app(monkeypatch, home, model=list_cards(home / "cache")[0].folder)
    at.switch_page("views/neurons.py")
    at.run()
    assert not at.exception, at.exception
    assert len(at.get("vega_lite_chart")) == 1  # the layer map, from the cache
    at.session_state["tab"] = "Token inspector"
    at.run()
    assert not at.exception, at.exception
    assert any("browse-only" in i.value for i in at.info)
    at.switch_page("views/layers.py")
    at.run()
    assert not at.exception, at.exception


def test_training_is_refused_without_weights(laptop, monkeypatch):
    home, _, _ = laptop
    at = laptop_app(monkeypatch, home, model=list_cards(home / "cache")[0].folder)
    at.switch_page("views/finetune.py")
    at.run()
    assert not at.exception, at.exception
    at.button(key="ft_start").click().run()
    assert not at.exception, at.exception
    assert any("without weights" in e.value for e in at.error)
    assert not (home / "cache" / "jobs").exists() or not any((home / "cache" / "jobs").iterdir())


def test_sidebar_lists_cached_models(laptop, monkeypatch):
    home, identity, _ = laptop
    at = laptop_app(monkeypatch, home, model=None).run()
    at.radio(key="_w_model_kind").set_value("Cached results only").run()
    assert not at.exception, at.exception
    assert at.selectbox(key="_w_model_card").value.endswith(identity)
    assert {m.label: m.value for m in at.metric}["Layers"] == "3"
    assert any("Cached results only" in i.value for i in at.info)
