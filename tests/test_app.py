"""The app shell under Streamlit's AppTest, on a tiny model saved to a folder."""

import html
import json
import re

import pytest
from conftest import open_page
from streamlit.testing.v1 import AppTest

from neuro.paths import REPO_DIR

APP = REPO_DIR / "app.py"


@pytest.fixture(scope="module")
def app_env(tiny_env):
    return tiny_env("app")


def _run(monkeypatch, app_env, **env):
    monkeypatch.setenv("NEURO_MODEL", str(app_env / "model"))
    monkeypatch.setenv("NEURO_CORPUS", str(app_env / "corpus.jsonl"))
    monkeypatch.setenv("NEURO_CACHE", str(app_env / "cache"))
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return AppTest.from_file(str(APP), default_timeout=120).run()


def test_home_renders_model_summary(monkeypatch, app_env):
    at = _run(monkeypatch, app_env)
    assert not at.exception
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Layers"] == "3"
    assert metrics["Neurons per layer"] == "48"
    assert metrics["Programs"] == "7"
    assert not at.warning


def test_bad_model_path_gives_a_message(monkeypatch, app_env):
    at = _run(monkeypatch, app_env, NEURO_MODEL=str(app_env / "missing" / "model"))
    assert not at.exception
    assert any("does not exist" in w.value for w in at.warning)


def _neurons(monkeypatch, app_env):
    monkeypatch.setenv("NEURO_MODEL", str(app_env / "model"))
    monkeypatch.setenv("NEURO_CORPUS", str(app_env / "corpus.jsonl"))
    monkeypatch.setenv("NEURO_CACHE", str(app_env / "cache"))
    at = AppTest.from_file(str(APP), default_timeout=180)
    at.switch_page("views/neurons.py")
    return at.run()


def test_neurons_page_end_to_end(monkeypatch, app_env):
    at = _neurons(monkeypatch, app_env)
    assert not at.exception, at.exception
    assert len(at.get("vega_lite_chart")) == 1  # only the open tab runs: the layer map
    assert any(m.label == "universal" for m in at.metric)
    at.session_state["tab"] = "Neuron detail"
    at.run()
    assert not at.exception, at.exception
    assert any("its own page" in i.value for i in at.info)  # the detail moved to the Neuron page (test_neuron_page)
    at.session_state["tab"] = "Ablation"
    at.run()
    at.number_input(key="ablation_draws").set_value(3)
    at.number_input(key="ablation_uniform").set_value(2).run()
    at.button(key="run_ablation").click().run()
    assert not at.exception, at.exception
    summaries = [d.value for d in at.dataframe if "effect (nats) [95 % CI]" in getattr(d.value, "columns", [])]
    assert summaries and set(summaries[0].index) <= {"python", "go", "java", "universal"}
    assert "matched mean (3 draws)" in summaries[0].columns and "p matched (Holm)" in summaries[0].columns
    at.session_state["tab"] = "Token inspector"
    at.run()
    assert at.session_state["tab"] == "Token inspector"
    at.text_area(key="inspect_code").set_value("def twice(x):\n    return 2 * x\n").run()
    assert not at.exception
    htmls = [h.proto.body for h in at.get("html")]
    text = lambda h: html.unescape(re.sub("<[^>]+>", "", h))  # noqa: E731
    assert any(text(h).strip() == "def twice(x):\n    return 2 * x" and "rgba(" in h for h in htmls)
    assert at.selectbox(key="inspect_lang").value == "python" and not at.warning
    at.number_input(key="inspect_layer").set_value(2)
    at.number_input(key="inspect_neuron").set_value(5).run()
    at.text_area(key="inspect_code").set_value("def thrice(x):\n    return 3 * x\n").run()
    # editing the code keeps the chosen layer and neuron (they were reset on every edit)
    assert at.number_input(key="inspect_layer").value == 2 and at.number_input(key="inspect_neuron").value == 5
    assert any("Neuron L2 N5" in c.value for c in at.caption)
    at.text_area(key="inspect_code").set_value("The quick brown fox jumps over the lazy dog. It was a nice day.").run()
    assert not at.exception
    assert any("does not look like code" in w.value for w in at.warning)  # prose: said, not a silent "java"
    assert at.number_input(key="inspect_layer").value == 2




