"""The app in a real browser: every page loads, charts render, the token inspector colours tokens."""

from __future__ import annotations

import time

import pytest

from .conftest import screenshot

PAGES = ["", "neurons", "layers", "embeddings", "clones"]


def settle(page, quiet_s: float = 1.5, timeout_s: float = 600) -> None:
    """Wait until Streamlit has finished running the script (its status widget stays gone)."""
    page.wait_for_selector("h1")  # every page starts with a title: the script has started
    deadline, calm_since = time.time() + timeout_s, None
    while time.time() < deadline:
        running = page.locator('[data-testid="stStatusWidget"]').count() > 0
        if running:
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
    screenshot(page, f"page-{path or 'overview'}")


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
