"""Build, train and describe the embedded demo code model (``neuro/assets/demo_model``).

A small Llama-architecture causal LM with a byte-level BPE tokenizer, trained from scratch on real
code in five languages taken from registry packages (CPython's standard library, Debian's Go and
OpenJDK sources, libstdc++ and Boost headers, npm packages). Steps, each a subcommand::

    python -m tools.demo_model fetch-js          # npm pack the JavaScript packages
    python -m tools.demo_model build-corpus      # filter, dedupe, decontaminate, balance, split
    python -m tools.demo_model train-tokenizer   # byte-level BPE on the training split
    python -m tools.demo_model pretokenize       # uint16 token streams for training and validation
    python -m tools.demo_model train             # CPU or CUDA, time/token budget, checkpoints, resume
    python -m tools.demo_model evaluate          # per-language validation loss vs a unigram baseline
    python -m tools.demo_model check-overlap     # re-run decontamination against the excluded programs
    python -m tools.demo_model card              # README.md + metrics.json in the model folder

``all`` runs them in order. Intermediate files live in ``cache/demo_train/`` (gitignored).
"""

from __future__ import annotations

import argparse
import glob
import gzip
import hashlib
import json
import logging
import math
import os
import random
import re
import subprocess
import sys
import sysconfig
import tarfile
import time
import zipfile
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent

WORK_DIR = REPO / "cache" / "demo_train"

MODEL_DIR = REPO / "neuro" / "assets" / "demo_model"

LANGS = ("cpp", "go", "java", "javascript", "python")

BOS, EOS, PAD = "<s>", "</s>", "<pad>"

GO_SRC = Path("/usr/share/go-1.19/src")

JDK_SRC_ZIP = Path("/usr/lib/jvm/java-17-openjdk-amd64/lib/src.zip")

LIBSTDCXX = Path("/usr/include/c++/12")

BOOST = Path("/usr/include/boost")

APT_PACKAGES = ("golang-1.19-src", "openjdk-17-source", "libboost1.81-dev", "libstdc++-12-dev")

JS_PACKAGES = (  # npm specs, pinned to the versions the shipped model was built from
    "lodash@4.18.1 express@5.3.0 underscore@1.13.8 async@3.2.6 moment@2.31.0 commander@14.0.3 "
    "chalk@5.6.2 yargs@18.2.0 axios@1.21.1 acorn@8.19.0 esprima@4.0.1 escodegen@2.1.0 "
    "estraverse@5.3.0 webpack@5.112.2 eslint@10.15.0 mocha@12.0.3 bluebird@3.7.2 q@2.0.3 "
    "handlebars@4.7.10 highlight.js@11.12.0 uglify-js@3.19.3 less@4.9.1 coffeescript@2.7.1 "
    "ramda@0.32.0 immutable@5.2.1 jquery@4.0.0 mathjs@15.2.0 three@0.187.0 sequelize@6.37.8 "
    "mongoose@9.12.1 knex@3.3.0 ws@8.23.0 socket.io@4.8.4 semver@7.8.6 minimatch@11.0.9 "
    "glob@14.0.6 source-map@0.8.0 jshint@2.13.6 terser@5.51.4 node-forge@1.4.3 ajv@8.20.0 "
    "chart.js@4.6.1 d3@7.9.2 core-js@3.51.0 rxjs@7.8.2 babel-core@6.26.3 @babel/core@7.29.13 "
    "@babel/parser@7.29.15 @babel/traverse@7.29.15 @babel/generator@7.29.15 "
    "webpack-dev-server@5.2.7 typescript@7.0.2 pdfjs-dist@5.6.205 marked@18.2.1 "
    "markdown-it@15.0.3 js-yaml@5.5.0 esbuild@0.28.2 rollup@4.68.8 jsdom@29.1.1 mysql@2.18.1 "
    "pg@8.23.1 fastify@5.12.8 sinon@22.1.0 chai@6.3.0 postcss@8.5.33 stylus@0.64.0 cheerio@1.2.0 "
    "luxon@3.7.2 dayjs@1.11.23 crypto-js@4.2.0 decimal.js@10.6.0 bn.js@5.2.5 elliptic@6.6.1 "
    "koa@3.3.0 pug@3.0.4 ejs@7.0.2 nunjucks@3.2.4 jasmine-core@7.0.2 qunit@3.0.0 "
    "browserify@17.0.1 grunt@1.6.3 karma@6.4.4 gulp@5.0.1 acorn-walk@8.3.5 recast@0.23.21 "
    "esquery@1.7.0 espree@11.2.0 regenerator-runtime@0.14.1 fs-extra@11.4.1 request@2.88.2 "
    "superagent@10.4.2 xml2js@0.6.2 sax@1.6.1 jsonwebtoken@9.0.3 passport@0.7.0 body-parser@2.4.0 "
    "connect@3.7.0 angular@1.8.3 backbone@1.6.1 knockout@3.5.3 preact@11.2.0 mithril@2.3.8 "
    "leaflet@1.9.4 ol@10.11.0 phaser@4.2.1 echarts@6.1.0 fabric@7.4.0 paper@0.12.20"
).split()

# Installed PyPI packages (import names) that top up the standard library's Python (requirements.txt
# and its dependencies); each capped like an npm package.
PYPI_PACKAGES = (
    "numpy pandas scipy sklearn transformers torch streamlit altair networkx sympy jinja2 requests "
    "click pygments huggingface_hub rich jsonschema fsspec pydantic"
).split()

# Programs the model must not have seen: the project's parallel demo corpus and HumanEval-X (a local
# copy beside the repository, or pass --exclude with its files).
DEFAULT_EXCLUDE = (
    str(REPO.parent / "shared" / "data" / "humaneval-x" / "humaneval_*.jsonl.gz"),
    str(REPO / "neuro" / "assets" / "**" / "*.jsonl"),
    str(REPO / "neuro" / "assets" / "**" / "*.jsonl.gz"),
)

LICENSES = {
    "cpython-stdlib": "PSF-2.0 (Python Software Foundation License)",
    "golang-1.19-src": "BSD-3-Clause (Go license)",
    "openjdk-17-source": "GPL-2.0 with Classpath exception",
    "libstdc++-12": "GPL-3.0 with GCC Runtime Library exception",
    "boost-1.81": "BSL-1.0 (Boost Software License)",
}

GENERATED_RE = re.compile(
    r"code generated .*do not edit|do not edit|auto-?generated|automatically generated"
    r"|generated by|this file (is|was) generated",
    re.IGNORECASE,
)

SKIP_DIRS = {
    "python": {"test", "tests", "idle_test", "site-packages", "__pycache__"},
    "go": {"testdata"},
    "javascript": {"test", "tests", "__tests__", "spec", "fixtures", "node_modules", "generated",
                   "min", "umd", "bundles", "cdn"},
}

CPP_EXTS = {".h", ".hpp", ".cpp", ".cc", ".tcc", ".ipp"}

JS_EXTS = {".js", ".mjs", ".cjs"}

log = logging.getLogger("tools.demo_model")


