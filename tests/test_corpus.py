"""Corpus loaders: JSONL schema, folders of sources, HumanEval-X files, clear errors."""

import gzip
import json

import pytest
from conftest import HUMANEVAL_X

from neuro.code.corpus import (
    CorpusError,
    Snippet,
    corpus_hash,
    first_sentence,
    load_corpus,
    load_folder,
    load_jsonl,
    normalize_lang,
    save_jsonl,
)


def test_normalize_lang():
    assert [normalize_lang(x) for x in ("C++", "js", "Golang", "PY", "Java")] == \
        ["cpp", "javascript", "go", "python", "java"]
    with pytest.raises(CorpusError, match="supported"):
        normalize_lang("cobol")


def test_jsonl_roundtrip_and_errors(tmp_path, snippets):
    path = tmp_path / "c.jsonl"
    save_jsonl(snippets, path)
    assert load_jsonl(path) == snippets
    assert load_corpus(path) == snippets
    assert corpus_hash(snippets) == corpus_hash(load_jsonl(path))
    assert corpus_hash(snippets) != corpus_hash(snippets[::-1])
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "lang": "python", "code": "x"}\n{not json}\n')
    with pytest.raises(CorpusError, match=":2"):
        load_jsonl(bad)
    bad.write_text('{"id": "a", "lang": "python"}\n')
    with pytest.raises(CorpusError, match="code"):
        load_jsonl(bad)
    bad.write_text('{"id": "a", "lang": "python", "code": "x"}\n{"id": "a", "lang": "go", "code": "y"}\n')
    with pytest.raises(CorpusError, match="duplicate"):
        load_jsonl(bad)


def test_folder_loader(tmp_path):
    (tmp_path / "sort").mkdir()
    (tmp_path / "sort" / "a.py").write_text("def a(): pass\n")
    (tmp_path / "sort" / "a.go").write_text("package main\n")
    (tmp_path / "notes.txt").write_text("not code")
    (tmp_path / "bin.js").write_bytes(b"\xff\xfe\x00")
    got = load_folder(tmp_path)
    assert {(s.lang, s.task) for s in got} == {("python", "sort/a"), ("go", "sort/a")}
    assert load_corpus(tmp_path) == got
    with pytest.raises(CorpusError):
        load_folder(tmp_path / "sort" / "..nothing")


def test_humaneval_x_row_shape(tmp_path):
    row = {"task_id": "Go/7", "prompt": "import (\n    \"strings\"\n)\n\n// Return the string in upper case.\n"
           "// >>> Up(\"a\")\nfunc Up(s string) string {\n", "canonical_solution": "    return strings.ToUpper(s)\n}\n",
           "test": "func TestUp(t *testing.T) {}\n",
           "docstring": "// Return the string in upper case.\n// >>> Up(\"a\")\n"}
    with gzip.open(tmp_path / "humaneval_go.jsonl.gz", "wt") as fh:
        fh.write(json.dumps(row) + "\n")
    [s] = load_corpus(tmp_path)
    assert (s.id, s.lang, s.task) == ("humaneval_7/go", "go", "humaneval_7")
    assert s.summary == "Return the string in upper case."
    assert s.test.startswith("package main") and "TestUp" in s.test
    assert s.code.endswith("strings.ToUpper(s)\n}\n")


def test_first_sentence():
    assert first_sentence('  Check if two numbers are close.\n  >>> f(1)\n') == "Check if two numbers are close."
    assert first_sentence("/* Return x. More text. */") == "Return x."


@pytest.mark.skipif(not HUMANEVAL_X.is_dir(), reason="../shared/data/humaneval-x is not present")
def test_real_humaneval_x():
    snippets = load_corpus(HUMANEVAL_X)
    assert len(snippets) == 820
    by_lang = {}
    for s in snippets:
        by_lang.setdefault(s.lang, set()).add(s.task)
    assert set(by_lang) == {"cpp", "java", "python", "go", "javascript"}
    assert all(len(tasks) == 164 for tasks in by_lang.values())
    assert sum(bool(s.summary) for s in snippets) >= 800


def test_unknown_corpus_spec():
    with pytest.raises(CorpusError):
        load_corpus("./does/not/exist.jsonl")


def test_snippet_is_immutable():
    s = Snippet("a", "python", "t", "x")
    with pytest.raises(AttributeError):
        s.code = "y"
