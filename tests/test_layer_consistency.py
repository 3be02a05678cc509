"""Layer scores a referee accepts: probes cross-validated by program (and by task on a parallel corpus),
concept layers measured with clone search's centring, and their stability across corpus splits."""

import json

import numpy as np
import pytest

from neuro.analysis.layers import (alignment_by_pair, concept_stability, layer_report, probe_accuracy, probe_folds,
                                   probe_groups)
from neuro.code.corpus import Snippet

_BODIES = ["x + {t}", "x * {t}", "x - {t}", "{t} * x + 1", "x * x + {t}", "(x + {t}) * 2", "x / ({t} + 1)", "{t} - x"]


def _parallel(tasks: int = 8) -> list[Snippet]:
    """`tasks` tiny tasks, each in Python, Go and Java (>= 5 programs per language: each gets its own mean)."""
    out = []
    for t in range(tasks):
        body = _BODIES[t % len(_BODIES)].format(t=t)
        out += [Snippet(f"t{t}/python", "python", f"t{t}", f"def f{t}(x):\n    y = {body}\n    return y\n"),
                Snippet(f"t{t}/go", "go", f"t{t}", f"func F{t}(x int) int {{\n\ty := {body}\n\treturn y\n}}\n"),
                Snippet(f"t{t}/java", "java", f"t{t}", f"class S{t} {{\n    int f(int x) {{ int y = {body}; "
                                                         "return y; }\n}\n")]
    return out


# --------------------------------------------------------------------------- folds by program / task

def test_grouped_folds_never_split_a_program_or_a_task():
    rng = np.random.default_rng(0)
    programs = np.repeat(np.arange(40), 12)                 # 12 sampled tokens of each of 40 programs
    labels = rng.choice(["identifier", "call", "(", ")", "return"], size=len(programs))
    folds = probe_folds(labels, programs, folds=3, seed=0)
    assert len(folds) == 3
    seen = np.concatenate([test for _, test in folds])
    assert sorted(seen.tolist()) == list(range(len(programs)))  # every token tested exactly once
    for train, test in folds:
        assert not set(programs[train]) & set(programs[test])
    # on a parallel corpus the groups are tasks: one task's programs (its languages) stay on one side
    corpus = _parallel(8)
    groups = probe_groups(corpus)
    assert list(groups) == [s.task for s in corpus]
    langs = [s.lang for s in corpus]
    for train, test in probe_folds(langs, groups, folds=5, seed=1):
        assert not {corpus[i].task for i in train} & {corpus[i].task for i in test}
    token_programs = np.repeat(np.arange(len(corpus)), 5)
    token_labels = rng.choice(["a", "b", "c"], size=len(token_programs))
    for train, test in probe_folds(token_labels, groups[token_programs], folds=3, seed=2):
        assert not {corpus[i].task for i in token_programs[train]} & {corpus[i].task for i in token_programs[test]}
    # without shared tasks every program is its own group
    alone = [Snippet(f"p{i}", "python", f"p{i}", "") for i in range(6)]
    assert list(probe_groups(alone)) == list(range(6))


def test_token_folds_let_a_probe_recognise_the_program_and_program_folds_do_not():
    """Each program's tokens share a program-specific offset and one label drawn at random per program: the
    label says nothing a new program could show (truth: chance, 1/3). Folds over tokens put a program's tokens
    on both sides and score far above it; folds by program do not."""
    rng = np.random.default_rng(3)
    n_programs, per = 60, 10
    programs = np.repeat(np.arange(n_programs), per)
    program_label = rng.integers(0, 3, size=n_programs)
    offsets = 3.0 * rng.normal(size=(n_programs, 128))  # more dimensions than programs: any labelling is linear
    x = offsets[programs] + rng.normal(size=(len(programs), 128))
    y = program_label[programs]
    leaky = probe_accuracy(x, y, folds=3)
    honest = probe_accuracy(x, y, folds=3, groups=programs)
    assert leaky > 0.9
    assert abs(honest - 1 / 3) < 0.15


# --------------------------------------------------------------------------- centring as clone search centres

def test_alignment_is_measured_with_clone_searchs_centring(tiny_llama):
    from neuro.instrument.states import layer_states

    corpus = _parallel(8)
    report = layer_report(tiny_llama, corpus, tokens_per_snippet=3, contribution=False)
    assert report.meta["center"] == "language" and "task" in report.meta["probe_folds"]
    assert set(report.meta["concept_layers_by_center"]) == {"language", "corpus", "none"}
    assert report.concept_layers == report.concept_layers_for("language")
    assert "centring" in report.rule
    pooled = layer_states(tiny_llama, corpus).pooled
    langs = np.array([s.lang for s in corpus])
    for layer in range(tiny_llama.n_layers):
        x = pooled[:, layer].astype(np.float64)
        by_hand = x.copy()
        for lang in set(langs):  # each language minus the mean of its own programs (8 each here)
            by_hand[langs == lang] -= x[langs == lang].mean(0)
        for how, states in (("language", by_hand), ("none", x), ("corpus", x - x.mean(0))):
            pairs = alignment_by_pair(states, corpus)
            got = report.alignment[(report.alignment.layer == layer) & (report.alignment.center == how)].iloc[0]
            assert got.align_mrr == pytest.approx(np.mean([p.mrr for p in pairs.values()]), abs=1e-6)
            assert got.align_acc == pytest.approx(np.mean([p.accuracy for p in pairs.values()]), abs=1e-6)
        row = report.scores[report.scores.layer == layer].iloc[0]
        centred = report.alignment[(report.alignment.layer == layer) & (report.alignment.center == "language")]
        assert row.align_mrr == pytest.approx(centred.align_mrr.iloc[0])
        # CKA centres each language's rows itself: per-language centring leaves it unchanged
        raw = alignment_by_pair(x, corpus)
        assert row.align_cka == pytest.approx(np.mean([p.cka for p in raw.values()]), abs=1e-5)
    uncentred = layer_report(tiny_llama, corpus, tokens_per_snippet=3, contribution=False, center="none")
    assert uncentred.concept_layers == report.concept_layers_for("none")
    with pytest.raises(ValueError, match="centring"):
        layer_report(tiny_llama, corpus, contribution=False, center="median")