@dataclass
class SourceFile:
    """One candidate training file."""

    lang: str
    source: str  # e.g. "cpython-stdlib", "npm:lodash"
    path: str  # relative to the source root or archive
    text: str

    @property
    def nbytes(self) -> int:
        return len(self.text.encode("utf-8"))


def decode(data: bytes) -> str | None:
    """UTF-8 text of a file, or None for binary / undecodable content."""
    if b"\x00" in data:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _skipped(rel: str, skip_dirs: set[str]) -> bool:
    return any(part in skip_dirs for part in Path(rel).parts[:-1])


def iter_python_stdlib(root: Path) -> Iterator[SourceFile]:
    """``.py`` files of the standard library, without test packages and site-packages."""
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        if _skipped(rel, SKIP_DIRS["python"]) or Path(rel).name.startswith("test_"):
            continue
        text = decode(path.read_bytes())
        if text is not None:
            yield SourceFile("python", "cpython-stdlib", rel, text)


def pypi_package_info(import_name: str) -> dict | None:
    """Distribution name, version and license of an installed package, or None."""
    import importlib.metadata as md

    dists = md.packages_distributions().get(import_name)
    if not dists:
        return None
    meta = md.metadata(dists[0])
    lic = meta.get("License-Expression")
    short = (meta.get("License") or "").strip()
    if not lic and short and "\n" not in short and len(short) <= 60:
        lic = short
    if not lic:
        classifiers = [c.split(" :: ")[-1] for c in meta.get_all("Classifier") or [] if c.startswith("License ::")]
        lic = " / ".join(classifiers) or "see package metadata"
    return {"name": dists[0], "version": meta.get("Version", "?"), "license": lic}


def iter_site_packages(site: Path, packages: Iterable[str]) -> Iterator[SourceFile]:
    """``.py`` files of installed PyPI packages (import names), without their test folders."""
    for name in packages:
        root = site / name
        info = pypi_package_info(name)
        if not root.is_dir() or info is None:
            continue
        for path in sorted(root.rglob("*.py")):
            rel = path.relative_to(site).as_posix()
            if _skipped(rel, SKIP_DIRS["python"]) or path.name.startswith("test_"):
                continue
            text = decode(path.read_bytes())
            if text is not None:
                yield SourceFile("python", f"pypi:{info['name']}", rel, text)


def iter_go_src(root: Path) -> Iterator[SourceFile]:
    """``.go`` files of the Go distribution, without ``_test.go`` and ``testdata``."""
    for path in sorted(root.rglob("*.go")):
        rel = path.relative_to(root).as_posix()
        if rel.endswith("_test.go") or _skipped(rel, SKIP_DIRS["go"]):
            continue
        text = decode(path.read_bytes())
        if text is not None:
            yield SourceFile("go", "golang-1.19-src", rel, text)


def iter_jdk_src(zip_path: Path) -> Iterator[SourceFile]:
    """``.java`` files of the OpenJDK ``src.zip``."""
    with zipfile.ZipFile(zip_path) as zf:
        for name in sorted(zf.namelist()):
            if name.endswith(".java"):
                text = decode(zf.read(name))
                if text is not None:
                    yield SourceFile("java", "openjdk-17-source", name, text)


def is_cpp_header_name(rel: str, allow_extensionless: bool) -> bool:
    """C++ source/header by extension; extension-less names only where allowed (libstdc++)."""
    suffix = Path(rel).suffix
    if suffix in CPP_EXTS:
        return True
    return allow_extensionless and suffix == "" and re.fullmatch(r"[a-z_0-9]+", Path(rel).name) is not None


def iter_cpp_headers(root: Path, source: str, allow_extensionless: bool) -> Iterator[SourceFile]:
    """C++ headers under ``root`` (libstdc++ keeps extension-less standard headers)."""
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root).as_posix()
        if is_cpp_header_name(rel, allow_extensionless):
            text = decode(path.read_bytes())
            if text is not None:
                yield SourceFile("cpp", source, rel, text)


def npm_package_info(tgz: Path) -> dict:
    """Name, version and license field of an ``npm pack`` tarball."""
    with tarfile.open(tgz) as tf:
        meta = json.load(tf.extractfile("package/package.json"))
    lic = meta.get("license") or meta.get("licenses") or "UNKNOWN"
    if isinstance(lic, dict):
        lic = lic.get("type", "UNKNOWN")
    if isinstance(lic, list):
        lic = " OR ".join(x.get("type", "?") if isinstance(x, dict) else str(x) for x in lic)
    return {"name": meta.get("name", tgz.stem), "version": meta.get("version", "?"), "license": str(lic)}


def iter_npm_tarballs(npm_dir: Path) -> Iterator[SourceFile]:
    """Plain JavaScript files of every ``*.tgz`` in ``npm_dir`` (minified files are skipped)."""
    for tgz in sorted(npm_dir.glob("*.tgz")):
        name = npm_package_info(tgz)["name"]
        with tarfile.open(tgz) as tf:
            for member in tf.getmembers():
                rel = member.name.removeprefix("package/")
                if (not member.isfile() or Path(rel).suffix not in JS_EXTS or ".min." in rel
                        or _skipped(rel, SKIP_DIRS["javascript"])):
                    continue
                text = decode(tf.extractfile(member).read())
                if text is not None:
                    yield SourceFile("javascript", f"npm:{name}", rel, text)


def iter_language(lang: str, paths: dict) -> Iterator[SourceFile]:
    """All candidate files of one language from the configured source locations."""
    if lang == "python":
        yield from iter_python_stdlib(Path(paths["python_stdlib"]))
        yield from iter_site_packages(Path(paths["site_packages"]), paths["pypi_packages"])
    elif lang == "go":
        yield from iter_go_src(Path(paths["go_src"]))
    elif lang == "java":
        yield from iter_jdk_src(Path(paths["jdk_src_zip"]))
    elif lang == "cpp":
        yield from iter_cpp_headers(Path(paths["libstdcxx"]), "libstdc++-12", allow_extensionless=True)
        yield from iter_cpp_headers(Path(paths["boost"]), "boost-1.81", allow_extensionless=False)
    elif lang == "javascript":
        yield from iter_npm_tarballs(Path(paths["npm_dir"]))
    else:
        raise ValueError(f"unknown language {lang!r}")


@dataclass
class FilterParams:
    """Thresholds for :func:`reject_reason`."""

    min_lines: int = 5
    min_bytes: int = 200
    max_bytes: int = 1_000_000
    max_line_len: int = 1000
    max_mean_line_len: float = 120.0
    header_chars: int = 2000


DEFAULT_FILTER = FilterParams()

JS_FILTER = FilterParams(max_bytes=400_000, max_line_len=400, max_mean_line_len=90.0)

BUNDLE_MARKERS = ("__webpack_require__", "/******/", "//# sourceMappingURL=data:")


