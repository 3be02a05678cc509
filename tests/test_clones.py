"""Clone detection: metrics against hand-computed values, search, early exit, baselines, bad input,
CLI and the page."""

import json
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest
from conftest import HUMANEVAL_X, SNIPPETS
from streamlit.testing.v1 import AppTest

from neuro.analysis.clones.baselines import code_tokens, tfidf_vectors
from neuro.analysis.clones.index import VectorIndex, embed_code
from neuro.analysis.clones.metrics import map_at_r, recall_at_1, retrieval_table
from neuro.analysis.embeddings import CENTERINGS, MIN_LANGUAGE_ROWS, centred_rows, unit_rows
from neuro.cli import main
from neuro.code.comments import strip_comments
from neuro.code.corpus import CorpusError, Snippet, load_humaneval_x
from neuro.code.split import SplitParams, split_corpus
from neuro.code.upload import EMPTY_MESSAGE, CloneInputError, decode_upload, prepare_query
from neuro.instrument.states import pooled_states
from neuro.paths import REPO_DIR
from neuro.results import open_store
from neuro.results.clones import CLONE_EVAL, build_index, split_embeddings
from neuro.results.embeddings import LAYER_EMBEDDINGS, POOLED

# --------------------------------------------------------------------------- metrics


def test_map_at_r_and_recall_at_1_hand_computed():
    # Query 0: R = 2, ranking rel, non, rel, non, non      -> AP@R = (1/1) / 2           = 0.5,   top-1 hit
    # Query 1: R = 1, ranking non, rel, ...                -> AP@R = 0                          , top-1 miss
    # Query 2: R = 3, ranking rel, rel, non, rel, non      -> AP@R = (1 + 1 + 0) / 3     = 2/3,   top-1 hit
    sims = np.array([[0.9, 0.8, 0.7, 0.6, 0.5],
                     [0.9, 0.8, 0.7, 0.6, 0.5],
                     [0.9, 0.8, 0.7, 0.6, 0.5]])
    relevant = np.array([[1, 0, 1, 0, 0],
                         [0, 1, 0, 0, 0],
                         [1, 1, 0, 1, 0]], dtype=bool)
    assert map_at_r(sims, relevant) == pytest.approx((0.5 + 0 + 2 / 3) / 3)
    assert recall_at_1(sims, relevant) == pytest.approx(2 / 3)
    # Restricting the candidates re-ranks among them: query 1 without candidate 0 finds its clone first.
    candidates = np.array([[1, 1, 1, 1, 1], [0, 1, 1, 1, 1], [1, 1, 1, 1, 1]], dtype=bool)
    assert map_at_r(sims, relevant, candidates) == pytest.approx((0.5 + 1 + 2 / 3) / 3)
    assert recall_at_1(sims, relevant, candidates) == pytest.approx(1.0)


def _reference(vectors, snippets, query_lang=None, candidate=lambda q, c: True):
    """Brute-force MAP@R / Recall@1 straight from the definitions."""
    aps, hits = [], []
    for i, q in enumerate(snippets):
        if query_lang and q.lang != query_lang:
            continue
        cands = [j for j, c in enumerate(snippets) if j != i and candidate(q, c)]
        ranked = sorted(cands, key=lambda j: -float(vectors[i] @ vectors[j]))
        rel = [snippets[j].task == q.task for j in ranked]
        r = sum(rel)
        if r == 0:
            continue
        aps.append(sum(sum(rel[:n + 1]) / (n + 1) for n in range(r) if rel[n]) / r)
        hits.append(float(rel[0]))
    return np.mean(aps), np.mean(hits), len(aps)


def test_retrieval_table_matches_the_definitions():
    rng = np.random.default_rng(3)
    langs = ["python", "go", "java"]
    snippets = [Snippet(f"t{t}/{lang}", lang, f"t{t}", "") for t in range(9) for lang in langs if (t + len(lang)) % 4]
    centers = rng.standard_normal((9, 6))
    vectors = unit_rows(centers[[int(s.task[1:]) for s in snippets]] + rng.standard_normal((len(snippets), 6)))
    table = retrieval_table(vectors, snippets, chunk=5).set_index(["setting", "query_lang", "candidate_lang"])
    checks = {("cross-language", "all", "others"): _reference(vectors, snippets, None, lambda q, c: c.lang != q.lang),
              ("all-language", "all", "all"): _reference(vectors, snippets),
              ("all-language", "go", "all"): _reference(vectors, snippets, "go"),
              ("pair", "python", "java"): _reference(vectors, snippets, "python", lambda q, c: c.lang == "java")}
    for row, (ap, hit, n) in checks.items():
        assert table.loc[row, "map_at_r"] == pytest.approx(ap)
        assert table.loc[row, "recall_at_1"] == pytest.approx(hit)
        assert table.loc[row, "queries"] == n


# --------------------------------------------------------------------------- search