def test_clone_evaluation_takes_the_concept_layers_of_its_own_centring(tiny_llama, tmp_path):
    from neuro.code.split import split_corpus
    from neuro.results import open_store
    from neuro.results.clones import CLONE_EVAL
    from neuro.results.layers import LAYER_REPORT

    corpus = _parallel(16)
    split = split_corpus(corpus)
    store = open_store(tmp_path)
    for center in ("language", "none"):
        result = CLONE_EVAL.get(tiny_llama, corpus, center=center, cache=store)
        report = LAYER_REPORT.get(tiny_llama, split.selection, contribution=False, cache=store, compute=False)
        assert result.concept_layers == report.concept_layers_for(center)
    assert len(store.entries(LAYER_REPORT.kind)) == 1  # one report serves every centring
    # evaluated at the first layer: "chosen layer minus first layer" is a method minus itself
    at_zero = CLONE_EVAL.get(tiny_llama, corpus, layer=0, cache=store)
    same = at_zero.differences[at_zero.differences.second == "first layer"]
    assert len(same) == 4 and (same.estimate == 0).all() and (same.low == 0).all() and (same.high == 0).all()
    assert set(same.verdict) == {"indistinguishable on this corpus"}
    # each interval's estimate is the table's own number, inside its interval
    overall = at_zero.scores[at_zero.scores.query_lang.eq("all") & at_zero.scores.setting.ne("pair")]
    merged = overall.merge(at_zero.intervals[at_zero.intervals.metric == "map_at_r"], on=["method", "setting"])
    assert len(merged) == 10
    np.testing.assert_allclose(merged.estimate, merged.map_at_r)
    assert (merged.low <= merged.estimate + 1e-12).all() and (merged.estimate <= merged.high + 1e-12).all()
    sweep = at_zero.sweep
    assert ((sweep.map_at_r_low <= sweep.map_at_r + 1e-12) & (sweep.map_at_r <= sweep.map_at_r_high + 1e-12)).all()
    summary = at_zero.summary()
    assert {"intervals", "differences"} <= set(summary) and "cross-language MAP@R CI" in summary["overall"][0]
    assert summary["bootstrap"]["unit"] == "task" and summary["bootstrap"]["tasks"] == len(
        {s.task for s in split.evaluation})


# --------------------------------------------------------------------------- stability across splits

def test_concept_stability_by_hand():
    s = concept_stability({0: [4, 5], 1: [5], 2: [5, 6]})
    assert s["splits"] == 3 and s["chosen_in"] == {4: 1, 5: 3, 6: 1} and s["in_every_split"] == [5]
    assert s["share"][5] == 1.0 and s["share"][4] == pytest.approx(1 / 3, abs=1e-4)
    assert s["middle_layer"] == {0: 5, 1: 5, 2: 6} and s["middle_layer_counts"] == {5: 2, 6: 1}
    assert s["mean_pairwise_jaccard"] == pytest.approx((1 / 2 + 1 / 3 + 1 / 2) / 3)
    assert concept_stability({0: [3], 1: [3]})["mean_pairwise_jaccard"] == 1.0


def test_layers_cli_split_seeds(tiny_llama, tmp_path, capsys):
    from neuro.cli import main
    from neuro.code.corpus import save_jsonl
    from neuro.code.split import SplitParams, split_corpus
    from neuro.model.loading import load_model
    from neuro.results import open_store
    from neuro.results.layers import LAYER_REPORT

    corpus = _parallel(10)
    tiny_llama.model.save_pretrained(tmp_path / "model")
    tiny_llama.tokenizer.save_pretrained(tmp_path / "model")
    save_jsonl(corpus, tmp_path / "corpus.jsonl")
    args = ["layers", "--split-seeds", "0", "1", "4", "--tokens-per-snippet", "3", "--model", str(tmp_path / "model"),
            "--corpus", str(tmp_path / "corpus.jsonl"), "--cache", str(tmp_path / "cache"), "--json"]
    assert main(args) == 0
    out = capsys.readouterr()
    summary = json.loads(out.out)
    assert summary["split_seeds"] == [0, 1, 4] and [r["seed"] for r in summary["per_split"]] == [0, 1, 4]
    assert "split seed 4 (3 of 3): computing layer scores" in out.err
    store, loaded = open_store(tmp_path / "cache"), load_model(str(tmp_path / "model"))
    for row in summary["per_split"]:  # each split's choice is the recipe's own, on that split's selection side
        split = split_corpus(corpus, SplitParams(seed=row["seed"]))
        assert row["split"] == split.summary() and not row["cached"]
        report = LAYER_REPORT.get(loaded, split.selection, cache=store, contribution=False, tokens_per_snippet=3,
                                  compute=False)
        assert report is not None and row["concept_layers"] == report.concept_layers
    counts = summary["stability"]["chosen_in"]
    assert sum(counts.values()) == sum(len(r["concept_layers"]) for r in summary["per_split"])
    assert main(args) == 0  # again: every split's scores come from the cache
    again = capsys.readouterr()
    assert all(r["cached"] for r in json.loads(again.out)["per_split"]) and "computing" not in again.err