def reject_reason(text: str, params: FilterParams = DEFAULT_FILTER) -> str | None:
    """Why a file is unfit for training (near-empty, huge, minified, generated), or None."""
    nbytes = len(text.encode("utf-8"))
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if len(lines) < params.min_lines or nbytes < params.min_bytes:
        return "near_empty"
    if nbytes > params.max_bytes:
        return "too_large"
    if max(len(ln) for ln in lines) > params.max_line_len:
        return "long_lines"
    if sum(len(ln) for ln in lines) / len(lines) > params.max_mean_line_len:
        return "long_lines"
    if GENERATED_RE.search(text[: params.header_chars]):
        return "generated"
    if any(marker in text for marker in BUNDLE_MARKERS):
        return "bundle"
    return None


_PARSERS: dict = {}


def has_parse_errors(text: str, lang: str) -> bool:
    """True when tree-sitter finds an ERROR or MISSING node (used for macro-heavy C++ headers)."""
    from tree_sitter import Language, Parser

    if lang not in _PARSERS:
        import importlib

        mod = importlib.import_module(f"tree_sitter_{lang}")
        _PARSERS[lang] = Parser(Language(mod.language()))
    return _PARSERS[lang].parse(text.encode("utf-8")).root_node.has_error


def normalize_lines(text: str) -> list[str]:
    """Lines with whitespace collapsed; blank and punctuation-only lines dropped."""
    out = []
    for line in text.splitlines():
        norm = " ".join(line.split())
        if any(ch.isalnum() for ch in norm):
            out.append(norm)
    return out


def _gram_hash(lines: list[str]) -> bytes:
    return hashlib.blake2b("\n".join(lines).encode("utf-8"), digest_size=12).digest()


@dataclass
class ExclusionIndex:
    """Normalized line n-grams of excluded programs; programs shorter than n count as one gram."""

    n: int = 8
    min_lines: int = 4
    grams: dict[int, set[bytes]] = field(default_factory=lambda: defaultdict(set))
    programs: int = 0

    def add(self, program: str) -> None:
        lines = normalize_lines(program)
        if len(lines) < self.min_lines:
            return
        self.programs += 1
        k = min(self.n, len(lines))
        self.grams[k].update(_gram_hash(lines[i:i + k]) for i in range(len(lines) - k + 1))

    def matches(self, text: str) -> bool:
        """True when ``text`` shares a normalized line k-gram with an excluded program."""
        lines = normalize_lines(text)
        for k, grams in self.grams.items():
            if any(_gram_hash(lines[i:i + k]) in grams for i in range(len(lines) - k + 1)):
                return True
        return False


def read_jsonl(path: Path) -> Iterator[dict]:
    """Records of a ``.jsonl`` or ``.jsonl.gz`` file (bad lines are skipped)."""
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as fh:
        for line in fh:
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(rec, dict):
                yield rec


def programs_of(record: dict) -> list[str]:
    """Program texts of a demo-corpus (``code``/``test``) or HumanEval-X record."""
    out = [record[k] for k in ("code", "test") if isinstance(record.get(k), str)]
    if isinstance(record.get("prompt"), str):
        out.append(record["prompt"] + str(record.get("canonical_solution") or ""))
    return out


def expand_globs(patterns: Iterable[str]) -> list[Path]:
    """Existing files matching the glob patterns, sorted and unique."""
    return sorted({Path(p) for pat in patterns for p in glob.glob(pat, recursive=True) if Path(p).is_file()})


def build_exclusion_index(paths: Iterable[Path], n: int = 8) -> ExclusionIndex:
    """Index every program found in the exclusion files."""
    index = ExclusionIndex(n=n)
    for path in paths:
        for rec in read_jsonl(path):
            for prog in programs_of(rec):
                index.add(prog)
    return index


def decontaminate(files: Iterable[SourceFile], index: ExclusionIndex) -> tuple[list[SourceFile], list[SourceFile]]:
    """Split files into (kept, dropped) by overlap with the excluded programs."""
    kept, dropped = [], []
    for f in files:
        (dropped if index.matches(f.text) else kept).append(f)
    return kept, dropped


