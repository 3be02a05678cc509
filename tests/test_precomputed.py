"""The results shipped for the embedded default (neuro/assets/precomputed) stay honest: they are keyed as
the pages ask for them now, the pages' first views are served by them without computing, and their numbers
match a fresh computation of a cheap part. When one of these fails, the model, the corpus, a default
parameter or a recipe's version changed: rebuild them with `python -m neuro precompute`."""

import json

import numpy as np
import pytest
from conftest import SNIPPETS, tiny_model

from neuro.cli.commands.precompute import LEFT_OUT, REBUILD, first_views
from neuro.code.corpus import corpus_hash, load_corpus
from neuro.code.split import SplitParams, split_corpus
from neuro.paths import DEMO_MODEL_DIR, PRECOMPUTED_DIR, REPO_DIR
from neuro.results.recipe import Recipe
from neuro.results.statistics import CHANCE, STATS, statistics_with_units, without_units
from neuro.results.store import Store

STALE = f"the shipped results are stale or missing: run `{REBUILD}` (and commit neuro/assets/precomputed)"


def _shipped() -> set[str]:
    return {f"{m.parent.parent.name}/{m.parent.name}" for m in PRECOMPUTED_DIR.glob("*/*/manifest.json")}


@pytest.fixture(scope="module")
def demo():
    from neuro.model.loading import load_model

    return load_model(str(DEMO_MODEL_DIR)), load_corpus(None)


@pytest.fixture(scope="module")
def asked(demo, tmp_path_factory):
    """What the pages ask for at first view, from an empty cache over the shipped layer (never computed)."""
    loaded, corpus = demo
    return first_views(loaded, corpus, cache=Store(tmp_path_factory.mktemp("empty-cache"), shipped=PRECOMPUTED_DIR),
                       compute=False)


def test_the_shipped_entries_are_the_ones_the_pages_ask_for(demo, asked):
    loaded, corpus = demo
    index = json.loads((PRECOMPUTED_DIR / "index.json").read_text()) if (PRECOMPUTED_DIR / "index.json").is_file() \
        else {}
    assert index.get("model") == loaded.identity, f"another demo model than the shipped results' ({STALE})"
    assert index.get("corpus") == corpus_hash(corpus), f"another demo corpus than the shipped results' ({STALE})"
    missing = [f"{a.page}: {a.recipe.kind}/{a.key} {a.args}" for a in asked
               if a.result is None and a.recipe.kind not in LEFT_OUT]
    assert not missing, f"not shipped: {missing} ({STALE})"
    wanted = {f"{a.recipe.kind}/{a.key}" for a in asked if a.recipe.kind not in LEFT_OUT}
    assert _shipped() == wanted, f"shipped but asked for by no page: {_shipped() - wanted} ({STALE})"


def test_the_shipped_folder_is_small():
    total = sum(p.stat().st_size for p in PRECOMPUTED_DIR.rglob("*") if p.is_file())
    assert 0 < total <= 7_000_000, f"{total / 1e6:.1f} MB shipped"


def test_the_shipped_statistics_leave_out_the_per_program_arrays(asked):
    stats = next(a.result for a in asked if a.recipe is STATS)
    assert stats.units_omitted and not stats.has_units() and stats.unit_pls is None
    assert stats.pls_sum is not None and stats.top_ids is not None and stats.type_sum is not None


def test_the_shipped_numbers_match_a_fresh_computation(demo, asked):
    """Recomputed here: the pooled states of a few programs at the clone index's layer, and the statistics of
    one language's programs (each language's sums are over its own programs only)."""
    from neuro.instrument.states import pooled_states
    from neuro.instrument.statistics import capture_statistics
    from neuro.results.embeddings import LAYER_EMBEDDINGS

    loaded, corpus = demo
    clones = next(a for a in asked if a.recipe is LAYER_EMBEDDINGS)
    rows = [next(i for i, s in enumerate(corpus) if s.lang == lang) for lang in dict.fromkeys(s.lang for s in corpus)]
    layer = clones.args["layer"]
    fresh = pooled_states(loaded, [corpus[i] for i in rows], upto_layer=layer, max_length=512)[:, layer]
    np.testing.assert_allclose(fresh, clones.result[rows], rtol=1e-3, atol=1e-4, err_msg=STALE)

    selection = split_corpus(corpus, SplitParams()).selection
    shipped = next(a.result for a in asked if a.recipe is STATS)
    lang = shipped.languages[-1]
    li = shipped.languages.index(lang)
    mine = [i for i, s in enumerate(selection) if s.lang == lang]
    part = capture_statistics(loaded, selection, gradients=True, syntax=True, top_k=16, max_length=512,
                              units=False, indices=mine)
    assert part.languages == shipped.languages
    assert part.samples[li] == shipped.samples[li] == len(mine) and part.tokens[li] == shipped.tokens[li], STALE
    for name in ("act_abs_sum", "pls_sum", "attribution_sum", "active_count"):
        np.testing.assert_allclose(getattr(part, name)[li], getattr(shipped, name)[li], rtol=2e-3, atol=1e-5,
                                   err_msg=f"{name}: {STALE}")
    np.testing.assert_allclose(part.loss_sum[li], shipped.loss_sum[li], rtol=1e-4, err_msg=STALE)

    chance = next(a.result for a in asked if a.recipe is CHANCE)
    assert chance.units == len(selection) and len(chance.counts) == chance.permutations


