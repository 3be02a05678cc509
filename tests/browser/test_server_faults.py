"""Fault: SIGKILL of a real app server (`streamlit run`, driven by Chromium) while a page computes. The
finished chunks stay in the cache, and a new server's first view of the page resumes from them and
renders its chart."""

from __future__ import annotations

import os
import signal
import time

from conftest import SNIPPETS, tiny_model
from test_faults import SLOW_CAPTURE, _computed, _env, _prefix_chunks

from neuro.code.corpus import save_jsonl
from neuro.results import open_store
from neuro.results.statistics import STATS
from tests.browser.conftest import start_server, stop_server
from tests.browser.test_browser import assert_no_exception, settle

SERVER_DRIVER = SLOW_CAPTURE + """
from streamlit.web import cli
sys.argv = ["streamlit", "run", *sys.argv[1:]]
sys.exit(cli.main())
"""
CHART = '[data-testid="stVegaLiteChart"] canvas, [data-testid="stVegaLiteChart"] svg'


def test_sigkill_of_the_server_while_a_page_computes(page, tmp_path):
    loaded = tiny_model("llama")
    loaded.model.save_pretrained(tmp_path / "model")
    loaded.tokenizer.save_pretrained(tmp_path / "model")
    save_jsonl(SNIPPETS, tmp_path / "corpus.jsonl")
    cache, log = tmp_path / "cache", tmp_path / "computed.txt"
    app_env = dict(NEURO_MODEL=str(tmp_path / "model"), NEURO_CORPUS=str(tmp_path / "corpus.jsonl"),
                   NEURO_CACHE=str(cache))

    server, url = start_server(tmp_path, _env(1, 2.0, log, **app_env), SERVER_DRIVER)
    try:
        page.goto(f"{url}/neurons")
        deadline = time.time() + 240
        while not _prefix_chunks(cache) and server.poll() is None and time.time() < deadline:
            time.sleep(0.1)
        assert server.poll() is None, (tmp_path / "server.log").read_text()[-2000:]
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()
    finally:
        stop_server(server)
    assert _prefix_chunks(cache) and not open_store(cache).entries(STATS.kind)  # kept, and nothing half-written
    first = _computed(log)
    log.unlink()

    server, url = start_server(tmp_path, _env(1, 0.0, log, **app_env), SERVER_DRIVER)
    try:
        page.goto(f"{url}/neurons")
        settle(page)
        page.wait_for_selector(CHART)
        assert_no_exception(page)
    finally:
        stop_server(server)
    resumed = _computed(log)
    assert first[0] == ["0"] and resumed and resumed[0] != ["0"]  # the finished chunk was not recomputed
    assert len(open_store(cache).entries(STATS.kind)) == 1 and not _prefix_chunks(cache)