def is_validation(f: SourceFile, val_frac: float, seed: int = 0) -> bool:
    """Deterministic per-file validation assignment from a hash of the file's identity."""
    digest = hashlib.sha1(f"{seed}:{f.lang}:{f.source}:{f.path}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < val_frac


def select_files(candidates: list[SourceFile], budget: int, index: ExclusionIndex, seen: set[bytes],
                 parse_check: bool, package_cap: int | None = None, seed: int = 0,
                 params: FilterParams = DEFAULT_FILTER) -> tuple[list[SourceFile], Counter]:
    """Shuffle, filter, dedupe and decontaminate candidates until ``budget`` bytes are accepted.

    Primary sources (the standard library, Debian sources) come first in random order, then registry
    packages (sources ``npm:*``, ``pypi:*``), each capped at ``package_cap`` bytes.
    """
    order = sorted(candidates, key=lambda f: (f.source, f.path))
    random.Random(seed).shuffle(order)
    order.sort(key=lambda f: ":" in f.source)  # primary sources first, then registry packages
    reasons: Counter = Counter()
    per_source: Counter = Counter()
    kept, total = [], 0
    for f in order:
        if total >= budget:
            break
        reason = reject_reason(f.text, params)
        if reason is None:
            digest = hashlib.sha256(f.text.encode("utf-8")).digest()
            if digest in seen:
                reason = "duplicate"
            else:
                seen.add(digest)
        if (reason is None and package_cap is not None and ":" in f.source
                and per_source[f.source] >= package_cap):
            reason = "package_cap"
        if reason is None and index.matches(f.text):
            reason = "contaminated"
        if reason is None and parse_check and has_parse_errors(f.text, f.lang):
            reason = "parse_errors"
        if reason:
            reasons[reason] += 1
            continue
        kept.append(f)
        per_source[f.source] += f.nbytes
        total += f.nbytes
    return kept, reasons


def balance(files_by_lang: dict[str, list[SourceFile]], budget: int) -> dict[str, list[SourceFile]]:
    """Cap every language at the same byte budget: ``min(budget, smallest language's bytes)``."""
    cap = min([budget] + [sum(f.nbytes for f in fs) for fs in files_by_lang.values()])
    out = {}
    for lang, fs in files_by_lang.items():
        acc, total = [], 0
        for f in fs:
            if total >= cap:
                break
            acc.append(f)
            total += f.nbytes
        out[lang] = acc
    return out


def source_paths(args: argparse.Namespace) -> dict:
    """Locations of the five languages' sources."""
    return {
        "python_stdlib": args.python_stdlib, "go_src": args.go_src, "jdk_src_zip": args.jdk_src_zip,
        "libstdcxx": args.libstdcxx, "boost": args.boost, "npm_dir": args.npm_dir,
        "site_packages": args.site_packages, "pypi_packages": args.pypi_packages,
    }


def dpkg_version(package: str) -> str | None:
    """Installed Debian package version, or None."""
    try:
        out = subprocess.run(["dpkg-query", "-W", "-f=${Version}", package], capture_output=True,
                             text=True, check=False)
    except OSError:
        return None
    return out.stdout.strip() or None


def npm_spec_name(spec: str) -> str:
    """Package name of an npm spec: ``@babel/core@7.1.0`` -> ``@babel/core``, ``lodash`` -> ``lodash``."""
    at = spec.rfind("@")
    return spec[:at] if at > 0 else spec


def fetch_js(npm_dir: Path, packages: Iterable[str]) -> None:
    """``npm pack`` every package not yet in ``npm_dir``."""
    npm_dir.mkdir(parents=True, exist_ok=True)
    have = {npm_package_info(t)["name"] for t in npm_dir.glob("*.tgz")}
    missing = [p for p in packages if npm_spec_name(p) not in have]
    if missing:
        log.info("npm pack %d packages", len(missing))
        subprocess.run(["npm", "pack", "--silent", *missing], cwd=npm_dir, check=True,
                       stdout=subprocess.DEVNULL)


def build_corpus(args: argparse.Namespace) -> dict:
    """Write ``corpus/{lang}.{train,val}.jsonl`` and ``corpus_stats.json`` under the work dir."""
    work = Path(args.work_dir)
    out_dir = work / "corpus"
    out_dir.mkdir(parents=True, exist_ok=True)
    excl_paths = expand_globs(args.exclude)
    index = build_exclusion_index(excl_paths, n=args.ngram)
    log.info("exclusion index: %d programs from %d files", index.programs, len(excl_paths))
    paths = source_paths(args)
    selected, reasons, seen = {}, {}, set()
    for lang in LANGS:
        t0 = time.time()
        candidates = list(iter_language(lang, paths))
        js = lang == "javascript"
        selected[lang], reasons[lang] = select_files(
            candidates, args.bytes_per_lang, index, seen, parse_check=lang in args.parse_check,
            package_cap=args.package_cap, seed=args.seed,
            params=JS_FILTER if js else DEFAULT_FILTER)
        log.info("%s: %d candidates -> %d files, %.1f MB (%.0fs) rejected %s", lang, len(candidates),
                 len(selected[lang]), sum(f.nbytes for f in selected[lang]) / 1e6, time.time() - t0,
                 dict(reasons[lang]))
        del candidates
    balanced = balance(selected, args.bytes_per_lang)
    stats: dict = {"bytes_per_lang_budget": args.bytes_per_lang, "package_cap": args.package_cap,
                   "val_frac": args.val_frac,
                   "ngram": args.ngram, "exclude_files": [str(p) for p in excl_paths],
                   "exclude_programs": index.programs, "languages": {}}
    pkg_meta = {f"npm:{m['name']}": m for m in map(npm_package_info, Path(args.npm_dir).glob("*.tgz"))}
    pkg_meta.update({f"pypi:{m['name']}": m for m in map(pypi_package_info, args.pypi_packages) if m})
    for lang, files in balanced.items():
        split = {"train": [], "val": []}
        for f in files:
            split["val" if is_validation(f, args.val_frac, args.seed) else "train"].append(f)
        sources: dict = defaultdict(lambda: {"files": 0, "bytes": 0})
        for name, fs in split.items():
            with open(out_dir / f"{lang}.{name}.jsonl", "w", encoding="utf-8") as fh:
                for f in fs:
                    fh.write(json.dumps({"source": f.source, "path": f.path, "text": f.text}) + "\n")
        for f in files:
            sources[f.source]["files"] += 1
            sources[f.source]["bytes"] += f.nbytes
        for src, rec in sources.items():
            meta = pkg_meta.get(src)
            rec["license"] = meta["license"] if meta else LICENSES[src]
            if meta:
                rec["version"] = meta["version"]
        stats["languages"][lang] = {
            "train_files": len(split["train"]), "train_bytes": sum(f.nbytes for f in split["train"]),
            "val_files": len(split["val"]), "val_bytes": sum(f.nbytes for f in split["val"]),
            "rejected": dict(reasons[lang]), "sources": dict(sorted(sources.items())),
        }
    stats["debian_packages"] = {p: dpkg_version(p) for p in APT_PACKAGES}
    stats["python_version"] = sys.version.split()[0]
    write_json(work / "corpus_stats.json", stats)
    return stats


def read_split(work: Path, lang: str, split: str) -> Iterator[dict]:
    """Records of one language's split."""
    yield from read_jsonl(work / "corpus" / f"{lang}.{split}.jsonl")


def write_json(path: Path, obj: dict) -> None:
    """Atomic JSON write."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")
    os.replace(tmp, path)


def train_tokenizer(work: Path, vocab_size: int = 8192):
    """Byte-level BPE on the training split of all languages, wrapped as PreTrainedTokenizerFast."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=2, show_progress=False,
                                  special_tokens=[BOS, EOS, PAD],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    texts = (rec["text"] for lang in LANGS for rec in read_split(work, lang, "train"))
    tok.train_from_iterator(texts, trainer)
    bos_id = tok.token_to_id(BOS)
    tok.post_processor = processors.Sequence([
        processors.ByteLevel(trim_offsets=False),
        processors.TemplateProcessing(single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B",
                                      special_tokens=[(BOS, bos_id)]),
    ])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=BOS, eos_token=EOS, pad_token=PAD,
                                   model_max_length=2048, clean_up_tokenization_spaces=False)
    out = work / "tokenizer"
    fast.save_pretrained(out)
    return fast


def byte_decoder() -> dict[str, int]:
    """Inverse of GPT-2's byte-to-unicode table used by byte-level BPE vocabularies."""
    bs = [*range(ord("!"), ord("~") + 1), *range(ord("\xa1"), ord("\xac") + 1), *range(ord("\xae"), 256)]
    cs = bs[:]
    extra = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + extra)
            extra += 1
    return {chr(c): b for b, c in zip(bs, cs, strict=True)}


def check_offsets(tokenizer, text: str = 's = "héllo → wörld"  # ünïcödé ✓\n') -> dict:
    """Character offsets are monotonic, cover the text exactly and contain each token's bytes.

    A multi-byte character split over several byte tokens gives each of them that character's span
    (the Hugging Face convention), so spans may overlap; the text is rebuilt from the new part of
    each span. Decoding must also round-trip, and the bos token comes first with an empty span.
    """
    enc = tokenizer(text, return_offsets_mapping=True)
    ids, offsets = enc["input_ids"], enc["offset_mapping"]
    decoder = byte_decoder()
    rebuilt, prev_start, prev_end, ok = [], 0, 0, True
    for tok_id, (a, b) in zip(ids, offsets, strict=True):
        if tok_id in tokenizer.all_special_ids:
            ok &= a == b
            continue
        ok &= prev_start <= a <= b and prev_end <= b
        token_bytes = bytes(decoder[ch] for ch in tokenizer.convert_ids_to_tokens(tok_id))
        ok &= token_bytes in text[a:b].encode("utf-8")
        rebuilt.append(text[max(a, prev_end):b])
        prev_start, prev_end = a, b
    ok &= "".join(rebuilt) == text and ids[0] == tokenizer.bos_token_id
    ok &= tokenizer.decode(ids, skip_special_tokens=True) == text
    return {"text": text, "tokens": len(ids), "offsets_ok": bool(ok)}


def encode_files(tokenizer, texts: list[str], batch: int = 256) -> Iterator[np.ndarray]:
    """Token ids of each text framed as ``<s> ... </s>``."""
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    backend = tokenizer.backend_tokenizer
    for i in range(0, len(texts), batch):
        for enc in backend.encode_batch(texts[i:i + batch], add_special_tokens=False):
            yield np.asarray([bos, *enc.ids, eos], dtype=np.uint16)