def test_layers_page(monkeypatch, app_env):
    # split seed 2 evaluates the task "sum" and leaves two parallel tasks to choose concept layers on
    at = open_page(monkeypatch, app_env, "views/layers.py", split_seed=2)
    assert not at.exception, at.exception
    assert len(at.get("vega_lite_chart")) == 2  # the scores chart and the pair heatmap
    scores = json.loads(at.get("vega_lite_chart")[0].proto.spec)
    lines = next(layer for layer in scores["layer"] if layer["mark"]["type"] == "line")
    assert lines["encoding"]["y"]["field"] == "raw" and "normalized" not in lines["title"]  # raw by default
    at.toggle(key="layers_normalize").set_value(True).run()
    scores = json.loads(at.get("vega_lite_chart")[0].proto.spec)
    lines = next(layer for layer in scores["layer"] if layer["mark"]["type"] == "line")
    assert lines["encoding"]["y"]["field"] == "value" and "normalized" in lines["title"]
    assert any("Concept layers" in m.value for m in at.markdown)
    override = next(m for m in at.multiselect if m.key.startswith("concept_override|"))  # keyed by model+corpus
    override.set_value([1]).run()
    assert any("Concept layers: [1]" in m.value for m in at.markdown)
    at.session_state["tab"] = "Logit lens"
    at.run()
    assert not at.exception, at.exception
    assert len(at.get("vega_lite_chart")) == 3  # accuracy and loss per layer, the token x layer grid
    _assert_tokens_in_position_order(at)
    at.text_area(key="lens_code").set_value("def count(words):\n    return len(words.split())\n").run()
    _assert_tokens_in_position_order(at)  # a second program: its own tokens, by position (the axis was stale)
    table = at.dataframe[0].value
    assert list(table.layer) == [0, 1, 2] and table["agrees with output"].iloc[-1] == 1.0
    at.text_area(key="lens_code").set_value("").run()
    assert any("Paste a program" in i.value for i in at.info)


def _assert_tokens_in_position_order(at) -> None:
    grid = json.loads(at.get("vega_lite_chart")[-1].proto.spec)
    for layer in grid["layer"]:
        order = layer["encoding"]["x"]["sort"]
        positions = [int(label.split(" ", 1)[0]) for label in order]
        assert positions == sorted(positions) and positions[0] == 0, order
        assert all(label.split(" ", 1)[1].strip() for label in order), order  # whitespace tokens drawn visibly
    assert grid["width"] == {"step": 56} and grid["height"] == {"step": 30}  # readable cells; the grid scrolls



def test_embeddings_page(monkeypatch, app_env):
    at = open_page(monkeypatch, app_env, "views/embeddings.py")
    assert not at.exception, at.exception
    charts = at.get("vega_lite_chart")
    assert len(charts) == 2
    at.toggle(key="emb_center").set_value(True).run()
    assert not at.exception, at.exception
    titles = [json.loads(c.proto.spec).get("title") for c in at.get("vega_lite_chart")]
    assert len(titles) == 2 and all("mean removed" in str(t) for t in titles), titles
    at.radio(key="emb_color").set_value("task").run()
    chosen = at.multiselect(key="emb_tasks").value
    spec = json.loads(at.get("vega_lite_chart")[0].proto.spec)
    color = spec["encoding"]["color"]
    # each chosen task its own colour, the rest one grey "other tasks", a legend, the language as the shape
    assert color["scale"]["domain"] == [*chosen, "other tasks"] and "legend" not in color
    assert len(set(color["scale"]["range"])) == len(chosen) + 1
    assert spec["encoding"]["shape"]["field"] == "language"


def test_a_cache_that_cannot_be_written_is_said_on_theopen_page(monkeypatch, app_env, tmp_path, mounted):
    """Fault: the app's cache folder is a read-only bind mount: the page still renders, and says above
    it that results are computed but not kept (not only in the server's log)."""
    src, ro = tmp_path / "src", tmp_path / "ro"
    src.mkdir()
    ro.mkdir()
    mounted("--bind", str(src), str(ro))
    mounted("-o", "remount,bind,ro", str(ro))
    at = _run(monkeypatch, app_env, NEURO_CACHE=str(ro))
    assert not at.exception
    warnings = [w.value for w in at.warning]
    assert any("Results are not being kept" in w and "Read-only file system" in w for w in warnings), warnings
    healthy = _run(monkeypatch, app_env)
    assert not any("Results are not being kept" in w.value for w in healthy.warning)


