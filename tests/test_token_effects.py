"""The token-level intervention view: backend on the planted model (known effects), the `intervene` command
and the Neurons page's Intervene tab."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest
from test_app import APP, app_env  # noqa: F401 - the saved tiny model and corpus of the app tests
from test_ground_truth import PLANTED, planted_corpus, planted_model

from neuro.analysis.token_effects import intervene_tokens
from neuro.code.corpus import save_jsonl
from neuro.instrument.intervention import Intervention
from neuro.paths import REPO_DIR

PYTHON = sorted((layer, n) for lang, layer, n in PLANTED if lang == "python")


@pytest.fixture(scope="module")
def planted():
    return planted_model(), planted_corpus(programs=4)


def _code(corpus, lang):
    return next(s.code for s in corpus if s.lang == lang)


def test_zeroing_python_neurons_hurts_every_python_token_and_nothing_on_go(planted):
    loaded, corpus = planted
    effects = intervene_tokens(loaded, _code(corpus, "python"), [Intervention(PYTHON, "zero")])
    assert len(effects.loss_before) == len(effects.token_ids) - 1
    assert effects.delta[0] == 0  # the first word is predicted from the BOS, where no python neuron fires
    assert (effects.delta[1:] > 0).all()  # every later one is a python word predicted from one, its boost gone
    assert effects.summed_change == pytest.approx(effects.delta.sum()) and effects.summed_change > 0
    table = effects.table()
    assert list(table["position"]) == list(range(1, len(effects.token_ids)))
    assert table["token"].tolist() == _code(corpus, "python").split()[:len(table)]
    on_go = intervene_tokens(loaded, _code(corpus, "go"), [Intervention(PYTHON, "zero")])
    assert np.array_equal(on_go.loss_after, on_go.loss_before) and on_go.summed_change == 0  # they never fire on go
    assert on_go.changed == []


def test_no_op_gives_exactly_zero_change(planted):
    loaded, corpus = planted
    effects = intervene_tokens(loaded, _code(corpus, "java"), [Intervention(PYTHON, "scale", 1.0),
                                                               Intervention([], "zero")])
    assert effects.summed_change == 0.0 and effects.changed == []
    assert effects.labels == ["scale x1 of 2 neurons", "zero of 0 neurons"]


def test_setting_go_neurons_high_turns_predictions_to_go(planted):
    loaded, corpus = planted
    go = sorted((layer, n) for lang, layer, n in PLANTED if lang == "go")
    effects = intervene_tokens(loaded, _code(corpus, "python"), [Intervention(go, "set", 20.0)])
    assert all(t.startswith("py") for t in effects.top1_before[1:])  # [0]: the guess after the BOS
    assert all(t.startswith("go") for t in effects.top1_after)
    assert set(range(2, len(effects.token_ids))) <= set(effects.changed)


def test_refuses_empty_code(planted):
    loaded, _ = planted
    with pytest.raises(ValueError, match="no code"):
        intervene_tokens(loaded, "   ", [])


# --------------------------------------------------------------------------- CLI
@pytest.fixture(scope="module")
def planted_dir(tmp_path_factory, planted):
    loaded, corpus = planted
    folder = tmp_path_factory.mktemp("planted")
    loaded.model.save_pretrained(folder / "model")
    loaded.tokenizer.save_pretrained(folder / "model")
    save_jsonl(corpus, folder / "corpus.jsonl")
    (folder / "code.txt").write_text(_code(corpus, "python"))
    return folder


def _neuro(folder, *args):
    cmd = [sys.executable, "-m", "neuro", *args, "--model", str(folder / "model"), "--corpus",
           str(folder / "corpus.jsonl"), "--cache", str(folder / "cache"), "--json"]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=REPO_DIR, timeout=300,
                          env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"})


def test_intervene_command(planted_dir, planted):
    loaded, corpus = planted
    out = _neuro(planted_dir, "intervene", "--code-file", str(planted_dir / "code.txt"), "--neurons", "0:5,1:17",
                 "--op", "zero")
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    expected = intervene_tokens(loaded, _code(corpus, "python"), [Intervention(PYTHON, "zero")])
    assert summary["neurons"] == [[0, 5], [1, 17]]
    assert summary["summed_change"] == pytest.approx(expected.summed_change, rel=1e-5)
    assert len(summary["tokens_table"]) == len(expected.delta)
    bad = _neuro(planted_dir, "intervene", "--code-file", str(planted_dir / "code.txt"), "--neurons", "0-5",
                 "--op", "zero")
    assert bad.returncode == 2 and "LAYER:NEURON" in json.loads(bad.stdout)["error"]
    missing = _neuro(planted_dir, "intervene", "--code-file", str(planted_dir / "code.txt"), "--neurons", "0:5",
                     "--op", "scale")
    assert missing.returncode == 2 and "--value" in json.loads(missing.stdout)["error"]


# --------------------------------------------------------------------------- page
def test_intervene_tab(monkeypatch, app_env):  # noqa: F811
    monkeypatch.setenv("NEURO_MODEL", str(app_env / "model"))
    monkeypatch.setenv("NEURO_CORPUS", str(app_env / "corpus.jsonl"))
    monkeypatch.setenv("NEURO_CACHE", str(app_env / "cache"))
    at = AppTest.from_file(str(APP), default_timeout=300)
    at.switch_page("views/neurons.py")
    at.session_state["tab"] = "Intervene"
    at.run()
    assert not at.exception, at.exception
    at.radio(key="iv_which").set_value("custom").run()
    at.text_input(key="iv_custom").set_value("0:1, 2:3").run()
    at.selectbox(key="iv_op").set_value("scale").run()
    at.number_input(key="iv_factor").set_value(1.0).run()
    assert not at.exception, at.exception
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Summed loss change (nats)"] == "+0.000"  # scale 1: nothing changes
    at.number_input(key="iv_factor").set_value(50.0).run()
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Summed loss change (nats)"] != "+0.000"
    table = next(d.value for d in at.dataframe if "top-1 after" in d.value.columns)
    assert len(table) > 3 and float(table["change"].abs().sum()) > 0
    assert any("rgba(" in h.proto.body for h in at.get("html"))
    # "mean" says its cost and waits for the click
    at.selectbox(key="iv_op").set_value("mean").run()
    assert any("forward pass" in c.value for c in at.caption)
    assert any(c.value.startswith("Cost: the mean activations: 1 pass over ") and " · about " in c.value
               for c in at.caption)
    at.button(key="iv_means").click().run()
    assert not at.exception, at.exception
    assert any(m.label == "Summed loss change (nats)" for m in at.metric)
    at.text_input(key="iv_custom").set_value("0:x").run()
    assert any("LAYER:NEURON" in e.value for e in at.error)
