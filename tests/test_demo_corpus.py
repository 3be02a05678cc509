"""The embedded demo corpus: parallel, well-formed, and every program passes its own test."""

from __future__ import annotations

import json
from collections import defaultdict

import pytest

from neuro.code.corpus import LANGS, Snippet, load_jsonl
from neuro.code.sandbox import run_snippet, toolchains
from neuro.code.syntax import parse_errors
from neuro.paths import DEMO_CORPUS_FILE

SNIPPETS = load_jsonl(DEMO_CORPUS_FILE)
BY_TASK: dict[str, dict[str, Snippet]] = defaultdict(dict)
for _s in SNIPPETS:
    BY_TASK[_s.task][_s.lang] = _s


def test_size_and_parallelism():
    assert len(BY_TASK) >= 60
    incomplete = {task: sorted(set(LANGS) - set(langs)) for task, langs in BY_TASK.items() if set(langs) != set(LANGS)}
    assert not incomplete, f"tasks missing languages: {incomplete}"
    assert len(SNIPPETS) == len(BY_TASK) * len(LANGS)  # no task has two programs in one language


def test_ids_unique():
    with open(DEMO_CORPUS_FILE, encoding="utf-8") as fh:
        ids = [json.loads(line)["id"] for line in fh if line.strip()]
    assert len(ids) == len(set(ids)) == len(SNIPPETS)


def test_summaries_present_and_shared_across_languages():
    for task, programs in BY_TASK.items():
        summaries = {s.summary for s in programs.values()}
        assert len(summaries) == 1 and summaries.pop().strip(), f"{task}: summaries differ or are empty"


def test_every_snippet_has_a_test():
    assert [s.id for s in SNIPPETS if not (s.test or "").strip()] == []


def test_every_program_parses():
    broken = [s.id for s in SNIPPETS if parse_errors(s.code, s.lang) != 0]
    assert broken == [], f"tree-sitter finds errors in {broken}"


@pytest.mark.parametrize("lang", LANGS)
def test_every_program_passes_its_test(lang):
    if not toolchains()[lang]:
        pytest.skip(f"no {lang} toolchain here")
    failures = []
    for snippet in (s for s in SNIPPETS if s.lang == lang):  # one compile and one run per program
        result = run_snippet(snippet, timeout=20)
        if not result.passed:
            tail = (result.stderr or result.stdout).strip().splitlines()[-5:]
            failures.append(f"{snippet.id}: {result.status}: {result.reason}\n    " + "\n    ".join(tail))
    assert not failures, f"{len(failures)} {lang} program(s) fail their own test:\n" + "\n".join(failures)
