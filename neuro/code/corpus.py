"""Code corpora: the `Snippet` schema and loaders (JSONL, source folders, HumanEval-X, the hub)."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

from neuro import atomic

LANGS: tuple[str, ...] = ("cpp", "java", "python", "go", "javascript")

_ALIASES = {
    "c++": "cpp", "cpp": "cpp", "cxx": "cpp", "cc": "cpp",
    "java": "java",
    "python": "python", "py": "python", "python3": "python",
    "go": "go", "golang": "go",
    "javascript": "javascript", "js": "javascript", "node": "javascript", "ecmascript": "javascript",
}

EXTENSIONS = {
    ".cpp": "cpp", ".cc": "cpp", ".cxx": "cpp", ".hpp": "cpp", ".hh": "cpp", ".h": "cpp",
    ".java": "java",
    ".py": "python",
    ".go": "go",
    ".js": "javascript", ".mjs": "javascript", ".cjs": "javascript",
}


class CorpusError(ValueError):
    """A corpus that cannot be loaded; the message says why and what to do."""


@dataclass(frozen=True)
class Snippet:
    """One program of a corpus. `task` groups parallel programs (the same task in several languages).

    `prompt` (optional) is the prefix a model completes when generating (HumanEval-X: signature and
    docstring); without it, generation derives one from the code's first function (see generation.py).
    """

    id: str
    lang: str
    task: str
    code: str
    summary: str = ""
    test: str | None = None
    prompt: str | None = None

    def to_json(self) -> dict:
        return asdict(self)


def normalize_lang(name: str) -> str:
    """Map a language name or alias ("C++", "js", "golang") to one of LANGS."""
    key = str(name).strip().lower()
    if key not in _ALIASES:
        raise CorpusError(f"unknown language {name!r}; supported: {', '.join(LANGS)}")
    return _ALIASES[key]


def corpus_hash(snippets: Iterable[Snippet]) -> str:
    """Content hash of a corpus (order-sensitive): the cache key of everything computed on it."""
    h = hashlib.sha256()
    for s in snippets:
        h.update(json.dumps([s.id, s.lang, s.task, s.code], ensure_ascii=False).encode())
    return h.hexdigest()[:16]


def by_language(snippets: Iterable[Snippet]) -> dict[str, list[Snippet]]:
    out: dict[str, list[Snippet]] = {}
    for s in snippets:
        out.setdefault(s.lang, []).append(s)
    return {lang: out[lang] for lang in LANGS if lang in out}


def _open_text(path: Path):
    return gzip.open(path, "rt", encoding="utf-8") if path.suffix == ".gz" else open(path, encoding="utf-8")


def load_jsonl(path: str | Path) -> list[Snippet]:
    """Snippet JSONL: one object per line with id, lang, task, code and optional summary, test."""
    path = Path(path)
    snippets, seen = [], set()
    with _open_text(path) as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise CorpusError(f"{path}:{lineno}: not valid JSON ({err.msg})") from None
            missing = [k for k in ("lang", "code") if not row.get(k)]
            if missing:
                raise CorpusError(f"{path}:{lineno}: missing field(s) {', '.join(missing)}")
            lang = normalize_lang(row["lang"])
            sid = str(row.get("id") or f"{lineno}/{lang}")
            if sid in seen:
                raise CorpusError(f"{path}:{lineno}: duplicate id {sid!r}")
            seen.add(sid)
            snippets.append(Snippet(
                id=sid, lang=lang, task=str(row.get("task") or sid), code=row["code"],
                summary=row.get("summary") or "", test=row.get("test"), prompt=row.get("prompt"),
            ))
    if not snippets:
        raise CorpusError(f"{path}: no snippets")
    return snippets


def save_jsonl(snippets: Iterable[Snippet], path: str | Path) -> None:
    with atomic.replacing(Path(path)) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        for s in snippets:
            row = {k: v for k, v in s.to_json().items() if not (k == "prompt" and v is None)}
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")


def load_folder(folder: str | Path, max_bytes: int = 200_000) -> list[Snippet]:
    """Every source file under `folder` whose extension names one of the five languages.

    The task of a file is its path relative to `folder` without the extension, so `sort/a.py` and
    `sort/a.go` are parallel. Files that are not UTF-8 or larger than `max_bytes` are skipped.
    """
    folder = Path(folder)
    snippets = []
    for path in sorted(folder.rglob("*")):
        lang = EXTENSIONS.get(path.suffix.lower())
        if lang is None or not path.is_file() or path.stat().st_size > max_bytes:
            continue
        try:
            code = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        if not code.strip():
            continue
        rel = path.relative_to(folder)
        task = str(rel.with_suffix(""))
        snippets.append(Snippet(id=f"{rel}", lang=lang, task=task, code=code))
    if not snippets:
        raise CorpusError(f"{folder}: no source files in C++, Java, Python, Go or JavaScript")
    return snippets


_HEX_LANG = {"cpp": "cpp", "go": "go", "java": "java", "js": "javascript", "python": "python"}

_HEX_FILE = re.compile(r"humaneval_(cpp|go|java|js|python)\.jsonl(\.gz)?$")


def first_sentence(text: str) -> str:
    """The first sentence of a docstring, without comment markers or examples."""
    lines: list[str] = []
    for raw in text.splitlines():
        line = raw.strip().lstrip("/*#").strip().rstrip("*/").strip()
        if line.startswith(">>>") or line.lower().startswith(("example", "for example")):
            break
        if not line:
            if lines:
                break
            continue
        lines.append(line)
    joined = " ".join(lines).strip().strip('"').strip()
    match = re.search(r"^(.+?[.!?])(\s|$)", joined)
    return (match.group(1) if match else joined).strip()


def _docstring(lang: str, row: dict) -> str:
    if lang == "go" and row.get("docstring"):
        return row["docstring"]
    if lang == "java" and row.get("text"):
        return row["text"]
    prompt = row.get("prompt", "")
    if lang == "python":
        match = re.search(r'("""|\'\'\')(.*?)(\1)', prompt, re.S)
        return match.group(2) if match else ""
    match = re.search(r"/\*(.*?)\*/", prompt, re.S)
    return match.group(1) if match else ""


