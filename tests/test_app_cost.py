"""Cost before compute on the pages (AppTest): each button that starts work says what it costs (passes and a
basis) before it is clicked; a long analysis runs as a background job whose result the page picks up; Clones
has a Search button, and an uploaded file's search shows that file as the query."""

import time

import pytest
from conftest import SNIPPETS, open_page
from streamlit.testing.v1 import AppTest

from neuro.paths import REPO_DIR

APP = REPO_DIR / "app.py"
BASIS = ("measured on this machine", "rough guess")


@pytest.fixture(scope="module")
def app_env(tiny_env):
    return tiny_env("app_cost")




def costs(at) -> list[str]:
    """The cost captions on the page: each names passes over programs and the basis of its time."""
    found = [c.value for c in at.caption if c.value.startswith("Cost:")]
    for text in found:
        assert " over " in text and " program" in text and any(b in text for b in BASIS), text
    return found


def _wait_for_job(root, kind: str, timeout: float = 240.0):
    from neuro.jobs.folders import list_jobs

    deadline = time.time() + timeout
    while time.time() < deadline:
        jobs = list_jobs(root / "jobs", kind=kind)
        if jobs and not jobs[0].active:
            return jobs[0]
        time.sleep(0.5)
    raise AssertionError(f"the {kind} job did not finish in {timeout} s")


def test_ablation_says_its_cost_and_runs_as_a_background_job(monkeypatch, app_env):
    at = open_page(monkeypatch, app_env, "views/neurons.py")
    assert not at.exception, at.exception
    at.session_state["tab"] = "Ablation"
    at.run()
    at.number_input(key="ablation_draws").set_value(2)
    at.number_input(key="ablation_uniform").set_value(1).run()
    caption = next(c for c in costs(at) if "evaluation programs per ablated set" in c)
    assert "passes over" in caption
    assert not any(d for d in at.dataframe if "effect (nats) [95 % CI]" in getattr(d.value, "columns", []))
    at.toggle(key="ablation_background").set_value(True).run()
    at.button(key="run_ablation").click().run()
    assert not at.exception, at.exception
    job = _wait_for_job(app_env / "cache", "ablation")
    assert job.state == "finished", (job.state, job.error)
    at.run()  # the page picks the job's result up from the cache
    assert not at.exception, at.exception
    summaries = [d.value for d in at.dataframe if "effect (nats) [95 % CI]" in getattr(d.value, "columns", [])]
    assert summaries and "matched mean (2 draws)" in summaries[0].columns
    assert not [b for b in at.button if b.key == "run_ablation"]  # nothing left to run
    # the job recorded its pass rate: the cost is now measured on this machine
    at.number_input(key="ablation_draws").set_value(3).run()
    caption = next(c for c in costs(at) if "evaluation programs per ablated set" in c)
    assert "measured on this machine" in caption


def _query_shown(at) -> str:
    """The code under "Query": the first code block after the query's heading."""
    return at.code[0].value


def test_clones_search_button_and_an_uploaded_file_is_the_query(monkeypatch, app_env):
    at = open_page(monkeypatch, app_env, "views/clones.py")
    assert not at.exception, at.exception
    assert any("the query embedded" in c for c in costs(at))
    first = _query_shown(at)
    assert first.strip() == at.text_area(key="clones_code").value.strip()  # the page opens on its example
    # the Search button searches what the box holds
    at.session_state["clones_code"] = "def twice(x):\n    return 2 * x\n"
    at.run()
    assert _query_shown(at) == first  # not searched yet
    at.button(key="clones_search").click().run()
    assert not at.exception, at.exception
    assert _query_shown(at).strip() == "def twice(x):\n    return 2 * x"
    # an uploaded file is what the box shows and what is searched, not the pasted text
    source = b"func Mul(a int, b int) int {\n\treturn a * b\n}\n"
    at.file_uploader(key="clones_upload").set_value(("mul.go", source, "text/plain")).run()
    assert not at.exception, at.exception
    assert at.text_area(key="clones_code").value == source.decode()
    assert _query_shown(at).strip() == source.decode().strip()
    assert any("uploaded file mul.go" in c.value for c in at.caption)


def test_every_page_that_computes_says_its_cost_first(monkeypatch, app_env):
    # split seed 2 leaves two parallel tasks on the selection side (as tests/test_app.py's Layers test)
    at = open_page(monkeypatch, app_env, "views/layers.py", split_seed=2)
    assert not at.exception, at.exception
    assert any("every layer" in c and "probes" in c for c in costs(at))  # said above the computation it ran
    at.session_state["tab"] = "Logit lens"
    at.run()
    assert not at.exception, at.exception
    assert any("output head" in c for c in costs(at))
    at.switch_page("views/embeddings.py").run()
    assert not at.exception, at.exception
    umap = [c for c in costs(at) if "UMAP fits" in c]
    layers = {at.number_input(key="emb_low").value, at.number_input(key="emb_high").value}
    assert umap and f"{len(layers)} pass{'es' if len(layers) > 1 else ''} over 7 programs" in umap[0]  # one a layer
    at.switch_page("views/finetune.py").run()
    assert not at.exception, at.exception
    train = [c.value for c in at.caption if c.value.startswith("Cost:") and "training steps" in c.value]
    assert train and "100 training steps" in train[0] and "rough guess" in train[0]
    at.switch_page("views/transfer.py").run()
    assert not at.exception, at.exception
    transfer = [c.value for c in at.caption if "training steps" in c.value and "generation passes" in c.value]
    assert transfer and "150 training steps" in transfer[0]


