"""A real app server on a free localhost port and Debian's Chromium driven by Playwright.

The app runs on the embedded demo model when the checkout has it (a tiny random model otherwise, so
the plumbing is still exercised). Tests skip with the reason when Chromium or Playwright is missing.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from neuro.paths import REPO_DIR, demo_corpus_available, demo_model_available

CHROMIUM = os.environ.get("NEURO_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage"]
ARTIFACTS = REPO_DIR / "cache" / "test-artifacts"
# Streamlit is still running a script: its running indicator, elements of the previous run not yet replaced,
# or a progress bar or spinner of a computation (the app removes both when it is done)
BUSY = ('[data-testid="stStatusWidget"], [data-testid="stElementContainer"][data-stale="true"], '
        '[data-testid="stProgress"], [data-testid="stSpinner"]')


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def playwright_browser():
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no Chromium at {CHROMIUM} (Debian: apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed (pip install playwright)")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS, headless=True)
        yield browser
        browser.close()


@contextlib.contextmanager
def serve_app(work: Path, embedded: bool = False):
    """`streamlit run app.py` on a free localhost port with its cache in `work`; yields the URL once the
    server answers, and stops it (and any analysis a page left running) on exit. `embedded`: the app as a
    newcomer starts it, on the embedded default (demo model and the whole demo corpus)."""
    env = dict(os.environ, NEURO_CACHE=str(work / "cache"), HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    for name in ("NEURO_MODEL", "NEURO_CORPUS"):
        env.pop(name, None)
    if embedded:
        if not (demo_model_available() and demo_corpus_available()):
            pytest.skip("the embedded demo model or corpus is not in this checkout")
    elif demo_model_available() and demo_corpus_available():
        # the embedded model on a slice of the demo corpus (10 tasks x 5 languages) keeps the analyses
        # each page starts on first view short enough for a 2-core CI machine
        from neuro.code.corpus import load_corpus, save_jsonl
        demo = load_corpus(None)
        tasks = list(dict.fromkeys(s.task for s in demo))[:10]
        save_jsonl([s for s in demo if s.task in tasks], work / "corpus.jsonl")
        env.update(NEURO_CORPUS=str(work / "corpus.jsonl"))
    else:
        sys.path.insert(0, str(REPO_DIR / "tests"))
        from conftest import SNIPPETS, tiny_model

        from neuro.code.corpus import save_jsonl
        loaded = tiny_model("llama")
        loaded.model.save_pretrained(work / "model")
        loaded.tokenizer.save_pretrained(work / "model")
        save_jsonl(SNIPPETS, work / "corpus.jsonl")
        env.update(NEURO_MODEL=str(work / "model"), NEURO_CORPUS=str(work / "corpus.jsonl"))
    proc, url = start_server(work, env)
    try:
        yield url
    finally:
        stop_server(proc)


def start_server(work: Path, env: dict, driver: str | None = None) -> tuple[subprocess.Popen, str]:
    """`streamlit run app.py` (or `python -c driver` that starts it: a server with a fault injected) on
    a free localhost port in its own process group, logging to `work/server.log`; returns once it
    answers its health check."""
    port = _free_port()
    options = ["app.py", "--server.port", str(port), "--server.headless", "true", "--server.address", "127.0.0.1"]
    if driver:
        command = [sys.executable, "-c", driver, *options]
    else:
        command = [shutil.which("streamlit", path=str(Path(sys.executable).parent)) or "streamlit", "run", *options]
    with open(work / "server.log", "a") as log:
        proc = subprocess.Popen(command, cwd=REPO_DIR, env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        try:
            if urllib.request.urlopen(url + "/_stcore/health", timeout=2).read() == b"ok":
                return proc, url
        except OSError:
            time.sleep(0.5)
    stop_server(proc)
    pytest.fail("the app did not start: " + (work / "server.log").read_text()[-2000:])


def stop_server(proc: subprocess.Popen) -> None:
    """Stop the server and any analysis a page left running."""
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, 15)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
        proc.wait()


@pytest.fixture(scope="package")
def app_url(tmp_path_factory):
    """One app server for the browser tests, stopped as soon as they are done, not at the end of the
    whole test session."""
    with serve_app(tmp_path_factory.mktemp("browser-app")) as url:
        yield url


@pytest.fixture()
def page(playwright_browser):
    context = playwright_browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(600_000)
    yield page
    context.close()


def screenshot(page, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