def test_search_returns_the_planted_clone_first():
    rng = np.random.default_rng(0)
    langs = ["cpp", "java", "python", "go", "javascript"]
    snippets = [Snippet(f"s{i}", langs[i % 5], f"t{i}", f"code {i}") for i in range(500)]
    emb = rng.standard_normal((500, 64)).astype(np.float32) + 3.0  # a shared offset, removed by centring
    index = VectorIndex(emb, snippets)
    query = emb[137] + 0.05 * rng.standard_normal(64)
    hits = index.search_vector(query, k=5, lang="python")
    assert hits[0].id == "s137" and hits[0].lang == "python" and hits[0].score > 0.99
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    filtered = index.search_vector(query, k=5, languages=["go", "java"])
    assert len(filtered) == 5 and {h.lang for h in filtered} <= {"go", "java"}
    assert "s137" not in {h.id for h in filtered}
    assert len(index.search_vector(query, k=10_000)) == 500
    assert index.search_vector(query, k=3, languages=["rust"]) == []


def _offset_corpus(tasks=40, dim=32, offset=4.0, seed=1):
    """Programs = their task's vector + a large per-language offset + noise: what pooled states look like
    when a probe reads the language off every layer."""
    rng = np.random.default_rng(seed)
    langs = ["cpp", "java", "python", "go", "javascript"]
    task_vectors = rng.standard_normal((tasks, dim))
    lang_vectors = offset * rng.standard_normal((len(langs), dim))
    snippets = [Snippet(f"t{t}/{lang}", lang, f"t{t}", f"code {t} {lang}") for t in range(tasks) for lang in langs]
    emb = np.stack([task_vectors[t] + lang_vectors[i] + 0.3 * rng.standard_normal(dim)
                    for t in range(tasks) for i in range(len(langs))]).astype(np.float32)
    return snippets, emb, task_vectors, lang_vectors


def test_language_centring_removes_a_per_language_offset():
    snippets, emb, _, _ = _offset_corpus()

    def cross_map(center):
        table = retrieval_table(centred_rows(emb, snippets, center), snippets)
        return table[(table.setting == "cross-language") & (table.query_lang == "all")].map_at_r.item()

    scores = {center: cross_map(center) for center in CENTERINGS}
    assert scores["language"] > 0.95
    assert scores["language"] > scores["corpus"] + 0.3 and scores["language"] > scores["none"] + 0.3
    # Each language's rows are centred on its own mean: the per-language means of the result are ~0.
    rows = centred_rows(emb, snippets, "language") * np.linalg.norm(emb - emb.mean(0), axis=1, keepdims=True)
    langs = np.array([s.lang for s in snippets])
    for lang in set(langs):
        assert np.abs(rows[langs == lang].mean(0)).max() < 0.5
    with pytest.raises(ValueError, match="centring must be one of language, corpus, none"):
        centred_rows(emb, snippets, "median")


def test_search_centres_the_query_on_its_language():
    snippets, emb, task_vectors, lang_vectors = _offset_corpus()
    rng = np.random.default_rng(7)
    query = task_vectors[5] + lang_vectors[1] + 0.3 * rng.standard_normal(task_vectors.shape[1])  # task 5 in Java
    others = ["cpp", "python", "go", "javascript"]
    index = VectorIndex(emb, snippets)
    before = {lang: mean.copy() for lang, mean in index.centering.language_means.items()}
    hits = index.search_vector(query, k=4, languages=others, lang="java")
    assert {h.id for h in hits} == {f"t5/{lang}" for lang in others}
    # The query is centred on the index's Java mean (the index's rows alone), and leaves every mean as it was.
    java_mean = emb[[i for i, s in enumerate(snippets) if s.lang == "java"]].mean(0)
    np.testing.assert_allclose(index.centering.language_means["java"], java_mean, rtol=1e-5, atol=1e-6)
    rows = {s.id: centred_rows(emb, snippets, "language")[i] for i, s in enumerate(snippets)}
    expected = {h.id: float(rows[h.id] @ unit_rows(query[None], java_mean)[0]) for h in hits}
    assert [h.score for h in hits] == pytest.approx([expected[h.id] for h in hits], abs=1e-5)
    leaky = np.vstack([emb[[i for i, s in enumerate(snippets) if s.lang == "java"]], query[None]]).mean(0)
    assert np.abs(leaky - java_mean).max() > 1e-3  # a mean fitted with the query would have shown
    assert before.keys() == index.centering.language_means.keys()
    for lang, mean in before.items():
        np.testing.assert_array_equal(index.centering.language_means[lang], mean)
    plain = VectorIndex(emb, snippets, center="corpus").search_vector(query, k=4, languages=others, lang="java")
    assert {h.id for h in plain} != {f"t5/{lang}" for lang in others}
    # A language with too few programs for its own mean falls back to the corpus mean.
    few = [s for s in snippets if s.lang != "go"] + [s for s in snippets if s.lang == "go"][:MIN_LANGUAGE_ROWS - 1]
    index = VectorIndex(np.stack([emb[snippets.index(s)] for s in few]), few)
    assert index.centred_on_language("java") and not index.centred_on_language("go")
    assert not index.centred_on_language("rust")
    np.testing.assert_allclose(index.centering.mean_for("go"), index.centering.corpus_mean)


