"""The app in a real browser: every page loads, charts render, the token inspector colours tokens, the
Clones page finds clones of pasted code, and a fine-tuning job started from the page runs to the end."""

from __future__ import annotations

import time

import pytest

from tests.browser.conftest import BUSY, screenshot

PAGES = ["", "neurons", "neuron?layer=7&neuron=541", "steering", "layers", "embeddings", "clones", "finetune",
         "transfer", "jobs"]


def settle(page, quiet_s: float = 1.5, timeout_s: float = 600) -> None:
    """Wait until Streamlit has finished running the script: no running indicator and no stale element
    (left from the previous run, not yet replaced) for `quiet_s`."""
    page.wait_for_selector("h1")  # every page starts with a title: the script has started
    deadline, calm_since = time.time() + timeout_s, None
    while time.time() < deadline:
        if page.locator(BUSY).count() > 0:
            calm_since = None
        elif calm_since is None:
            calm_since = time.time()
        elif time.time() - calm_since > quiet_s:
            return
        time.sleep(0.25)
    raise TimeoutError("the app kept running")


def assert_no_exception(page) -> None:
    boxes = page.locator('[data-testid="stException"]')
    assert boxes.count() == 0, boxes.first.inner_text()


@pytest.mark.parametrize("path", PAGES)
def test_every_page_loads(page, app_url, path):
    page.goto(f"{app_url}/{path}")
    settle(page)
    assert_no_exception(page)
    assert page.locator("h1").count() >= 1
    screenshot(page, f"page-{path.split('?')[0] or 'overview'}")


def test_neurons_heatmap_and_token_inspector(page, app_url):
    page.goto(f"{app_url}/neurons")
    settle(page)
    page.wait_for_selector('[data-testid="stVegaLiteChart"] canvas, [data-testid="stVegaLiteChart"] svg')
    assert_no_exception(page)
    screenshot(page, "neurons-layer-map")
    page.get_by_role("tab", name="Token inspector").click()
    area = page.locator("textarea").first
    area.fill("def add_one(values):\n    return [v + 1 for v in values]\n")
    area.press("Control+Enter")
    inspected = page.locator("pre", has_text="add_one")  # the rerun with the pasted code has rendered
    inspected.first.wait_for()
    settle(page)
    spans = inspected.first.locator('span[title*="|"]')
    assert spans.count() >= 5
    styles = [spans.nth(i).get_attribute("style") for i in range(spans.count())]
    assert any("rgba(" in s and not s.startswith("background:rgba(220,50,47,0.00)") for s in styles)
    screenshot(page, "neurons-token-inspector")
    layer = page.get_by_label("Layer", exact=True)
    layer.fill("2")
    layer.press("Enter")
    settle(page)
    area.fill("package main\n\nfunc AddTwo(values []int) []int {\n\treturn values\n}\n")  # another language
    area.press("Control+Enter")
    page.locator("pre", has_text="AddTwo").first.wait_for()
    settle(page)
    assert layer.input_value() == "2"  # an edit of the code keeps the chosen layer (it was reset on every edit)
    assert page.get_by_text("Neuron L2 N").count() >= 1
    page.get_by_role("button", name="Intervene on L2 N").click()  # same page: the tab moves, the neuron is set
    settle(page)
    assert_no_exception(page)
    assert page.get_by_role("tab", name="Intervene").get_attribute("aria-selected") == "true"
    assert "tab=Intervene" in page.url
    screenshot(page, "neurons-intervene")


def test_clones_page_finds_pasted_code(page, app_url):
    from neuro.code.corpus import load_corpus

    java = next(s for s in load_corpus(None) if s.lang == "java")  # the served slice holds the first tasks
    page.goto(f"{app_url}/clones")
    settle(page)
    area = page.locator("textarea").first
    area.fill(java.code)
    area.press("Control+Enter")
    page.get_by_text("Query language: java").wait_for()
    settle(page)
    assert_no_exception(page)
    # the hits' expanders (not the sidebar's split settings nor the example picker)
    hits = (page.locator('[data-testid="stExpander"]')
            .filter(has_not=page.get_by_text("Selection / evaluation split"))
            .filter(has_not=page.get_by_text("Pick an example from the corpus")))
    assert hits.count() >= 5  # other languages only by default: at least one program per other language
    first = hits.first.inner_text()
    assert "#1" in first and "java" not in first.split("\n")[0]  # cross-language hits by default
    screenshot(page, "clones-hits")


def test_finetune_job_from_the_page_runs_to_the_end(page, app_url):
    page.goto(f"{app_url}/finetune")
    settle(page)
    steps = page.get_by_role("spinbutton", name="Steps", exact=True)
    steps.fill("6")
    steps.press("Enter")
    settle(page)
    page.get_by_role("button", name="Start fine-tuning").click()
    page.get_by_text("Started job").first.wait_for()  # one job per method and seed
    # the live panel polls the job folder: first a progress bar, then the finished run's table
    page.get_by_text("Losses: mean next-token cross-entropy").wait_for(timeout=300_000)
    assert_no_exception(page)
    screenshot(page, "finetune-finished")
    page.goto(f"{app_url}/jobs")
    page.locator('[data-testid="stMetricValue"]', has_text="finished").first.wait_for()  # the job's state
    assert_no_exception(page)
    screenshot(page, "jobs")


def test_embeddings_with_each_language_mean_removed(page, app_url):
    page.goto(f"{app_url}/embeddings")
    settle(page)
    page.get_by_text("Remove each language's mean").click()
    page.get_by_text("each language's mean removed").first.wait_for(timeout=300_000)  # the charts' new titles
    settle(page)
    assert_no_exception(page)
    assert page.locator('[data-testid="stVegaLiteChart"]').count() == 2
    screenshot(page, "embeddings-centred")


def test_a_deep_link_opened_first_on_a_fresh_server_goes_through_the_router(page, tmp_path):
    """A shared link (a page and its tab in the URL) may be the first request a server sees: it must get
    the app's navigation and page config, not the page file run on its own."""
    from tests.browser.conftest import serve_app

    with serve_app(tmp_path) as url:
        page.goto(f"{url}/layers")
        settle(page)
        assert_no_exception(page)
        nav = page.locator('[data-testid="stSidebarNav"]').inner_text()
        assert "Overview" in nav and "Fine-tuning" in nav, nav  # the router's titles, not file names
        assert "finetune" not in nav and "embeddings" not in nav, nav  # (icon names such as "home" are text too)


def test_logit_lens_tab(page, app_url):
    page.goto(f"{app_url}/layers?tab=Logit+lens")
    settle(page)
    assert_no_exception(page)
    page.get_by_text("Each layer's top-1 next token").first.wait_for()
    assert page.locator('[data-testid="stVegaLiteChart"]').count() == 3
    area = page.locator("textarea").first
    area.fill("package main\n\nfunc Twice(x int) int {\n\treturn 2 * x\n}\n")
    area.press("Control+Enter")
    page.locator('[data-testid="stVegaLiteChart"]').first.wait_for()
    settle(page)
    assert_no_exception(page)
    assert page.locator('[data-testid="stDataFrame"]').count() == 1  # the per-layer table
    screenshot(page, "layers-logit-lens")
