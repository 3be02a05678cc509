"""Source files of the five languages from Debian packages, the Python standard library, PyPI and npm."""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import tarfile
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from tools.demo_model.settings import log

SKIP_DIRS = {
    "python": {"test", "tests", "idle_test", "site-packages", "__pycache__"},
    "go": {"testdata"},
    "javascript": {"test", "tests", "__tests__", "spec", "fixtures", "node_modules", "generated",
                   "min", "umd", "bundles", "cdn"},
}


CPP_EXTS = {".h", ".hpp", ".cpp", ".cc", ".tcc", ".ipp"}


JS_EXTS = {".js", ".mjs", ".cjs"}


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
