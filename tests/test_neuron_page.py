"""The Neuron page under AppTest: opened by URL for any neuron, bad URLs, links into it (table rows, layer map,
token inspector, the old Neuron detail tab) and out of it (the token inspector preset), its charts' specs."""

import json
from urllib.parse import parse_qs

import pytest
from conftest import SNIPPETS, open_page
from streamlit.testing.v1 import AppTest

from neuro.paths import REPO_DIR

APP = REPO_DIR / "app.py"
PAGE = "views/neuron.py"


@pytest.fixture(scope="module")
def app_env(tiny_env):
    return tiny_env("neuron_page")




def _specs(at) -> list[dict]:
    return [json.loads(c.proto.spec) for c in at.get("vega_lite_chart")]


def _title(spec) -> str:
    title = spec.get("title", "")
    return title.get("text", "") if isinstance(title, dict) else str(title)


def _links(at) -> list[tuple[str, dict]]:
    return [(p.proto.page, {k: v[0] for k, v in parse_qs(p.proto.query_string).items()}) for p in at.page_link]


def test_url_opens_any_neuron_with_every_section(monkeypatch, app_env):
    at = open_page(monkeypatch, app_env, PAGE, {"layer": "2", "neuron": "40"})
    assert not at.exception, at.exception
    assert [h.value for h in at.header] == ["Layer 2, neuron 40"]
    assert any(m.value.startswith("**Not selected**") for m in at.markdown)  # a neuron the selection leaves out
    assert (at.number_input(key="neuron_layer").value, at.number_input(key="neuron_index").value) == (2, 40)
    specs = {_title(s): s for s in _specs(at)}
    assert "PLS (scaled per language and layer) per language" in specs  # the title names the score shown
    assert {"Promoted next tokens", "Suppressed next tokens"} <= set(specs)
    hist = next(s for t, s in specs.items() if t.startswith("L2 N40: activation per language"))
    assert hist["encoding"]["x"]["title"] == "activation"
    assert hist["encoding"]["y"]["title"] == "share of the language's tokens"
    low, high = hist["encoding"]["x"]["scale"]["domain"]  # the data's range (tests/test_chart_order.py: exact)
    assert low < high and hist["encoding"]["color"]["scale"]["domain"] == ["python", "go", "java"]
    shaded = [h.proto.body for h in at.get("html") if "outline:2px" in h.proto.body]
    assert shaded and all(h.count("<span") > 3 for h in shaded)  # every token of each context is shaded
    # ablating it alone: the cost said first, then a table per language
    assert any("2 forward passes" in c.value for c in at.caption)
    assert any(c.value.startswith("Cost: one plain and one ablated pass: 2 passes over 3 programs · about ")
               for c in at.caption)
    at.button(key="neuron_ablate").click().run()
    assert not at.exception, at.exception
    table = next(d.value for d in at.dataframe if "loss change (nats)" in d.value.columns)
    assert set(table.language) <= {"python", "go", "java"} and len(table)
    # the bars' title follows the score shown
    at.radio(key="neuron_score").set_value("attribution").run()
    assert "attribution (scaled per language and layer) per language" in {_title(s) for s in _specs(at)}
    at.radio(key="neuron_scale").set_value("none").run()
    assert "attribution (raw) per language" in {_title(s) for s in _specs(at)}
    # changing the neuron writes the URL
    at.number_input(key="neuron_index").set_value(41).run()
    assert at.query_params["neuron"] == ["41"] or at.query_params["neuron"] == "41"
    assert [h.value for h in at.header] == ["Layer 2, neuron 41"]


@pytest.mark.parametrize("query, message", [
    ({"layer": "x", "neuron": "3"}, "layer 'x' is not a whole number"),
    ({"layer": "9", "neuron": "0"}, "layer 9 does not exist: this model has layers 0 to 2"),
    ({"layer": "1", "neuron": "48"}, "neuron 48 does not exist"),
    ({"layer": "1"}, "has no neuron"),
])
def test_bad_url_gives_a_message(monkeypatch, app_env, query, message):
    at = open_page(monkeypatch, app_env, PAGE, query)
    assert not at.exception, at.exception
    assert any(message in e.value for e in at.error), [e.value for e in at.error]
    assert len(at.header) == 1  # still a page: the pickers' neuron is shown