def test_another_model_is_not_served_by_the_shipped_results(demo, tmp_path):
    """Keys hold the model's identity: a model other than the embedded one misses and computes as before."""
    _, corpus = demo
    other = tiny_model("llama")
    selection = split_corpus(corpus, SplitParams()).selection
    assert f"{STATS.kind}/{STATS.key(other, selection)}" not in _shipped()
    assert STATS.get(other, selection, cache=Store(tmp_path, shipped=PRECOMPUTED_DIR), compute=False) is None


def test_statistics_shipped_without_units_are_captured_again_for_a_chance_level(tmp_path):
    """A chance level for parameters that were not shipped captures the statistics again, with their
    per-program arrays, into the writable cache (the shipped folder is left as it was)."""
    loaded = tiny_model("llama")
    full = Store(tmp_path / "full", shipped=None)
    STATS.get(loaded, SNIPPETS, cache=full, max_length=64)
    key = STATS.key(loaded, SNIPPETS, max_length=64)
    shipped = tmp_path / "shipped"
    Store(shipped, shipped=None).save(STATS.kind, key, without_units(full.load(STATS.kind, key)))
    before = sorted((p, p.stat().st_mtime_ns) for p in shipped.rglob("*"))
    store = Store(tmp_path / "cache", shipped=shipped)
    trimmed = STATS.get(loaded, SNIPPETS, cache=store, compute=False, max_length=64)
    assert trimmed is not None and trimmed.units_omitted and not trimmed.has_units()
    with pytest.raises(ValueError, match="shipped"):
        trimmed.unit_score("pls", np.zeros(1, dtype=np.int64))
    level = CHANCE.get(loaded, SNIPPETS, cache=store, permutations=3, stats_args=dict(max_length=64))
    assert level.units == len(SNIPPETS) and len(level.counts) == 3
    again = STATS.get(loaded, SNIPPETS, cache=store, compute=False, max_length=64)
    assert again.has_units() and not again.units_omitted  # the writable cache now comes first
    assert statistics_with_units(loaded, SNIPPETS, cache=store, max_length=64).has_units()
    assert sorted((p, p.stat().st_mtime_ns) for p in shipped.rglob("*")) == before


def test_precompute_refuses_another_setup(capsys):
    from neuro.cli import main

    assert main(["precompute", "--limit", "5"]) == 2
    assert "embedded default only" in capsys.readouterr().err


PAGES = ["views/neurons.py", "views/layers.py", "views/embeddings.py", "views/clones.py"]


@pytest.mark.parametrize("page", PAGES)
def test_a_first_view_on_the_embedded_default_is_served_without_computing(page, asked, monkeypatch, tmp_path):
    """Each page on the embedded default, from an empty cache: every result it asks for comes from the
    shipped folder (a computation fails the test instead of running for minutes)."""
    from streamlit.testing.v1 import AppTest

    for name in ("NEURO_MODEL", "NEURO_CORPUS", "NEURO_PRECOMPUTED"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NEURO_CACHE", str(tmp_path / "cache"))
    resolve, load_shipped, served = Recipe._resolve, Store.load_shipped, set()

    def never_compute(self, loaded, snippets, cache, compute, save, progress, args):
        found = resolve(self, loaded, snippets, cache, False, save, progress, args)
        if found is None and compute:  # a left-out kind stops the page here, the rest must have been served
            raise AssertionError(f"{page} computes {self.kind} at first view"
                                 + (": left out" if self.kind in LEFT_OUT else f": {STALE}"))
        return found

    def recorded(self, kind, key):
        entry = load_shipped(self, kind, key)
        if entry is not None:
            served.add(f"{kind}/{key}")
        return entry

    monkeypatch.setattr(Recipe, "_resolve", never_compute)
    monkeypatch.setattr(Store, "load_shipped", recorded)
    at = AppTest.from_file(str(REPO_DIR / "app.py"), default_timeout=120)
    at.switch_page(page)
    at.run()
    errors = [e.value for e in at.exception]
    assert all(e.endswith(": left out") for e in errors), errors
    title = {"views/neurons.py": "Neurons", "views/layers.py": "Layers", "views/embeddings.py": "Embeddings",
             "views/clones.py": "Clones"}[page]
    own = {f"{a.recipe.kind}/{a.key}" for a in asked if a.page == title and a.recipe.kind not in LEFT_OUT}
    assert own <= served <= _shipped(), STALE  # e.g. the Embeddings page also reads the Layers page's report
    assert not (tmp_path / "cache" / STATS.kind).exists()