def test_page_state_is_kept_per_model_and_corpus():
    """The Layers page's concept layers for one model and corpus are not seen with another model or
    another corpus, and are found again when switching back."""
    def script():
        from types import SimpleNamespace

        import streamlit as st

        from conftest import SNIPPETS
        from views.ui.state import scoped_state

        a, b = SimpleNamespace(identity="llama@aaaa"), SimpleNamespace(identity="llama@bbbb")
        if "step" not in st.session_state:
            st.session_state.step = 0
            scoped_state(a, SNIPPETS).concept_layers = [2, 3]
        st.write(repr([scoped_state(a, SNIPPETS).concept_layers, scoped_state(b, SNIPPETS).concept_layers,
                       scoped_state(a, SNIPPETS[:-1]).concept_layers]))

    at = AppTest.from_function(script).run()
    at.run()  # a rerun keeps the state
    assert not at.exception
    assert at.markdown[0].value == repr([[2, 3], None, None])


def _cache_files(cache) -> set:
    """Results in the cache; the weight-digest memo is not one (it is written whenever hashing the weights took
    longer than the racy window, i.e. depending on how busy the machine is)."""
    from neuro.model.identity import DIGEST_MEMO

    return {p for p in cache.rglob("*") if p.is_file() and p.name != DIGEST_MEMO} if cache.exists() else set()


def test_home_leads_with_the_findings_without_computing(monkeypatch, app_env, tmp_path):
    """The Overview says what was found from the cache only: with nothing cached, each line says which page
    computes it and links there; once the Neurons page's statistics and chance level are cached, the counts
    appear beside their chance level, and the page still computes nothing."""
    from neuro.analysis.selectivity import SelectionParams
    from neuro.code.corpus import load_corpus
    from neuro.code.split import split_corpus
    from neuro.model.loading import load_model
    from neuro.results.statistics import CHANCE, STATS

    cache = tmp_path / "cache"
    at = _run(monkeypatch, app_env, NEURO_CACHE=str(cache))
    assert not at.exception, at.exception
    assert [s.value for s in at.subheader][0] == "What was found"
    texts = [m.value for m in at.markdown]
    for title in ("Language-specific neurons", "Universal neurons", "Where they sit", "Language family tree",
                  "Concept layers", "Clone detection"):
        line = next(t for t in texts if t.startswith(f"**{title}.**"))
        assert "Not computed yet" in line, line
    links = {(link.value, link.proto.page, link.proto.query_string) for link in at.page_link}
    assert ("Neurons · Layer map", "neurons", "tab=Layer+map") in links, links
    assert ("Neurons · Language relations", "neurons", "tab=Language+relations") in links
    assert ("Layers · Layer scores", "layers", "tab=Layer+scores") in links
    assert ("Clones · Evaluation", "clones", "tab=Evaluation") in links
    assert _cache_files(cache) == set()  # the page computed nothing
    assert {m.label: m.value for m in at.metric}["Layers"] == "3"  # the model summary is still there

    loaded = load_model(app_env / "model")
    selection = split_corpus(load_corpus(str(app_env / "corpus.jsonl"))).selection
    STATS.get(loaded, selection, cache=cache)
    CHANCE.get(loaded, selection, method="pls", params=SelectionParams(), cache=cache)
    kept = _cache_files(cache)
    at = _run(monkeypatch, app_env, NEURO_CACHE=str(cache))
    assert not at.exception, at.exception
    texts = [m.value for m in at.markdown]
    specific = next(t for t in texts if t.startswith("**Language-specific neurons.**"))
    assert re.search(r"\d+ of 144 FFN neurons \(\d+\.\d\d %\)", specific) and "chance" in specific, specific
    assert "mean" in specific and "max" in specific
    assert any(t.startswith("**Language family tree.** PLS profiles") for t in texts)
    assert "Not computed yet" in next(t for t in texts if t.startswith("**Concept layers.**"))
    assert _cache_files(cache) == kept
    print("\n".join(t for t in texts if t.startswith("**")))