def test_table_row_opens_the_neuron_of_that_row(monkeypatch, app_env):
    """The bug: a click on L7 N786 opened L0 N22 (a row's position taken in the wrong table). With a filter on,
    the clicked position differs from the position in the whole table."""
    at = open_page(monkeypatch, app_env, "views/neurons.py", {"tab": "Neuron table"}, neurons_top=0.1)
    assert not at.exception, at.exception
    at.slider(key="table_layers").set_value((1, 2)).run()
    shown = next(d.value for d in at.dataframe if "neuron" in d.value.columns and "cls" in d.value.columns)
    assert len(shown) >= 2 and shown.layer.min() >= 1
    row = shown.iloc[1]
    at.session_state["table_pick"] = {"selection": {"rows": [1], "columns": [], "cells": []}}
    at.run()
    assert not at.exception, at.exception
    assert [h.value for h in at.header] == [f"Layer {row.layer}, neuron {row.neuron}"]


def test_links_into_the_page(monkeypatch, app_env):
    at = open_page(monkeypatch, app_env, "views/neurons.py", {"tab": "Layer map"}, neurons_top=0.1)
    assert not at.exception, at.exception
    links = [q for page, q in _links(at) if page.endswith("neuron")]
    assert links and all(set(q) == {"layer", "neuron"} for q in links)
    at.selectbox(key="map_layer").set_value(1).run()
    assert any(q["layer"] == "1" for page, q in _links(at) if page.endswith("neuron"))
    for group in ("universal", "python"):  # a click on a cell lists that cell's neurons
        at.session_state["map_cell"] = {"selection": {"cell": [{"layer": 2, "group": group}]}}
        at.run()
        assert not at.exception, at.exception
        assert at.selectbox(key="map_layer").value == 2
        assert any(f"layer 2 ({group})" in c.value for c in at.caption), [c.value for c in at.caption]
        listed = [p.proto.label for p in at.page_link if p.proto.label.startswith("L2 N")]
        assert all(label.endswith(f"({group})") for label in listed), listed
    # the old tab still lands somewhere sensible
    at.query_params["tab"] = "Neuron detail"
    at.session_state["tab"] = "Neuron detail"
    at.run()
    assert not at.exception, at.exception
    assert any("its own page" in i.value for i in at.info)
    assert any(page.endswith("neuron") for page, _ in _links(at))
    # the token inspector links the neuron it shows
    at.query_params["tab"] = "Token inspector"
    at.session_state["tab"] = "Token inspector"
    at.run()
    at.number_input(key="inspect_neuron").set_value(7).run()
    layer = at.number_input(key="inspect_layer").value
    assert ("neuron", {"layer": str(layer), "neuron": "7"}) in [(p.rsplit("/", 1)[-1], q) for p, q in _links(at)]


def test_open_in_token_inspector_presets_the_neuron(monkeypatch, app_env):
    at = open_page(monkeypatch, app_env, PAGE, {"layer": "1", "neuron": "5"})
    assert not at.exception, at.exception
    at.button(key="neuron_ctx_0").click().run()  # the first top context's program
    assert not at.exception, at.exception
    assert at.session_state["tab"] == "Token inspector"
    assert (at.number_input(key="inspect_layer").value, at.number_input(key="inspect_neuron").value) == (1, 5)
    code = at.text_area(key="inspect_code").value
    assert any(s.code == code for s in SNIPPETS)