def write_stream(path: Path, arrays: Iterable[np.ndarray]) -> int:
    """Concatenate uint16 arrays into a raw ``.bin`` file; returns the token count."""
    n = 0
    with open(path, "wb") as fh:
        for arr in arrays:
            fh.write(arr.tobytes())
            n += len(arr)
    return n


def pretokenize(work: Path, seed: int = 0) -> dict:
    """``tokens/train.bin`` (all languages, files shuffled) and ``tokens/val_{lang}.bin``."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(work / "tokenizer")
    assert len(tok) <= 65535, "uint16 streams need a vocabulary below 65536"
    out = work / "tokens"
    out.mkdir(parents=True, exist_ok=True)
    stats: dict = {"train_tokens": {}, "val_tokens": {}, "val_bytes": {}}
    train_texts: list[tuple[str, str]] = []
    for lang in LANGS:
        train_texts.extend((lang, rec["text"]) for rec in read_split(work, lang, "train"))
        val = [rec["text"] for rec in read_split(work, lang, "val")]
        stats["val_tokens"][lang] = write_stream(out / f"val_{lang}.bin", encode_files(tok, val))
        stats["val_bytes"][lang] = sum(len(t.encode("utf-8")) for t in val)
    random.Random(seed).shuffle(train_texts)
    per_lang: Counter = Counter()

    def counted() -> Iterator[np.ndarray]:
        for (lang, _), arr in zip(train_texts, encode_files(tok, [t for _, t in train_texts]), strict=True):
            per_lang[lang] += len(arr)
            yield arr

    total = write_stream(out / "train.bin", counted())
    stats["train_tokens"] = dict(per_lang)
    stats["train_tokens_total"] = total
    counts = np.bincount(np.memmap(out / "train.bin", dtype=np.uint16, mode="r"), minlength=len(tok))
    np.save(out / "train_counts.npy", counts)
    stats["vocab_size"] = len(tok)
    stats["offsets_check"] = check_offsets(tok)
    write_json(work / "token_stats.json", stats)
    return stats


def model_config(vocab_size: int, layers: int = 8, hidden: int = 256, intermediate: int = 1024,
                 heads: int = 8, kv_heads: int = 4, max_positions: int = 2048):
    """LlamaConfig of the demo model."""
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=vocab_size, hidden_size=hidden, intermediate_size=intermediate,
                       num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv_heads,
                       max_position_embeddings=max_positions, rope_theta=10000.0, rms_norm_eps=1e-5,
                       tie_word_embeddings=True, bos_token_id=0, eos_token_id=1, pad_token_id=2)


def lr_at(progress: float, peak: float, warmup: float, final_frac: float = 0.1) -> float:
    """Linear warmup over the first ``warmup`` share of training, then cosine decay to ``final_frac``."""
    if progress < warmup:
        return peak * progress / warmup
    t = min(1.0, (progress - warmup) / max(1e-9, 1.0 - warmup))
    return peak * (final_frac + (1 - final_frac) * 0.5 * (1 + math.cos(math.pi * t)))


def sample_batch(stream: np.ndarray, batch: int, ctx: int, rng: np.random.Generator):
    """Random windows of ``ctx + 1`` tokens as an int64 tensor."""
    import torch

    starts = rng.integers(0, len(stream) - ctx - 1, size=batch)
    return torch.from_numpy(np.stack([stream[s:s + ctx + 1] for s in starts]).astype(np.int64))


def val_windows(stream: np.ndarray, ctx: int, max_windows: int | None = None) -> np.ndarray:
    """Non-overlapping windows of ``ctx + 1`` tokens (stride ``ctx``): every target counted once."""
    n = (len(stream) - 1) // ctx
    if max_windows is not None:
        n = min(n, max_windows)
    return np.stack([stream[i * ctx:i * ctx + ctx + 1] for i in range(n)]).astype(np.int64)


def model_nll(model, windows: np.ndarray, device: str, batch: int = 16) -> tuple[float, int]:
    """Summed next-token cross-entropy (nats) and the number of predicted tokens."""
    import torch
    import torch.nn.functional as F

    total, count = 0.0, 0
    with torch.inference_mode():
        for i in range(0, len(windows), batch):
            x = torch.from_numpy(windows[i:i + batch]).to(device)
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device == "cuda"):
                logits = model(input_ids=x[:, :-1]).logits
            loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1),
                                   reduction="sum")
            total += loss.item()
            count += x[:, 1:].numel()
    return total, count


def unigram_nll(counts: np.ndarray, windows: np.ndarray) -> tuple[float, int]:
    """Summed cross-entropy of an add-one-smoothed unigram model on the same targets."""
    logp = np.log((counts + 1.0) / (counts.sum() + len(counts)))
    targets = windows[:, 1:].reshape(-1)
    return float(-logp[targets].sum()), int(targets.size)


def train(args: argparse.Namespace) -> dict:
    """Train from ``tokens/train.bin`` with a time and token budget; checkpoints and resumes."""
    import torch
    from transformers import AutoTokenizer, LlamaForCausalLM

    work = Path(args.work_dir)
    logfile = work / "train.log"
    logging.getLogger().addHandler(logging.FileHandler(logfile))
    device = "cuda" if torch.cuda.is_available() else "cpu"
    cpus = os.cpu_count() or 1
    if device == "cpu":
        torch.set_num_threads(args.threads or pick_threads(cpus, 0))
    batch = args.batch_size or (64 if device == "cuda" else 8)
    tok = AutoTokenizer.from_pretrained(work / "tokenizer")
    torch.manual_seed(args.seed)
    cfg = model_config(len(tok), layers=args.layers, hidden=args.hidden, intermediate=args.intermediate,
                       heads=args.heads, kv_heads=args.kv_heads)
    model = LlamaForCausalLM(cfg).to(device)
    n_params = sum(p.numel() for p in model.parameters())
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.95), eps=1e-8, fused=device == "cuda")
    stream = np.memmap(work / "tokens" / "train.bin", dtype=np.uint16, mode="r")
    vals = {lang: val_windows(np.memmap(work / "tokens" / f"val_{lang}.bin", dtype=np.uint16, mode="r"),
                              args.ctx, args.quick_eval_windows) for lang in LANGS}
    ckpt_path = work / "checkpoint.pt"
    state = {"step": 0, "elapsed": 0.0, "tokens": 0, "history": []}
    if ckpt_path.exists() and not args.fresh:
        ckpt = torch.load(ckpt_path, map_location=device, weights_only=False)
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["opt"])
        state = ckpt["state"]
        log.info("resumed at step %d (%.1f min, %d tokens)", state["step"], state["elapsed"] / 60, state["tokens"])
    rng = np.random.default_rng(args.seed + state["step"])
    max_s, max_tokens = args.max_minutes * 60, args.max_tokens
    tokens_per_step = batch * args.ctx
    log.info("device %s, %d params, batch %d x %d, budget %.0f min / %d tokens", device, n_params, batch,
             args.ctx, args.max_minutes, max_tokens)

    def progress() -> float:
        return max(state["elapsed"] / max_s, state["tokens"] / max_tokens)

    def save_checkpoint() -> None:
        tmp = ckpt_path.with_suffix(".tmp")
        torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "state": state}, tmp)
        os.replace(tmp, ckpt_path)

    def quick_eval() -> dict:
        model.eval()
        out = {}
        for lang, windows in vals.items():
            total, count = model_nll(model, windows, device)
            out[lang] = round(total / count, 4)
        model.train()
        return out

    model.train()
    last_ckpt = time.time()
    run_start, start_elapsed = time.time(), state["elapsed"]
    window_loss, window_n, window_t = 0.0, 0, time.time()
    while progress() < 1.0:
        lr = lr_at(progress(), args.lr, args.warmup)
        for group in opt.param_groups:
            group["lr"] = lr
        x = sample_batch(stream, batch, args.ctx, rng).to(device)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device == "cuda"):
            logits = model(input_ids=x[:, :-1]).logits
        loss = torch.nn.functional.cross_entropy(logits.float().reshape(-1, cfg.vocab_size), x[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip)
        opt.step()
        state["step"] += 1
        state["tokens"] += tokens_per_step
        state["elapsed"] = start_elapsed + time.time() - run_start
        window_loss += loss.item()
        window_n += 1
        if state["step"] % args.log_every == 0:
            rate = window_n * tokens_per_step / (time.time() - window_t)
            rec = {"step": state["step"], "tokens": state["tokens"], "minutes": round(state["elapsed"] / 60, 2),
                   "lr": round(lr, 6), "loss": round(window_loss / window_n, 4), "tok_per_s": round(rate),
                   "threads": torch.get_num_threads()}
            if device == "cpu" and not args.threads:
                torch.set_num_threads(pick_threads(cpus, torch.get_num_threads()))
            if state["step"] % args.eval_every == 0:
                rec["val"] = quick_eval()
            state["history"].append(rec)
            log.info(json.dumps(rec))
            window_loss, window_n, window_t = 0.0, 0, time.time()
        if time.time() - last_ckpt > args.ckpt_minutes * 60:
            save_checkpoint()
            last_ckpt = time.time()
    save_checkpoint()
    final_val = quick_eval()
    out = Path(args.out_dir)
    save_model(model, tok, out)
    threads = sorted({h["threads"] for h in state["history"] if "threads" in h}) or [torch.get_num_threads()]
    metrics = {"device": device, "device_name": device_name(device), "threads": "/".join(map(str, threads)),
               "params": n_params, "steps": state["step"], "tokens_seen": state["tokens"],
               "wall_minutes": round(state["elapsed"] / 60, 2), "batch_size": batch, "ctx": args.ctx,
               "lr": args.lr, "warmup": args.warmup, "weight_decay": args.weight_decay,
               "max_minutes": args.max_minutes, "max_tokens": max_tokens,
               "final_quick_val": final_val, "history": state["history"]}
    write_json(work / "train_metrics.json", metrics)
    log.info("done: %d steps, %d tokens, %.1f min", state["step"], state["tokens"], state["elapsed"] / 60)
    return metrics


def pick_threads(cpus: int, own: int) -> int:
    """CPU threads for the next stretch of training: fewer when other processes load the machine.

    ``own`` is the number of threads this process runs now (counted in the load average). Two
    threads that must synchronise every operation slow down badly when another process holds a
    core, so a busy machine gets one thread.
    """
    others = max(0.0, os.getloadavg()[0] - own)
    return max(1, min(cpus, int(cpus - others + 0.5)))


def device_name(device: str) -> str:
    """Human-readable accelerator or CPU name."""
    import platform

    import torch

    if device == "cuda":
        return torch.cuda.get_device_name(0)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()} ({os.cpu_count()} cores)"
    except OSError:
        pass
    return platform.processor() or "cpu"


def save_model(model, tokenizer, out: Path) -> None:
    """Save bfloat16 safetensors weights (config says float32, so plain loading gives fp32) and tokenizer."""
    import torch

    out.mkdir(parents=True, exist_ok=True)
    half = type(model)(model.config)
    half.load_state_dict(model.state_dict())
    half.to(torch.bfloat16)
    half.save_pretrained(out, safe_serialization=True)
    cfg_path = out / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["dtype"] = "float32"
    cfg_path.write_text(json.dumps(cfg, indent=2) + "\n")
    tokenizer.save_pretrained(out)


def evaluate(args: argparse.Namespace) -> dict:
    """Per-language validation loss of the shipped model beside the unigram baseline."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    work, folder = Path(args.work_dir), Path(args.out_dir)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        torch.set_num_threads(args.threads or pick_threads(os.cpu_count() or 1, 0))
    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).to(device).eval()
    plain = AutoModelForCausalLM.from_pretrained(folder)
    counts = np.load(work / "tokens" / "train_counts.npy")
    token_stats = json.loads((work / "token_stats.json").read_text())
    rows = {}
    for lang in LANGS:
        stream = np.memmap(work / "tokens" / f"val_{lang}.bin", dtype=np.uint16, mode="r")
        windows = val_windows(stream, args.ctx, args.eval_windows)
        m_sum, n = model_nll(model, windows, device)
        u_sum, _ = unigram_nll(counts, windows)
        bytes_per_token = token_stats["val_bytes"][lang] / token_stats["val_tokens"][lang]
        rows[lang] = {"tokens": n, "model_nats": round(m_sum / n, 4), "unigram_nats": round(u_sum / n, 4),
                      "gap_nats": round((u_sum - m_sum) / n, 4),
                      "model_bits_per_byte": round(m_sum / n / math.log(2) / bytes_per_token, 4)}
        log.info("%s %s", lang, rows[lang])
    weights = folder / "model.safetensors"
    metrics = {
        "ctx": args.ctx, "languages": rows,
        "passes_2_nat_bar": all(r["gap_nats"] >= 2.0 for r in rows.values()),
        "weights_mb": round(weights.stat().st_size / 1e6, 2),
        "plain_load_dtype": str(next(plain.parameters()).dtype),
        "offsets_check": check_offsets(tok),
    }
    write_json(work / "eval_metrics.json", metrics)
    return metrics


