"""The Overview's findings against ground truth that does not share their formulas: neurons planted by hand
(in a score array, and in the hand-built model of test_ground_truth), shares computed from counts by hand,
layer reports and clone scores written by hand, and an empty cache that must stay empty."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest

from neuro.analysis.clones.metrics import CloneEvaluation
from neuro.analysis.findings import FindingsInputs, findings, layer_third
from neuro.analysis.layers import LayerReport
from neuro.analysis.selectivity import (
    ChanceLevel,
    LanguageRelations,
    SelectionParams,
    cluster_languages,
    select_pls_scores,
)
from neuro.paths import REPO_DIR

LANGS3 = ["python", "go", "java"]
N_LAYERS, WIDTH = 6, 50


def planted_scores(plants: dict[tuple[int, int], str | None], seed: int = 0) -> np.ndarray:
    """(languages, layers, neurons) PLS: weak random background; a planted (layer, neuron) scores 20 in its
    language (None: in every language, a universal neuron)."""
    rng = np.random.default_rng(seed)
    pls = rng.uniform(0.5, 1.0, size=(len(LANGS3), N_LAYERS, WIDTH))
    for (layer, neuron), lang in plants.items():
        if lang is None:
            pls[:, layer, neuron] = 20.0
        else:
            pls[:, layer, neuron] = 1.0
            pls[LANGS3.index(lang), layer, neuron] = 20.0
    return pls


# 7 language-specific neurons, all in layer 4 (the upper third of 6 layers), and 2 universal ones in layer 1
CONCENTRATED = {**{(4, n): LANGS3[n % 3] for n in range(7)}, (1, 10): None, (1, 11): None}
# 6 language-specific neurons, one per layer
SPREAD = {(layer, 3): LANGS3[layer % 3] for layer in range(N_LAYERS)}


def _selection(plants: dict):
    k = len(plants)
    params = SelectionParams(candidate_quantile=0.9, ratio=1.5, top_fraction=k / (N_LAYERS * WIDTH),
                             normalize="none")
    return select_pls_scores(planted_scores(plants), LANGS3, params)


def _inputs(**kw) -> FindingsInputs:
    return FindingsInputs(model="m", corpus="c", n_layers=N_LAYERS, n_neurons=WIDTH, **kw)


def test_planted_counts_shares_and_layers():
    result = findings(_inputs(selection=_selection(CONCENTRATED)))
    specific, universal, placement = result["specific"], result["universal"], result["placement"]
    assert specific.numbers["count"] == 7 and universal.numbers["count"] == 2
    assert specific.numbers["by_language"] == {"python": 3, "go": 2, "java": 2}
    total = N_LAYERS * WIDTH
    assert specific.numbers["share"] == pytest.approx(7 / 300) and universal.numbers["share"] == pytest.approx(2 / 300)
    assert total == 300 and "7 of 300 FFN neurons (2.33 %)" in specific.text
    assert "2 of 300 FFN neurons (0.67 %)" in universal.text
    # the share is above the paper's bound (7/300 > 0.7 %), the universal share is not (2/300 < 0.9 %)
    assert "above the paper's < 0.7 %" in specific.differs
    assert universal.differs is None or "above the paper" not in universal.differs
    s = placement.numbers["specific"]
    assert s["by_layer"] == [0, 0, 0, 0, 7, 0] and s["top_layer"] == 4
    assert s["thirds"] == {"lower": [0, 1], "middle": [2, 3], "upper": [4, 5]}
    assert s["third_shares"] == {"lower": 0.0, "middle": 0.0, "upper": 1.0}
    assert placement.numbers["universal"]["top_layer"] == 1
    assert placement.numbers["universal"]["third_shares"]["lower"] == 1.0
    assert "100 % in the upper third (layers 4–5)" in placement.text and "most in layer 4 (7 of 7)" in placement.text
    assert placement.differs is None  # concentrated, as the paper reports
    assert specific.link.url == "/neurons?tab=Layer+map"


def test_neurons_spread_over_every_layer_are_said_not_to_concentrate():
    placement = findings(_inputs(selection=_selection(SPREAD)))["placement"]
    assert placement.numbers["specific"]["by_layer"] == [1] * N_LAYERS
    assert "spread over the layers" in placement.differs and "not concentrated" in placement.differs


def test_layer_thirds_by_hand():
    assert [layer_third(x, 6) for x in range(6)] == [0, 0, 1, 1, 2, 2]
    assert [layer_third(x, 32) for x in (0, 10, 11, 21, 22, 31)] == [0, 0, 1, 1, 2, 2]
    assert [layer_third(x, 2) for x in range(2)] == [0, 1]


def test_chance_level_beside_the_counts():
    """Per-language p-values from null counts written by hand; only a Holm p < 0.05 counts as above chance."""
    selection = _selection(CONCENTRATED)
    observed = selection.counts_by_language()  # python 3 (n % 3 == 0: 0, 3, 6), go 2, java 2
    assert [observed[k] for k in LANGS3] == [3, 2, 2]
    # 99 permutations: python's null never reaches 3 (p = 1/100), go's reaches 2 in 9 (p = 10/100), java's in all
    counts = pd.DataFrame({"python": [0] * 99, "go": [2] * 9 + [0] * 90, "java": [2] * 99})
    level = ChanceLevel("pls", "pls", 99, 36, counts, {k: observed[k] for k in LANGS3}, True, 12)
    result = findings(_inputs(selection=selection, chance=level))
    specific, universal = result["specific"], result["universal"]
    by_lang = specific.chance["by_language"]
    assert by_lang["python"]["p"] == pytest.approx(0.01) and by_lang["python"]["p_holm"] == pytest.approx(0.03)
    assert by_lang["go"]["p"] == pytest.approx(0.10) and by_lang["go"]["p_holm"] == pytest.approx(0.20)
    assert by_lang["java"]["p"] == pytest.approx(1.0) and by_lang["java"]["p_holm"] == pytest.approx(1.0)
    assert specific.chance["permutations"] == 99 and specific.chance["stratified"]
    assert "within each of 12 tasks" in specific.text and "above chance: Python)" in specific.text
    assert "Go (2), Java (2) are not distinguishable from shuffled labels" in specific.differs
    assert universal.chance is None and "shuffled" not in universal.text  # no permutation null for universal
    everything = ChanceLevel("pls", "pls", 99, 36, counts * 0, {k: observed[k] for k in LANGS3}, True, 12)
    above = findings(_inputs(selection=selection, chance=everything))
    assert "not distinguishable" not in (above["specific"].differs or "")
    # a null that selects nothing makes any count "above chance": the text says what that does and does not mean
    assert "Shuffled labels select almost none (mean 0.0)" in above["specific"].text
    assert "Shuffled labels select almost none" not in specific.text  # total null mean 2.2


def _universality_report(**kw):
    from neuro.analysis.universality import UniversalityReport

    base = dict(method="pls", score="pls", params={}, total=N_LAYERS * WIDTH, count=2, top_by_mean_overlap=0,
                control_per_layer={"1": 2}, halvings=4, halves_by="task", seed=0, universal=[1.0, 1.0, 1.0, 1.0],
                top_by_mean=[0.2, 0.4, 0.3, 0.3], control=[0.0, 0.5, 0.0, 0.5])
    return UniversalityReport(**{**base, **kw})


def test_universal_finding_states_stability_and_overlap_with_the_most_important():
    selection = _selection(CONCENTRATED)  # two universal neurons
    stable = findings(_inputs(selection=selection, universality=_universality_report()))["universal"]
    assert "universal set 1.00 ± 0.00 (n=4)" in stable.text and "top neurons by mean score 0.30" in stable.text
    assert "0 of the 2 are also among the top 2" in stable.text
    assert stable.numbers["jaccard_universal"] == 1.0 and stable.numbers["top_by_mean_overlap"] == 0
    assert "important in every language" not in (stable.differs or "")
    # the pattern: mostly the top neurons by mean score, and no more stable than them
    mixed = findings(_inputs(selection=selection, universality=_universality_report(
        top_by_mean_overlap=2, universal=[0.3, 0.3, 0.3, 0.3])))["universal"]
    assert "2 of the 2 universal neurons are simply the most important neurons overall" in mixed.differs
    assert "no more stable across halves than as many top neurons by mean score" in mixed.differs
    missing = findings(_inputs(selection=selection))["universal"]
    assert "stability across halves not computed yet" in missing.text and missing.chance is None


def _relations(pairs: dict[tuple[str, str], float]) -> LanguageRelations:
    langs = ["cpp", "java", "python", "go"]
    sim = pd.DataFrame(np.eye(4) + 0.1 * (1 - np.eye(4)), index=langs, columns=langs)
    for (a, b), v in pairs.items():
        sim.loc[a, b] = sim.loc[b, a] = v
    return LanguageRelations(sim, cluster_languages(sim), "cosine", False)


def test_language_family_tree():
    family = findings(_inputs(relations=_relations({("cpp", "java"): 0.9, ("python", "go"): 0.5})))["family"]
    assert family.numbers["closest"] == ["cpp", "java"]
    assert family.numbers["nearest"] == {"cpp": "java", "java": "cpp", "python": "go", "go": "python"}
    order = family.numbers["order"]
    assert abs(order.index("cpp") - order.index("java")) == 1  # neighbours in the dendrogram
    assert family.differs is None and "C++ → Java" in family.text
    assert family.link.url == "/neurons?tab=Language+relations"
    odd = findings(_inputs(relations=_relations({("cpp", "go"): 0.9, ("java", "python"): 0.8})))["family"]
    assert "C++ and Java are not each other's nearest language" in odd.differs


def _report(lang_id: list[float], mrr: list[float], concept: list[int]) -> LayerReport:
    scores = pd.DataFrame({"layer": range(len(lang_id)), "lang_id_acc": lang_id, "align_mrr": mrr})
    return LayerReport(scores, pd.DataFrame(), concept, "the rule as written", {})


def test_a_model_whose_language_id_never_falls_does_not_show_the_paper_pattern():
    concept = findings(_inputs(layers=_report([1.0] * 6, [0.2, 0.3, 0.5, 0.6, 0.4, 0.3], [3])))["concept"]
    assert concept.differs.startswith("On this model language ID stays near 1.00 at every layer, so no layer is "
                                      "language-agnostic as the paper finds for")
    assert concept.numbers["concept_layers"] == [3] and "the rule as written" in concept.text
    assert concept.link.url == "/layers?tab=Layer+scores"


def test_concept_layers_in_the_middle_where_language_id_falls():
    report = _report([1.0, 1.0, 0.6, 0.5, 0.9, 1.0], [0.2, 0.3, 0.7, 0.8, 0.4, 0.3], [2, 3])
    concept = findings(_inputs(layers=report))["concept"]
    assert concept.differs is None
    assert concept.numbers["thirds"] == ["middle"] and concept.numbers["align_peak_layer"] == 3
    assert concept.numbers["lang_id_min_layer"] == 3 and "lowest 0.50 at layer 3" in concept.text
    late = findings(_inputs(layers=_report([1.0, 1.0, 0.9, 0.8, 0.5, 0.5], [0.1, 0.1, 0.2, 0.3, 0.8, 0.9],
                                           [5])))["concept"]
    assert "upper third, not in the middle" in late.differs


def _clones(concept: float, tfidf: float) -> CloneEvaluation:
    rows = []
    for method, layer, value in [("concept layer", 3, concept), ("first layer", 0, 0.1), ("last layer", 5, 0.2),
                                 ("mean of layers", -1, 0.15), ("token TF-IDF", -1, tfidf)]:
        for setting in ("cross-language", "all-language"):
            rows.append({"method": method, "layer": layer, "setting": setting, "query_lang": "all",
                         "candidate_lang": "all", "map_at_r": value, "recall_at_1": value})
    return CloneEvaluation(pd.DataFrame(rows), pd.DataFrame(), 3, [3], {"evaluated_programs": 20})


def test_clone_detection_against_its_baselines():
    clones = findings(_inputs(clones=_clones(0.6, 0.3)))["clones"]
    assert clones.numbers["cross_language_map_at_r"]["concept layer"] == 0.6
    assert "concept layer (layer 3) 0.600 vs token TF-IDF 0.300" in clones.text and clones.differs is None
    assert clones.link.url == "/clones?tab=Evaluation"
    worse = findings(_inputs(clones=_clones(0.2, 0.3)))["clones"]
    assert "does not beat the TF-IDF baseline" in worse.differs


def test_clone_finding_quotes_intervals_and_paired_differences():
    import dataclasses

    base = _clones(0.6, 0.3)
    intervals = pd.DataFrame([{"method": "concept layer", "layer": 3, "setting": "cross-language", "metric": "map_at_r",
                               "estimate": 0.6, "low": 0.5, "high": 0.7}])
    differences = pd.DataFrame([
        {"comparison": "concept layer minus first layer", "setting": "cross-language", "metric": "map_at_r",
         "estimate": 0.5, "low": 0.4, "high": 0.6, "covers_zero": False, "verdict": "concept layer higher"},
        {"comparison": "mean of layers minus concept layer", "setting": "cross-language", "metric": "map_at_r",
         "estimate": -0.45, "low": -0.5, "high": 0.01, "covers_zero": True,
         "verdict": "indistinguishable on this corpus"},
        {"comparison": "concept layer minus token TF-IDF", "setting": "cross-language", "metric": "map_at_r",
         "estimate": 0.3, "low": 0.2, "high": 0.4, "covers_zero": False, "verdict": "concept layer higher"}])
    found = findings(_inputs(clones=dataclasses.replace(base, intervals=intervals, differences=differences)))["clones"]
    assert "concept layer (layer 3) 0.600 [0.500, 0.700] vs token TF-IDF 0.300," in found.text
    assert "mean of layers minus concept layer -0.450 [-0.500, +0.010] (indistinguishable on this corpus)" in found.text
    assert set(found.numbers["differences"]) == {"concept layer minus first layer",
                                                 "mean of layers minus concept layer"}


def _tab_names() -> dict[str, set[str]]:
    """The tab names each page passes to lazy_tabs, read from the page's source."""
    out = {}
    for page in ("neurons", "layers", "clones"):
        source = (REPO_DIR / "views" / f"{page}.py").read_text()
        block = source[source.rindex("lazy_tabs("):] if "TABS =" not in source else source[source.rindex("TABS ="):]
        out[page] = set(re.findall(r'"([A-Z][^"]*)":', block))
    return out