def test_intervene_buttons_open_the_intervene_tab_on_the_neuron(monkeypatch, app_env):
    at = open_page(monkeypatch, app_env, PAGE, {"layer": "1", "neuron": "5"})
    at.button(key="neuron_intervene").click().run()
    assert not at.exception, at.exception
    assert at.session_state["tab"] == "Intervene" and at.radio(key="iv_which").value == "one"
    assert (at.number_input(key="iv_layer").value, at.number_input(key="iv_neuron").value) == (1, 5)
    at.query_params["tab"] = "Token inspector"
    at.session_state["tab"] = "Token inspector"
    at.switch_page("views/neurons.py")  # AppTest reruns the page it was told to, not the one switched to
    at.run()
    at.number_input(key="inspect_layer").set_value(2)
    at.number_input(key="inspect_neuron").set_value(3).run()
    inspected = at.text_area(key="inspect_code").value
    at.button(key="inspect_intervene").click().run()  # from the token inspector, with its code
    assert not at.exception, at.exception
    assert at.session_state["tab"] == "Intervene"
    assert (at.number_input(key="iv_layer").value, at.number_input(key="iv_neuron").value) == (2, 3)
    assert at.text_area(key="iv_code").value == inspected


# --------------------------------------------------------------------------- chart specs
def test_histogram_chart_axes_and_domain_come_from_the_data():
    import numpy as np

    from neuro.instrument.histogram import ActivationHistogram
    from views.ui.charts import activation_histogram

    edges = np.array([-1.5, -0.5, 0.5, 1.5, 2.5])
    hist = ActivationHistogram(2, 7, ["go", "python"], edges, np.array([[1, 0, 3, 0], [0, 2, 2, 4]]),
                               np.array([-1.2, -0.1]), np.array([0.9, 2.2]))
    spec = activation_histogram(hist.frame(), title="t").to_dict()
    x, y = spec["encoding"]["x"], spec["encoding"]["y"]
    assert (x["field"], x["title"], x["scale"]["domain"]) == ("low", "activation", [-1.5, 2.5])
    assert x["scale"]["nice"] is False and spec["encoding"]["x2"]["field"] == "high"
    assert (y["field"], y["title"], y["stack"]) == ("share", "share of the language's tokens", None)
    assert spec["encoding"]["color"]["scale"]["domain"] == ["go", "python"]  # the data's order, a legend on
    rows = next(iter(spec["datasets"].values()))
    assert sum(r["share"] for r in rows if r["language"] == "go") == pytest.approx(1.0)
    assert [r["count"] for r in rows if r["language"] == "python"] == [0, 2, 2, 4]


def test_token_effect_bars_keep_the_ranked_order_and_show_whitespace():
    import pandas as pd

    from views.ui.charts import token_effects

    frame = pd.DataFrame({"token": [" x", "\n", "y"], "logit": [0.9, 0.5, 0.1]})
    spec = token_effects(frame).to_dict()
    assert spec["encoding"]["y"]["sort"] == ["1. ' x'", "2. '\\n'", "3. 'y'"]
    assert spec["encoding"]["x"]["title"] == "logit change per unit of activation"


def test_browse_only_shows_the_statistics_and_says_what_needs_the_weights(app_env, monkeypatch):
    """Cached results only (no weights): scores and syntax from the cache, the rest says it needs the weights."""
    import shutil

    from neuro.code.split import split_corpus
    from neuro.model.cards import list_cards
    from neuro.model.loading import load_model
    from neuro.results.statistics import STATS
    from neuro.results.store import Store

    box, home = app_env / "box", app_env / "laptop"  # a "GPU box" computes; the "laptop" gets its cache only
    shutil.copytree(app_env / "model", box / "model")
    STATS.fetch(load_model(box / "model"), split_corpus(SNIPPETS).selection, cache=Store(box / "cache"))
    shutil.copytree(box / "cache", home / "cache")
    shutil.rmtree(box)
    monkeypatch.setenv("NEURO_MODEL", str(list_cards(home / "cache")[0].folder))
    monkeypatch.setenv("NEURO_CORPUS", str(app_env / "corpus.jsonl"))
    monkeypatch.setenv("NEURO_CACHE", str(home / "cache"))
    at = AppTest.from_file(str(APP), default_timeout=300)
    at.query_params.update({"layer": "1", "neuron": "3"})
    at.switch_page(PAGE)
    at.run()
    assert not at.exception, at.exception
    assert [h.value for h in at.header] == ["Layer 1, neuron 3"]
    assert any("per language" in _title(s) for s in _specs(at))
    assert any("read this model's weights" in i.value for i in at.info)