def check_overlap(args: argparse.Namespace) -> dict:
    """Count built corpus files (train and val) that share an n-gram with the excluded programs now."""
    work = Path(args.work_dir)
    excl_paths = expand_globs(args.exclude)
    index = build_exclusion_index(excl_paths, n=args.ngram)
    overlaps, checked = [], 0
    for lang in LANGS:
        for split in ("train", "val"):
            for rec in read_split(work, lang, split):
                checked += 1
                if index.matches(rec["text"]):
                    overlaps.append(f"{lang}/{rec['source']}/{rec['path']}")
    result = {"exclude_files": [str(p) for p in excl_paths], "exclude_programs": index.programs,
              "files_checked": checked, "overlap_count": len(overlaps), "overlaps": overlaps[:50],
              "ngram": args.ngram}
    write_json(work / "overlap_check.json", result)
    log.info("overlap check: %d of %d files overlap %d excluded programs", len(overlaps), checked,
             index.programs)
    return result


REBUILD = """\
apt-get update && apt-get install -y golang-1.19-src openjdk-17-source libboost1.81-dev libstdc++-12-dev
python -m tools.demo_model fetch-js
python -m tools.demo_model build-corpus
python -m tools.demo_model train-tokenizer
python -m tools.demo_model pretokenize
setsid nohup python -m tools.demo_model train --max-minutes {max_minutes:g} --max-tokens {max_tokens} \\
    > cache/demo_train/train.out 2>&1 &
# wait until cache/demo_train/train.log ends with "done: ..." (rerunning `train` resumes from the checkpoint)
python -m tools.demo_model evaluate
python -m tools.demo_model check-overlap
python -m tools.demo_model card"""