def test_a_long_per_program_statistics_run_becomes_a_job_the_page_follows(monkeypatch, app_env, tmp_path):
    """Statistics shipped without their per-program scores (as the demo's are), and a measured rate that makes the
    recapture long: the page says the cost, offers a background job instead of computing, and shows the chance
    level the job computed once it has finished."""
    from neuro import cost
    from neuro.code.split import SplitParams, split_corpus
    from neuro.model.loading import load_model
    from neuro.results.statistics import STATS, without_units
    from neuro.results.store import Store

    loaded = load_model(str(app_env / "model"))
    selection = split_corpus(SNIPPETS, SplitParams()).selection
    full = Store(tmp_path / "full", shipped=None)
    STATS.get(loaded, selection, cache=full)
    key = STATS.key(loaded, selection)
    Store(tmp_path / "shipped", shipped=None).save(STATS.kind, key, without_units(full.load(STATS.kind, key)))
    cache = tmp_path / "cache"
    cost.record("statistics", cost.model_key(loaded), 1, 60.0, root=cache)  # a minute a program: long
    monkeypatch.setenv("NEURO_PRECOMPUTED", str(tmp_path / "shipped"))
    monkeypatch.setenv("NEURO_MODEL", str(app_env / "model"))
    monkeypatch.setenv("NEURO_CORPUS", str(app_env / "corpus.jsonl"))
    monkeypatch.setenv("NEURO_CACHE", str(cache))
    at = AppTest.from_file(str(APP), default_timeout=300)
    at.switch_page("views/neurons.py")
    at.run()
    assert not at.exception, at.exception
    assert not any(c.value.startswith("Holm p") for c in at.caption)  # no chance level yet, nothing computed
    said = [c for c in costs(at) if "forward and backward" in c]
    assert said and "measured on this machine, 1 run" in said[0] and "background job" in said[-1]
    assert not (cache / "jobs").exists()
    at.button(key="units_job").click().run()
    assert not at.exception, at.exception
    job = _wait_for_job(cache, "statistics")
    assert job.state == "finished", (job.state, job.error)
    at.run()
    assert not at.exception, at.exception
    assert any(c.value.startswith("Holm p") for c in at.caption)  # the chance level, from the job's cache entry
    assert not [b for b in at.button if b.key == "units_job"]


def test_a_cancelled_computation_is_not_restarted_by_the_rerun_the_cancel_caused(monkeypatch, app_env, tmp_path):
    """The Cancel under a long bar reruns the page (which stops the pass at its next report); that rerun must say
    so and wait for a click, not start the same work again, even where the page computes on first view."""
    monkeypatch.setenv("NEURO_MODEL", str(app_env / "model"))
    monkeypatch.setenv("NEURO_CORPUS", str(app_env / "corpus.jsonl"))
    monkeypatch.setenv("NEURO_CACHE", str(tmp_path / "cache"))  # nothing computed yet
    at = AppTest.from_file(str(APP), default_timeout=300)
    at.session_state["split_seed"] = 2
    at.session_state["layers_cancel"] = True  # the state a click on the Cancel button leaves for the rerun
    at.switch_page("views/layers.py")
    at.run()
    assert not at.exception, at.exception
    assert any(i.value.startswith("Cancelled.") for i in at.info)
    assert not at.get("vega_lite_chart")  # nothing was computed
    assert [b for b in at.button if b.key == "layers_compute"]


def test_a_cancelled_ablation_job_is_said_and_can_be_started_again(monkeypatch, app_env):
    from neuro.jobs.folders import cancel_job, list_jobs

    at = open_page(monkeypatch, app_env, "views/neurons.py")
    at.session_state["tab"] = "Ablation"
    at.run()
    at.number_input(key="ablation_draws").set_value(4)
    at.number_input(key="ablation_uniform").set_value(1).run()
    at.toggle(key="ablation_background").set_value(True).run()
    at.button(key="run_ablation").click().run()
    jobs = app_env / "cache" / "jobs"
    job = cancel_job(list_jobs(jobs, kind="ablation")[0], grace=5.0)  # at once: before its first pass ends
    assert job.state in ("cancelled", "failed"), job.state
    at.run()
    assert not at.exception, at.exception
    assert any(f"background job `{job.id}`" in w.value for w in at.warning)
    at.toggle(key="ablation_background").set_value(True).run()  # (its default follows the estimate: short here)
    at.button(key="run_ablation").click().run()  # again: a new job, which runs to the end
    again = _wait_for_job(app_env / "cache", "ablation")
    assert again.id != job.id and again.state == "finished", (again.state, again.error)
    at.run()
    summaries = [d.value for d in at.dataframe if "effect (nats) [95 % CI]" in getattr(d.value, "columns", [])]
    assert summaries and "matched mean (4 draws)" in summaries[0].columns
    assert not any("background job" in w.value for w in at.warning)