def test_absent_results_say_not_computed_with_links_to_existing_tabs():
    result = findings(_inputs())
    assert [f.key for f in result] == ["specific", "universal", "placement", "family", "concept", "clones"]
    tabs = _tab_names()
    for finding in result:
        assert not finding.computed and "not computed yet" in finding.text.lower(), finding.text
        assert finding.link.tab in tabs[finding.link.page], (finding.link, tabs)
        assert f"{finding.link.title} page ({finding.link.tab} tab)" in finding.text
    assert json.loads(json.dumps(result.to_dict()))["findings"][0]["link"]["url"] == "/neurons?tab=Layer+map"


# --------------------------------------------------------------------------- from the cache
def _entries(cache) -> list:
    return [p for p in cache.rglob("*") if p.is_file()] if cache.exists() else []


def test_gather_on_the_planted_model_reads_only_the_cache(tmp_path):
    from test_ground_truth import PLANTED, UNIVERSAL, planted_corpus, planted_model

    from neuro.code.split import split_corpus
    from neuro.results.findings import gather_findings
    from neuro.results.statistics import STATS

    loaded, corpus = planted_model(), planted_corpus()
    cache = tmp_path / "cache"
    empty = gather_findings(loaded, corpus, cache=cache)
    assert not any(f.computed for f in empty) and _entries(cache) == []  # nothing computed, nothing written

    STATS.get(loaded, split_corpus(corpus).selection, cache=cache)  # what the Neurons page computes
    written = set(_entries(cache))
    found = gather_findings(loaded, corpus, cache=cache)
    assert set(_entries(cache)) == written  # still nothing computed by the findings
    specific, universal = found["specific"], found["universal"]
    assert specific.computed and universal.computed
    # default parameters keep round(1 % of 96) = 1 neuron per class: a planted one
    assert specific.numbers["count"] == 1 and universal.numbers["count"] == 1
    layer = found["placement"].numbers["specific"]["top_layer"]
    lang = next(k for k, v in specific.numbers["by_language"].items() if v)
    assert any(p[0] == lang and p[1] == layer for p in PLANTED)
    assert found["placement"].numbers["universal"]["top_layer"] == UNIVERSAL[0]
    assert specific.chance is None and "chance level not computed yet" in specific.text
    assert "stability across halves not computed yet" in universal.text
    assert not found["concept"].computed and not found["clones"].computed
    assert found["family"].computed and set(found["family"].numbers["order"]) == {"python", "go", "java"}


def test_cli_findings_json(tmp_path, tiny_env, capsys):

    from neuro.cli import main

    tiny_env(folder=tmp_path)
    cache = tmp_path / "cache"
    assert main(["findings", "--json", "--model", str(tmp_path / "model"), "--corpus", str(tmp_path / "corpus.jsonl"),
                 "--cache", str(cache)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [f["key"] for f in out["findings"]] == ["specific", "universal", "placement", "family", "concept", "clones"]
    assert not any(f["computed"] for f in out["findings"]) and out["computed"] == []
    assert _entries(cache) == []