def render_card(m: dict) -> str:
    """Model card markdown from the collected metrics."""
    c, t, tr, ev, ov = m["corpus"], m["tokens"], m["train"], m["eval"], m["overlap"]
    lines = [
        "# Demo code model", "",
        "A small Llama-architecture causal language model trained from scratch on real code in five "
        "languages (C++, Go, Java, JavaScript, Python). It ships with the app so that every analysis "
        "runs offline on a laptop; it is a teaching and testing model, not a useful code generator. "
        "Built by `tools/demo_model.py`; every number below is written by that script.", "",
        "## Architecture", "",
        f"`LlamaForCausalLM`: {m['config']['num_hidden_layers']} layers, hidden {m['config']['hidden_size']}, "
        f"FFN (intermediate) {m['config']['intermediate_size']} (SiLU-gated), "
        f"{m['config']['num_attention_heads']} attention heads ({m['config']['num_key_value_heads']} key/value heads), "
        f"vocabulary {m['config']['vocab_size']}, tied input/output embeddings, RoPE, "
        f"max positions {m['config']['max_position_embeddings']} (trained at context {tr['ctx']}). "
        f"**{tr['params']:,} parameters.** Weights: `model.safetensors` stored in bfloat16 "
        f"({ev['weights_mb']} MB); `config.json` asks for float32, so `from_pretrained(folder)` "
        f"loads {ev['plain_load_dtype']}.", "",
        "## Tokenizer", "",
        f"Byte-level BPE (Hugging Face `tokenizers`), {t['vocab_size']} tokens, trained on the training "
        f"split of all five languages; special tokens `{BOS}` (bos, prepended by the tokenizer), "
        f"`{EOS}` (eos, ends each training file), `{PAD}`. Loads with `AutoTokenizer.from_pretrained` "
        "as a `PreTrainedTokenizerFast`; `return_offsets_mapping=True` gives character offsets "
        f"(checked on multi-byte text: {'ok' if ev['offsets_check']['offsets_ok'] else 'FAILED'}).", "",
        "## Training data", "",
        f"Each language capped at the same budget ({c['bytes_per_lang_budget'] / 1e6:g} MB), files "
        f"filtered (near-empty, generated, minified, bundled, over-long lines; C++ headers with "
        f"tree-sitter parse errors), deduplicated by content hash, and decontaminated: any file sharing "
        f"a window of {c['ngram']} normalized lines with one of {c['exclude_programs']} excluded programs "
        "(the app's parallel demo corpus and HumanEval-X) is dropped. "
        f"{c['val_frac']:.0%} of files per language, chosen by hash, are held out for validation. "
        "Files are drawn in random order, primary sources first (the Python standard library, the Debian "
        "source packages), then registry packages, each package capped at "
        f"{c['package_cap'] / 1e6:g} MB (the Python standard library alone is smaller than the budget, "
        "so installed PyPI packages top it up). Rejection counts cover the files examined until the "
        "budget was filled.", "",
        "| language | train files | train MB | val files | val MB | train tokens | rejected |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for lang, s in c["languages"].items():
        rej = ", ".join(f"{k} {v}" for k, v in sorted(s["rejected"].items()))
        lines.append(f"| {lang} | {s['train_files']} | {s['train_bytes'] / 1e6:.2f} | {s['val_files']} | "
                     f"{s['val_bytes'] / 1e6:.2f} | {t['train_tokens'][lang]:,} | {rej} |")
    lines += ["", "Sources and licenses (files and bytes kept, train + validation):", "",
              "| language | source | version | license | files | MB |", "|---|---|---|---|---:|---:|"]
    deb = {"golang-1.19-src": "golang-1.19-src", "openjdk-17-source": "openjdk-17-source",
           "boost-1.81": "libboost1.81-dev", "libstdc++-12": "libstdc++-12-dev"}
    for lang, s in c["languages"].items():
        for src, r in s["sources"].items():
            version = r.get("version") or c["debian_packages"].get(deb.get(src, ""), None) or (
                c["python_version"] if src == "cpython-stdlib" else "")
            lines.append(f"| {lang} | {src} | {version} | {r['license']} | {r['files']} | {r['bytes'] / 1e6:.2f} |")
    lines += [
        "", "## Training", "",
        f"{tr['steps']:,} AdamW steps of {tr['batch_size']} x {tr['ctx']} tokens: **{tr['tokens_seen']:,} "
        f"tokens seen** (of a {t['train_tokens_total']:,}-token training stream, windows sampled at random), "
        f"peak learning rate {tr['lr']} with warmup and cosine decay, weight decay {tr['weight_decay']}. "
        f"Hardware: {tr['device_name']} ({tr['device']}, {tr['threads']} threads, shared with other work); "
        f"**wall time {tr['wall_minutes']} minutes** (limit {tr['max_minutes']:g}).", "",
        "## Validation", "",
        "Mean next-token cross-entropy (nats/token) on the held-out files of each language "
        f"(non-overlapping windows of {ev['ctx']} tokens), beside an add-one-smoothed unigram model fitted "
        "to the training split's token counts, on the same tokens.", "",
        "| language | tokens | model | unigram | gap | model bits/byte |", "|---|---:|---:|---:|---:|---:|",
    ]
    for lang, r in ev["languages"].items():
        lines.append(f"| {lang} | {r['tokens']:,} | {r['model_nats']:.3f} | {r['unigram_nats']:.3f} | "
                     f"{r['gap_nats']:.3f} | {r['model_bits_per_byte']:.3f} |")
    bar = "meets" if ev["passes_2_nat_bar"] else "does NOT meet"
    lines += [
        "", f"The model {bar} the bar of being at least 2 nats/token below the unigram baseline in every language.",
        "", f"Contamination check after training: {ov['overlap_count']} of {ov['files_checked']} corpus files "
        f"share a window of {ov['ngram']} normalized lines with the {ov['exclude_programs']} programs of "
        f"{len(ov['exclude_files'])} exclusion files present at that time.", "",
        "## Rebuild", "", "```bash", REBUILD.format(**tr), "```", "",
        "`python -m tools.demo_model all` runs the same steps in one process. Intermediate files go to "
        "`cache/demo_train/`; `train` checkpoints there and resumes after an interruption. The npm "
        "packages are pinned; the Python top-up reads the PyPI packages installed in the running "
        "environment (versions above), and the exclusion files are whatever exists at build time, so a "
        "rebuild elsewhere can select slightly different files.", "",
        "## Limits", "",
        "Tiny and briefly trained: expect plausible-looking but mostly wrong code. Trained on library "
        "code (standard libraries, headers, npm packages), so it knows little about small stand-alone "
        "programs. Not for any use beyond demonstrating and testing the app.", "",
    ]
    return "\n".join(lines)


def card(args: argparse.Namespace) -> dict:
    """Write ``README.md`` and ``metrics.json`` into the model folder from the step metrics."""
    work, out = Path(args.work_dir), Path(args.out_dir)
    m = {name: json.loads((work / f"{fname}.json").read_text()) for name, fname in
         (("corpus", "corpus_stats"), ("tokens", "token_stats"), ("train", "train_metrics"),
          ("eval", "eval_metrics"), ("overlap", "overlap_check"))}
    m["config"] = json.loads((out / "config.json").read_text())
    (out / "README.md").write_text(render_card(m))
    small = {k: v for k, v in m.items() if k != "config"}
    small["train"] = {k: v for k, v in m["train"].items() if k != "history"}
    small["train"]["loss_curve"] = [{k: h[k] for k in ("step", "tokens", "minutes", "loss")}
                                    for h in m["train"]["history"][:: max(1, len(m["train"]["history"]) // 40)]]
    write_json(out / "metrics.json", small)
    return small


def parser() -> argparse.ArgumentParser:
    """Command-line interface."""
    p = argparse.ArgumentParser(prog="python -m tools.demo_model", description=__doc__.split("\n")[0])
    p.add_argument("--work-dir", default=str(WORK_DIR))
    p.add_argument("--out-dir", default=str(MODEL_DIR), help="the shipped model folder")
    sub = p.add_subparsers(dest="cmd", required=True)

    def excl(sp):
        sp.add_argument("--exclude", nargs="*", default=list(DEFAULT_EXCLUDE),
                        help="glob patterns of JSONL(.gz) files whose programs must not be trained on")
        sp.add_argument("--ngram", type=int, default=8, help="normalized lines per overlap window")

    def corpus_args(sp):
        sp.add_argument("--python-stdlib", default=sysconfig.get_paths()["stdlib"])
        sp.add_argument("--go-src", default=str(GO_SRC))
        sp.add_argument("--jdk-src-zip", default=str(JDK_SRC_ZIP))
        sp.add_argument("--libstdcxx", default=str(LIBSTDCXX))
        sp.add_argument("--boost", default=str(BOOST))
        sp.add_argument("--npm-dir", default=str(WORK_DIR / "npm"))
        sp.add_argument("--site-packages", default=sysconfig.get_paths()["purelib"])
        sp.add_argument("--pypi-packages", nargs="*", default=list(PYPI_PACKAGES),
                        help="installed packages (import names) added to the standard library")
        sp.add_argument("--bytes-per-lang", type=int, default=20_000_000)
        sp.add_argument("--package-cap", type=int, default=1_500_000, help="max bytes per npm/PyPI package")
        sp.add_argument("--val-frac", type=float, default=0.03)
        sp.add_argument("--parse-check", nargs="*", default=["cpp"], help="languages filtered by parse errors")
        sp.add_argument("--seed", type=int, default=0)
        excl(sp)

    def train_args(sp):
        sp.add_argument("--max-minutes", type=float, default=70.0)
        sp.add_argument("--max-tokens", type=int, default=12_000_000)
        sp.add_argument("--ctx", type=int, default=256)
        sp.add_argument("--batch-size", type=int, default=None, help="default 8 on CPU, 64 on CUDA")
        sp.add_argument("--lr", type=float, default=2e-3)
        sp.add_argument("--warmup", type=float, default=0.03, help="share of the budget")
        sp.add_argument("--weight-decay", type=float, default=0.1)
        sp.add_argument("--clip", type=float, default=1.0)
        sp.add_argument("--layers", type=int, default=8)
        sp.add_argument("--hidden", type=int, default=256)
        sp.add_argument("--intermediate", type=int, default=1024)
        sp.add_argument("--heads", type=int, default=8)
        sp.add_argument("--kv-heads", type=int, default=4)
        sp.add_argument("--threads", type=int, default=None,
                        help="CPU threads; default: all cores, fewer while other processes load the machine")
        sp.add_argument("--log-every", type=int, default=25)
        sp.add_argument("--eval-every", type=int, default=250)
        sp.add_argument("--quick-eval-windows", type=int, default=8)
        sp.add_argument("--ckpt-minutes", type=float, default=5.0)
        sp.add_argument("--fresh", action="store_true", help="ignore an existing checkpoint")
        sp.add_argument("--seed", type=int, default=0)

    def eval_args(sp):
        sp.add_argument("--eval-windows", type=int, default=400, help="max windows per language")
        sp.add_argument("--ctx", type=int, default=256)
        sp.add_argument("--threads", type=int, default=None)

    sp = sub.add_parser("fetch-js", help="npm pack the JavaScript packages")
    sp.add_argument("--npm-dir", default=str(WORK_DIR / "npm"))
    sp.add_argument("--packages", nargs="*", default=list(JS_PACKAGES))
    corpus_args(sub.add_parser("build-corpus", help="filter, dedupe, decontaminate, balance, split"))
    sp = sub.add_parser("train-tokenizer", help="byte-level BPE on the training split")
    sp.add_argument("--vocab-size", type=int, default=8192)
    sp = sub.add_parser("pretokenize", help="uint16 token streams")
    sp.add_argument("--seed", type=int, default=0)
    train_args(sub.add_parser("train", help="train the model (CPU or CUDA)"))
    eval_args(sub.add_parser("evaluate", help="validation loss per language vs unigram"))
    excl(sub.add_parser("check-overlap", help="re-run decontamination on the built corpus"))
    sub.add_parser("card", help="write README.md and metrics.json into the model folder")
    sp = sub.add_parser("all", help="every step in order", conflict_handler="resolve")
    corpus_args(sp)
    train_args(sp)
    eval_args(sp)
    sp.add_argument("--vocab-size", type=int, default=8192)
    sp.add_argument("--packages", nargs="*", default=list(JS_PACKAGES))
    return p


def main(argv: list[str] | None = None) -> None:
    """Run one subcommand (or ``all``)."""
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    steps = {
        "fetch-js": lambda: fetch_js(Path(args.npm_dir), args.packages),
        "build-corpus": lambda: build_corpus(args),
        "train-tokenizer": lambda: train_tokenizer(work, args.vocab_size),
        "pretokenize": lambda: pretokenize(work, getattr(args, "seed", 0)),
        "train": lambda: train(args),
        "evaluate": lambda: evaluate(args),
        "check-overlap": lambda: check_overlap(args),
        "card": lambda: card(args),
    }
    for name in (list(steps) if args.cmd == "all" else [args.cmd]):
        t0 = time.time()
        steps[name]()
        log.info("%s finished in %.1f s", name, time.time() - t0)


if __name__ == "__main__":
    main()