def test_early_exit_embedding_equals_the_full_pass(tiny_llama, snippets, tmp_path):
    full = pooled_states(tiny_llama, snippets)
    store = open_store(tmp_path)
    early = LAYER_EMBEDDINGS.get(tiny_llama, snippets, layer=1, cache=store)
    np.testing.assert_allclose(early, full[:, 1], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(embed_code(tiny_llama, snippets[2].code, 1), full[2, 1], rtol=1e-4, atol=1e-5)
    all_layers = POOLED.get(tiny_llama, snippets, cache=store)  # now sliced from the shared entry
    np.testing.assert_allclose(LAYER_EMBEDDINGS.get(tiny_llama, snippets, layer=2, cache=store), all_layers[:, 2])
    with pytest.raises(ValueError, match="layer must lie"):
        LAYER_EMBEDDINGS.get(tiny_llama, snippets, layer=3, cache=store)


def test_index_search_on_a_tiny_model(tiny_llama, snippets, tmp_path):
    index = build_index(tiny_llama, snippets, cache=tmp_path)
    assert 0 <= index.layer < 3
    result = index.search(snippets[1].code, k=3)  # a Go program from the corpus finds itself first
    assert result.query.lang == "go" and result[0].id == "add/go" and result[0].score == pytest.approx(1.0, abs=1e-4)
    assert len(result) == 3 and result.summary()["hits"][0]["rank"] == 1
    assert any(f"fewer than {MIN_LANGUAGE_ROWS} go programs" in n for n in result.query.notices)  # 2 Go programs
    cross = index.search(snippets[1].code, k=10, cross_language=True)
    assert len(cross) == 5 and all(h.lang != "go" for h in cross)
    given = index.search("x = 1", lang="java", languages=["python"])
    assert given.query.lang == "java" and given.query.overridden and {h.lang for h in given} == {"python"}
    assert len(index.search("x = 1", languages=[])) == 0


# --------------------------------------------------------------------------- TF-IDF baseline

def test_tfidf_baseline():
    assert code_tokens("hasCloseElements(has_close_elements, HTTPServer2) ==") == [
        "has", "close", "elements", "(", "has", "close", "elements", ",", "http", "server", "2", ")", "=", "="]
    vectors = tfidf_vectors(SNIPPETS)
    assert vectors.shape[0] == len(SNIPPETS)
    np.testing.assert_allclose(np.sqrt(vectors.multiply(vectors).sum(1)).A1, 1.0, rtol=1e-6)
    table = retrieval_table(vectors, SNIPPETS).set_index(["setting", "query_lang", "candidate_lang"])
    assert table.loc[("cross-language", "all", "others"), "queries"] == 6  # "sum" has no clone
    assert 0 < table.loc[("cross-language", "all", "others"), "map_at_r"] <= 1


def test_strip_comments_keeps_the_code():
    python = 'def f(x):\n    """Twice x.\n\n    >>> f(2)\n    4\n    """\n    return 2 * x  # double\n'
    assert strip_comments(python, "python") == "def f(x):\n    return 2 * x\n"
    java = "/** Twice x. */\nclass A {\n    // double\n    int f(int x) { return 2 * x; /* here */ }\n}\n"
    assert strip_comments(java, "java") == "class A {\n    int f(int x) { return 2 * x;  }\n}\n"
    go = "package main\n\n// F doubles x.\nfunc F(x int) int {\n\treturn 2 * x\n}\n"
    assert strip_comments(go, "go") == "package main\nfunc F(x int) int {\n\treturn 2 * x\n}\n"
    assert strip_comments("const s = '// not a comment'; // one\n", "javascript") == "const s = '// not a comment';\n"


@pytest.mark.skipif(not HUMANEVAL_X.is_dir(), reason="HumanEval-X is not in ../shared/data")
def test_tfidf_on_humaneval_x():
    snippets = load_humaneval_x(HUMANEVAL_X)
    table = retrieval_table(tfidf_vectors(snippets), snippets).set_index(["setting", "query_lang", "candidate_lang"])
    cross = table.loc[("cross-language", "all", "others")]
    assert cross.queries == 820 and 0.3 < cross.map_at_r < 1  # shared docstrings make TF-IDF strong
    assert len(table.xs("pair", level="setting")) == 20


# --------------------------------------------------------------------------- bad input

def test_bad_inputs_give_the_documented_messages():
    for empty in ("", "   \n\t"):
        with pytest.raises(CloneInputError, match="No code to search"):
            prepare_query(empty)
    with pytest.raises(CloneInputError) as empty_error:
        prepare_query(None)
    assert str(empty_error.value) == EMPTY_MESSAGE  # the page shows the exception's text as it is
    huge = prepare_query("def f(x):\n    return x\n" * 2000, max_chars=1000)
    assert huge.truncated and len(huge.code) == 1000 and huge.original_chars == 46_000
    assert "only the first 1,000 are used" in huge.notices[0]
    prose = prepare_query("Dear team, please find attached the report for March. Let me know!")
    assert not prose.looks_like_code and "does not look like" in prose.notices[0]
    # prose that a lenient grammar half-accepts (Java parsed this sentence with ~10 % errors, "java, 85 %")
    sentence = prepare_query("The quick brown fox jumps over the lazy dog. This is a sentence about nothing.")
    assert not sentence.looks_like_code and "does not look like" in sentence.notices[0]
    good = prepare_query("def add(a, b):\n    return a + b\n")
    assert good.lang == "python" and good.looks_like_code and not good.notices
    vague = prepare_query("return a + b")
    assert vague.low_confidence and "language is uncertain" in vague.notices[0]
    assert not prepare_query("return a + b", lang="go").low_confidence
    with pytest.raises(CorpusError, match="unknown language"):
        prepare_query("x = 1", lang="cobol")

    assert decode_upload(b"def f(): pass\n").text == "def f(): pass\n"
    assert decode_upload("é = 1\n".encode("utf-16")).text == "é = 1\n"
    bad = decode_upload(b"x = '\xe9'\n", "a.py")
    assert bad.text is None and bad.error.startswith("a.py is not UTF-8 text (byte 0xe9 at offset 5")
    assert "binary" in decode_upload(b"\x7fELF\x00\x00", "a.out").error
    assert decode_upload(b"", "e.py").error == "e.py is empty."


# --------------------------------------------------------------------------- CLI and page

@pytest.fixture(scope="module")
def folder(tiny_env):
    return tiny_env("clones")


def neuro(folder, *args):
    cmd = [sys.executable, "-m", "neuro", "clones", *args, "--model", str(folder / "model"),
           "--corpus", str(folder / "corpus.jsonl"), "--cache", str(folder / "cache"), "--json"]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=REPO_DIR, timeout=300,
                          env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"})


def test_cli_eval_and_search_json(folder, capsys):
    out = neuro(folder, "eval")  # end to end in a subprocess: stdout is exactly one JSON document
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    methods = {row["method"] for row in summary["overall"]}
    assert methods == {"concept layer", "first layer", "last layer", "mean of layers", "token TF-IDF"}
    assert {"cross-language MAP@R", "all-language Recall@1"} <= set(summary["overall"][0])
    assert sorted({row["layer"] for row in summary["sweep"]}) == [0, 1, 2]
    assert summary["layer"] in summary["concept_layers"] and summary["programs"] == 7
    split = split_corpus(SNIPPETS).summary()
    assert summary["split"] == split and summary["evaluated_programs"] == split["evaluation_programs"]
    assert max(row["queries"] for row in summary["scores"]) <= split["evaluation_programs"]

    def run(*args):  # in-process: the same parser and handler, without a second interpreter start-up
        code = main(["clones", *args, "--model", str(folder / "model"), "--corpus", str(folder / "corpus.jsonl"),
                     "--cache", str(folder / "cache"), "--json"])
        return code, json.loads(capsys.readouterr().out)

    (folder / "q.go").write_text(SNIPPETS[4].code)
    code, result = run("search", "--code-file", str(folder / "q.go"), "-k", "4", "--hit-languages", "go,java")
    assert code == 0 and result["lang"] == "go" and [h["rank"] for h in result["hits"]] == [1, 2, 3, 4]
    assert result["split"] == split_corpus(SNIPPETS).summary()  # the split chose the layer
    assert result["hits"][0]["id"] == "rev/go" and {h["lang"] for h in result["hits"]} <= {"go", "java"}
    (folder / "bin").write_bytes(b"\x00\x01\x02")
    code, result = run("search", "--code-file", str(folder / "bin"))
    assert code == 2 and "binary" in result["error"]
    code, result = run("search")
    assert code == 2 and "--code-file" in result["error"]


def _clones_page(folder, monkeypatch) -> AppTest:
    """The Clones page, run once on the test model and corpus with its own cache."""
    monkeypatch.setenv("NEURO_MODEL", str(folder / "model"))
    monkeypatch.setenv("NEURO_CORPUS", str(folder / "corpus.jsonl"))
    monkeypatch.setenv("NEURO_CACHE", str(folder / "page-cache"))
    return AppTest.from_file(str(REPO_DIR / "views" / "clones.py"), default_timeout=180).run()


def test_page_search_and_evaluation(folder, monkeypatch):
    at = _clones_page(folder, monkeypatch)
    assert not at.exception, at.exception
    at.text_area(key="clones_code").set_value(SNIPPETS[5].code).run()  # the Java "rev" program
    assert not at.exception, at.exception
    hits = at.dataframe[0].value  # other languages only, by default
    assert list(hits.columns) == ["rank", "similarity", "language", "task", "id"] and len(hits) == 5
    assert "java" not in set(hits.language)
    at.checkbox(key="clones_cross").uncheck().run()
    hits = at.dataframe[0].value
    assert len(hits) == 7
    assert hits.iloc[0]["id"] == "rev/java" and hits.similarity.is_monotonic_decreasing
    assert any("Query language: java" in m.value for m in at.markdown)
    codes = [c.value.strip() for c in at.code]
    assert codes[0] == SNIPPETS[5].code.strip() and codes[0] in codes[1:]  # the query beside its hits
    at.multiselect(key="clones_filter").set_value(["python"]).run()
    assert set(at.dataframe[0].value.language) == {"python"}
    at.text_area(key="clones_code").set_value("  ").run()
    assert any("No code to search" in i.value for i in at.info)
    assert "clones_eval" not in {b.key for b in at.button}  # only the open tab runs
    at.session_state["tab"] = "Evaluation"
    at.run()
    at.button(key="clones_eval").click().run()
    assert not at.exception, at.exception
    # the "not computed" note and its button go once the results are drawn (they stayed above them)
    assert not any("Not computed" in c.value for c in at.caption)
    assert "clones_eval" not in {b.key for b in at.button}
    overall = at.dataframe[0].value
    assert "token TF-IDF" in set(overall.method) and "cross-language MAP@R" in overall.columns
    assert any(split_corpus(SNIPPETS).caption() in c.value for c in at.caption)
    assert len(at.get("vega_lite_chart")) >= 2  # pair heatmap and layer sweep


# --------------------------------------------------------------------------- selection / evaluation split

_BODIES = ["x + {t}", "x * {t}", "x - {t}", "{t} * x + 1", "x * x + {t}", "(x + {t}) * 2", "x / ({t} + 1)", "{t} - x"]


def _parallel_corpus(tasks: int = 8) -> list[Snippet]:
    """`tasks` tiny tasks, each in Python, Go and Java."""
    out = []
    for t in range(tasks):
        body = _BODIES[t % len(_BODIES)].format(t=t)
        out += [Snippet(f"t{t}/python", "python", f"t{t}", f"def f{t}(x):\n    return {body}\n"),
                Snippet(f"t{t}/go", "go", f"t{t}", f"func F{t}(x int) int {{\n\treturn {body}\n}}\n"),
                Snippet(f"t{t}/java", "java", f"t{t}", f"class S{t} {{\n    int f(int x) {{ return {body}; }}\n}}\n")]
    return out


def test_evaluation_programs_do_not_move_concept_layers_or_centring_means(tiny_llama, tmp_path):
    corpus = _parallel_corpus()
    split = split_corpus(corpus)
    held = {s.task for s in split.evaluation}
    assert 0 < len(held) < 8
    note = {"python": "# a note\n", "go": "// a note\n", "java": "// a note\n"}
    changed = [replace(s, code=s.code + note[s.lang]) if s.task in held else s for s in corpus]
    assert split_corpus(changed).selection == split.selection  # only evaluation programs differ
    store = open_store(tmp_path)  # one cache: a layer report keyed on anything beyond the selection would be a second
    given = CLONE_EVAL.get(tiny_llama, corpus, cache=store)  # concept layer: the layer report's rule
    again = CLONE_EVAL.get(tiny_llama, changed, cache=store)
    assert given.concept_layers == again.concept_layers and given.layer == again.layer
    from neuro.results.layers import LAYER_REPORT
    reports = store.entries(LAYER_REPORT.kind)
    assert len(reports) == 1 and reports[0]["meta"]["meta"]["snippets"] == len(split.selection)
    a, b = split_embeddings(tiny_llama, corpus, cache=store), split_embeddings(tiny_llama, changed, cache=store)
    rows = a.evaluation_rows
    assert np.abs(a.pooled[rows] - b.pooled[rows]).max() > 1e-3  # the evaluation programs' states did change
    for layer in range(tiny_llama.n_layers):
        mean_a, mean_b = a.centering(a.pooled[:, layer]), b.centering(b.pooled[:, layer])
        assert set(mean_a.language_means) == {"python", "go", "java"}  # >= 5 programs each on the selection side
        np.testing.assert_allclose(mean_a.corpus_mean, mean_b.corpus_mean, rtol=1e-5, atol=1e-6)
        for lang, mean in mean_a.language_means.items():
            np.testing.assert_allclose(mean, mean_b.language_means[lang], rtol=1e-5, atol=1e-6)
        everything = lambda x: x.pooled[:, layer].mean(0)  # noqa: E731  (a mean fitted on the whole corpus)
        assert np.abs(everything(a) - everything(b)).max() > 1e-4


def test_clone_evaluation_queries_and_candidates_are_evaluation_programs(tiny_llama, tmp_path):
    corpus = _parallel_corpus()
    split = split_corpus(corpus, SplitParams(eval_fraction=0.4, seed=3))
    store = open_store(tmp_path)
    result = CLONE_EVAL.get(tiny_llama, corpus, layer=1, split=split.params, cache=store)
    assert result.meta["split"] == split.summary() and result.meta["evaluated_programs"] == len(split.evaluation)
    # Reference from the definitions: Java / Python / Go means of the selection programs, applied to the
    # evaluation programs, which alone are queries and candidates.
    pooled = POOLED.get(tiny_llama, corpus, cache=store)[:, 1]
    selected = {s.id for s in split.selection}
    means = {lang: pooled[[i for i, s in enumerate(corpus) if s.lang == lang and s.id in selected]].mean(0)
             for lang in ("python", "go", "java")}
    rows = [i for i, s in enumerate(corpus) if s.id not in selected]
    assert [corpus[i] for i in rows] == split.evaluation
    vectors = np.stack([unit_rows(pooled[i][None], means[corpus[i].lang])[0] for i in rows])
    key = ["setting", "query_lang", "candidate_lang"]
    expected = retrieval_table(vectors, split.evaluation).set_index(key)
    got = result.scores[result.scores.method == "chosen layer"].set_index(key)
    assert set(got.index) == set(expected.index)
    for column in ("map_at_r", "recall_at_1", "queries"):
        np.testing.assert_allclose(got.loc[expected.index, column], expected[column], rtol=1e-5)
    assert got.loc[("all-language", "all", "all"), "queries"] == len(split.evaluation)
    tfidf = retrieval_table(tfidf_vectors(split.evaluation, fit_on=split.selection), split.evaluation).set_index(key)
    got = result.scores[result.scores.method == "token TF-IDF"].set_index(key)
    np.testing.assert_allclose(got.loc[tfidf.index, "map_at_r"], tfidf["map_at_r"], rtol=1e-6)
    with pytest.raises(ValueError, match="no two evaluation programs share a task"):
        CLONE_EVAL.get(tiny_llama, SNIPPETS, layer=1, split=SplitParams(seed=2), cache=store)  # only "sum" held out


# --------------------------------------------------------------------------- why a hit is a hit

def test_same_task_ranks_by_hand():
    from neuro.analysis.clones.explain import MODEL, TFIDF, rank_of, same_task_ranks, top_hits

    # Programs 0..6; the query is program 0 (its own copy), task "a".
    snippets = [Snippet("a/python", "python", "a", "pa"), Snippet("b/python", "python", "b", "pb"),
                Snippet("c/python", "python", "c", "pc"), Snippet("a/go", "go", "a", "ga"),
                Snippet("b/go", "go", "b", "gb"), Snippet("a/java", "java", "a", "ja"),
                Snippet("b/java", "java", "b", "jb")]
    model = np.array([1.0, 0.9, 0.2, 0.5, 0.7, 0.8, 0.1])
    tfidf = np.array([1.0, 0.1, 0.3, 0.6, 0.2, 0.05, 0.4])
    assert rank_of(model, 3, np.ones(7, bool)) == 5  # 1.0, 0.9, 0.7, 0.8 are higher
    assert rank_of(model, 3, np.array([0, 0, 0, 1, 1, 0, 0], bool)) == 2
    cross = np.array([s.lang != "python" for s in snippets])  # "other languages only"
    ranks = {(r.method, r.lang): r for r in same_task_ranks({MODEL: model, TFIDF: tfidf}, snippets, "a", cross, own=0)}
    assert set(ranks) == {(m, lang) for m in (MODEL, TFIDF) for lang in ("go", "java")}  # own copy: no python row
    # Model: go's a (0.5) is below go's b (0.7): rank 2 of 2 in Go; among the 4 candidates 0.8, 0.7 are higher.
    assert (ranks[MODEL, "go"].rank_in_language, ranks[MODEL, "go"].language_programs) == (2, 2)
    assert (ranks[MODEL, "go"].rank_among_candidates, ranks[MODEL, "go"].candidates) == (3, 4)
    assert (ranks[MODEL, "java"].rank_in_language, ranks[MODEL, "java"].rank_among_candidates) == (1, 1)
    assert (ranks[TFIDF, "go"].rank_in_language, ranks[TFIDF, "go"].rank_among_candidates) == (1, 1)
    assert (ranks[TFIDF, "java"].rank_in_language, ranks[TFIDF, "java"].rank_among_candidates) == (2, 4)
    assert ranks[TFIDF, "java"].score == pytest.approx(0.05)
    # A query that is no corpus program but is declared task "a": Python's a is ranked among all 3 Python programs.
    declared = {(r.method, r.lang): r for r in same_task_ranks({MODEL: model}, snippets, "a", np.ones(7, bool))}
    assert declared[MODEL, "python"].rank_in_language == 1 and declared[MODEL, "python"].language_programs == 3
    assert declared[MODEL, "go"].rank_among_candidates == 5
    assert [h.id for h in top_hits(tfidf, snippets, cross, 2)] == ["a/go", "b/java"]
    assert top_hits(tfidf, snippets, np.zeros(7, bool), 3) == []


def test_explanation_of_a_corpus_program(tiny_llama, snippets, tmp_path):
    from neuro.analysis.clones.explain import MODEL, OWN_PROGRAM_MESSAGE, TFIDF
    from neuro.results.clones import explain_search

    store = open_store(tmp_path)
    index = build_index(tiny_llama, snippets, cache=store)
    query = snippets[3]  # rev/python, with its whitespace changed: still the corpus program
    code = "  " + query.code.replace("\n", "\n\n").replace("    ", "\t") + "\n"
    result = explain_search(index, snippets, code, k=len(snippets), cache=store)
    assert (result.task, result.task_source, result.own_id) == ("rev", "corpus program", "rev/python")
    assert OWN_PROGRAM_MESSAGE.format(id="rev/python", lang="python") in result.notes
    exact = explain_search(index, snippets, query.code, k=len(snippets), cache=store)
    # An exact copy: its own program first, similarity 1 at every layer and under TF-IDF.
    assert exact.hits[MODEL][0].id == "rev/python" and exact.hits[MODEL][0].score == pytest.approx(1, abs=1e-4)
    assert exact.hits[TFIDF][0].id == "rev/python" and exact.hits[TFIDF][0].score == pytest.approx(1, abs=1e-5)
    np.testing.assert_allclose(exact.similarity.of("rev/python"), 1.0, atol=1e-4)
    assert exact.similarity.values.shape[1] == tiny_llama.n_layers and exact.similarity.layer == index.layer
    # The index's layer of the per-layer similarities is the index's score for every hit.
    for hit in exact.hits[MODEL]:
        assert exact.similarity.of(hit.id)[index.layer] == pytest.approx(hit.score, abs=1e-4)
    # Every layer, independently: an index of that layer's states (its own centring) scores the query the same way.
    pooled, states = POOLED.get(tiny_llama, snippets, cache=store), pooled_states(
        tiny_llama, [Snippet("q", "python", "q", query.code)])[0]
    for layer in range(tiny_llama.n_layers):
        scores = {h.id: h.score for h in VectorIndex(pooled[:, layer], snippets).search_vector(
            states[layer], k=len(snippets), lang="python")}
        for id in exact.similarity.ids:
            assert exact.similarity.of(id)[layer] == pytest.approx(scores[id], abs=1e-4)
    # Same-task ranks: Go's and Java's rev (Python's is the query itself), against the index's own ranking and
    # TF-IDF fitted on the selection side as the evaluation fits it.
    assert {(r.method, r.lang) for r in exact.ranks} == {(m, lang) for m in (MODEL, TFIDF) for lang in ("go", "java")}
    selection = split_corpus(snippets).selection
    tfidf = tfidf_vectors([*snippets, Snippet("q", "python", "q", query.code)], fit_on=selection)
    tfidf_scores = (tfidf[:-1] @ tfidf[-1].T).toarray().ravel()
    for r in exact.ranks:
        if r.method == MODEL:
            order = [h.id for h in index.search(query.code, k=len(snippets), languages=[r.lang])]
            everywhere = [h.id for h in index.search(query.code, k=len(snippets))]
        else:
            order = sorted((s.id for s in snippets if s.lang == r.lang), key=lambda i: -tfidf_scores[
                [s.id for s in snippets].index(i)])
            everywhere = [h.id for h in exact.hits[TFIDF]]
            assert r.score == pytest.approx(tfidf_scores[[s.id for s in snippets].index(r.id)], abs=1e-5)
        assert r.rank_in_language == order.index(r.id) + 1 and r.language_programs == len(order)
        assert r.rank_among_candidates == everywhere.index(r.id) + 1 and r.candidates == len(snippets)
    assert set(exact.similarity.ids) >= {"rev/go", "rev/java"}
    assert [s for i, s in zip(exact.similarity.ids, exact.similarity.same_task) if s] == [True, True]  # not its own
    frame = exact.rank_frame()
    assert list(frame.language) == ["java", "go"] and f"concept layer {index.layer}: rank in language" in frame
    assert "Task rev:" in exact.describe() and "java at rank" in exact.describe()
    summary = exact.summary()
    assert summary["hits"][0]["id"] == "rev/python" and summary["baseline_hits"][0]["id"] == "rev/python"
    assert len(summary["same_task_ranks"]) == 4
    assert len(summary["layer_similarity"]["rows"]) == len(exact.similarity.ids)
    json.dumps(summary)
    # Cross-language: the same candidates for both methods.
    cross = explain_search(index, snippets, query.code, k=3, cross_language=True, cache=store)
    assert all(h.lang != "python" for m in (MODEL, TFIDF) for h in cross.hits[m]) and cross.candidates == 4


def test_explanation_with_an_unknown_or_given_task(tiny_llama, snippets, tmp_path):
    from neuro.analysis.clones.explain import MODEL, TASK_NOT_IN_CORPUS_MESSAGE, UNKNOWN_TASK_MESSAGE
    from neuro.results.clones import explain_search

    index = build_index(tiny_llama, snippets, cache=tmp_path)
    code = "def plus(x, y):\n    return x + y  # not in the corpus\n"
    unknown = explain_search(index, snippets, code, k=3, cache=tmp_path)
    assert unknown.task is None and unknown.own_id is None and unknown.ranks == []
    assert UNKNOWN_TASK_MESSAGE in unknown.notes and unknown.describe() == UNKNOWN_TASK_MESSAGE
    assert len(unknown.hits[MODEL]) == 3 and len(unknown.similarity.ids) >= 3 and not any(unknown.similarity.same_task)
    given = explain_search(index, snippets, code, task="add", k=3, cache=tmp_path)
    assert given.task_source == "given" and {r.lang for r in given.ranks} == {"python", "go", "java"}
    assert next(r for r in given.ranks if r.lang == "python").language_programs == 3  # no own copy to leave out
    missing = explain_search(index, snippets, code, task="sort", k=3, cache=tmp_path)
    assert missing.ranks == [] and TASK_NOT_IN_CORPUS_MESSAGE.format(task="sort") in missing.notes


def test_cli_search_explains(folder, capsys):
    (folder / "q.py").write_text(SNIPPETS[3].code)
    code = main(["clones", "search", "--code-file", str(folder / "q.py"), "-k", "3", "--cross-language",
                 "--model", str(folder / "model"), "--corpus", str(folder / "corpus.jsonl"),
                 "--cache", str(folder / "cache"), "--json"])
    result = json.loads(capsys.readouterr().out)
    assert code == 0 and result["task"] == "rev" and result["own_program"] == "rev/python"
    assert len(result["hits"]) == 3 and len(result["baseline_hits"]) == 3
    assert {(r["method"], r["lang"]) for r in result["same_task_ranks"]} == {
        (m, lang) for m in ("model", "tfidf") for lang in ("go", "java")}
    rows = result["layer_similarity"]["rows"]
    assert all(len(r["similarity"]) == 3 for r in rows) and {"rev/go", "rev/java"} <= {r["id"] for r in rows}
    (folder / "other.py").write_text("def plus(x, y):\n    return x + y\n")
    code = main(["clones", "search", "--code-file", str(folder / "other.py"), "--task", "add", "--model",
                 str(folder / "model"), "--corpus", str(folder / "corpus.jsonl"), "--cache", str(folder / "cache"),
                 "--json"])
    result = json.loads(capsys.readouterr().out)
    assert code == 0 and result["task_source"] == "given" and len(result["same_task_ranks"]) == 6


def test_page_explains_its_default_example(folder, monkeypatch):
    at = _clones_page(folder, monkeypatch)
    assert not at.exception, at.exception
    # The default: the first task every language has ("add"), in Python, its task known.
    assert at.text_area(key="clones_code").value == SNIPPETS[0].code and at.selectbox(key="clones_task").value == "add"
    model_hits, tfidf_hits, ranks = (at.dataframe[i].value for i in range(3))
    assert list(tfidf_hits.columns) == list(model_hits.columns) and "python" not in set(tfidf_hits.language)
    assert list(ranks.language) == ["java", "go"] and "token TF-IDF: rank in language" in ranks.columns
    assert any(m.value.startswith("Task add:") for m in at.markdown)
    layer_chart = next(json.loads(c.proto.spec) for c in at.get("vega_lite_chart")
                       if "Similarity to the query at every layer" in c.proto.spec)
    rows = layer_chart["layer"][0]["encoding"]["y"]
    # every program's row keeps its label (Vega dropped every other one when they overlapped)
    assert rows["axis"]["labelOverlap"] is False and layer_chart["height"] == {"step": 18}
    assert len(set(rows["sort"])) == len(rows["sort"]) >= 2  # one labelled row per program, in rank order
    at.selectbox(key="clones_example_lang").set_value("go").run()
    assert at.text_area(key="clones_code").value == SNIPPETS[1].code  # add/go
    at.selectbox(key="clones_example_task").set_value("rev").run()
    assert at.text_area(key="clones_code").value == SNIPPETS[4].code and at.selectbox(key="clones_task").value == "rev"
    assert list(at.dataframe[2].value.language) == ["java", "python"]  # the corpus order of languages
    at.text_area(key="clones_code").set_value("def plus(x, y):\n    return x + y\n").run()
    assert at.selectbox(key="clones_task").value == "auto"
    assert any("task is unknown" in c.value for c in at.caption)


def test_no_real_program_is_called_prose():
    """The prose rule's false-positive side: every program of the demo corpus and, where present, HumanEval-X
    looks like code."""
    from neuro.code.corpus import load_jsonl
    from neuro.code.syntax import detect_language, not_code_share
    from neuro.paths import DEMO_CORPUS_FILE

    programs = load_jsonl(DEMO_CORPUS_FILE)
    if HUMANEVAL_X.exists():
        programs += load_humaneval_x(HUMANEVAL_X)
    flagged = [s.id for s in programs if not_code_share(detect_language(s.code)) is not None]
    assert not flagged