def humaneval_row_to_snippet(lang_key: str, row: dict) -> Snippet:
    lang = _HEX_LANG[lang_key]
    number = str(row["task_id"]).split("/")[-1]
    task = f"humaneval_{number}"
    test = row.get("test", "")
    if lang == "go":
        test = (row.get("test_setup") or "package main\n\nimport (\n    \"testing\"\n"
                "    \"github.com/stretchr/testify/assert\"\n)\n") + "\n" + test
    return Snippet(
        id=f"{task}/{lang}", lang=lang, task=task,
        code=row["prompt"] + row["canonical_solution"],
        summary=first_sentence(_docstring(lang, row)), test=test, prompt=row["prompt"],
    )


def load_humaneval_x(folder: str | Path, languages: Iterable[str] = LANGS) -> list[Snippet]:
    """HumanEval-X from `humaneval_<lang>.jsonl(.gz)` files (the layout of THUDM/humaneval-x)."""
    folder = Path(folder)
    wanted = {normalize_lang(x) for x in languages}
    files: dict[str, Path] = {}
    for path in sorted(folder.rglob("*")):
        match = _HEX_FILE.search(path.name)
        if match and _HEX_LANG[match.group(1)] in wanted:
            files.setdefault(match.group(1), path)
    if not files:
        raise CorpusError(f"{folder}: no humaneval_<lang>.jsonl(.gz) files")
    snippets = []
    for key in ("cpp", "java", "python", "go", "js"):
        if key in files:
            with _open_text(files[key]) as fh:
                snippets += [humaneval_row_to_snippet(key, json.loads(line)) for line in fh if line.strip()]
    return snippets


def load_humaneval_x_from_hub(repo_id: str = "THUDM/humaneval-x", offline: bool | None = None) -> list[Snippet]:
    """HumanEval-X from the Hugging Face hub (or its local cache when offline)."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    if offline is None:
        offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false")
    try:
        folder = snapshot_download(repo_id, repo_type="dataset", local_files_only=offline,
                                   allow_patterns=["*.jsonl", "*.jsonl.gz", "*.parquet"])
    except LocalEntryNotFoundError:
        raise CorpusError(f"dataset {repo_id!r} is not in the local Hugging Face cache and the hub "
                          "is offline; pass a folder of humaneval_<lang>.jsonl(.gz) files instead") from None
    except Exception as err:  # network errors differ by version; the message is what matters
        raise CorpusError(f"could not fetch dataset {repo_id!r} from the hub: {err}") from None
    return load_humaneval_x(folder)


def load_corpus(spec: str | Path | None = None) -> list[Snippet]:
    """Load a corpus from a JSONL file, a folder (HumanEval-X files or source files) or a hub id.

    `None` or "demo" means the embedded demo corpus.
    """
    from neuro.paths import DEMO_CORPUS_FILE

    if spec is None or str(spec) == "demo":
        if not DEMO_CORPUS_FILE.is_file():
            raise CorpusError("the embedded demo corpus is missing from this checkout")
        return load_jsonl(DEMO_CORPUS_FILE)
    path = Path(spec).expanduser()
    if path.is_file():
        if hex_file := _HEX_FILE.search(path.name):
            key = hex_file.group(1)
            with _open_text(path) as fh:
                return [humaneval_row_to_snippet(key, json.loads(line)) for line in fh if line.strip()]
        return load_jsonl(path)
    if path.is_dir():
        if any(_HEX_FILE.search(p.name) for p in path.iterdir()):
            return load_humaneval_x(path)
        return load_folder(path)
    if str(spec).count("/") == 1 and not str(spec).startswith((".", "/", "~")):
        return load_humaneval_x_from_hub(str(spec))
    raise CorpusError(f"corpus {str(spec)!r} is not a file, a folder or a hub dataset id")
