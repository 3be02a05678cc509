"""Each language's toolchain: which tools it needs, how a program and its test become files and compile
and run steps, and the build caches shared between runs (a precompiled C++ header, a javac class-data
archive, Go's build caches), built from our own sources, never from programs under test."""

from __future__ import annotations

import functools
import glob
import hashlib
import os
import re
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from neuro import atomic
from neuro.code.corpus import LANGS
from neuro.code.sandbox import isolation
from neuro.code.sandbox.go_imports import _GO_STD, reconcile_go_imports
from neuro.code.sandbox.isolation import SYSTEM_PATH, _need_tool, _tool, _tool_roots

# Headers HumanEval-X's C++ programs use without always including them (the prompt includes some,
# the test assumes others, e.g. <cassert> via assert.h or std::abs from <cmath>). Precompiled once.
_CPP_HEADER = "".join(f"#include <{h}>\n" for h in (
    "algorithm", "cassert", "climits", "cmath", "cstdio", "cstdlib", "cstring", "functional", "iostream",
    "map", "numeric", "set", "sstream", "stack", "string", "unordered_map", "unordered_set", "utility",
    "vector", "queue"))

_CPP_FLAGS = ("-std=c++17", "-O1")

# console.assert only logs a failed assertion in node: make it throw so a failing test fails.
_JS_SHIM = ("console.assert = (cond, ...msg) => {\n"
            "  if (!cond) throw new Error('Assertion failed' + (msg.length ? ': ' + msg.join(' ') : ''));\n"
            "};\n")

# Globally installed npm packages (HumanEval-X 162 requires js-md5: `npm install -g js-md5`).
_NODE_PATH = os.pathsep.join(("/usr/local/lib/node_modules", "/usr/lib/node_modules", "/usr/share/nodejs"))

# Small reservations outside the heap (class space would reserve 1 GiB), C1 only, one GC thread: a
# test run is short, so start-up time matters more than peak speed.
_JVM_FLAGS = ("-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-XX:-UsePerfData", "-Xshare:auto",
              "-XX:ActiveProcessorCount=2", "-XX:CompressedClassSpaceSize=128m", "-XX:ReservedCodeCacheSize=64m",
              "-XX:MaxMetaspaceSize=256m")

_REQUIRED = {"python": ("python3",), "javascript": ("node",), "cpp": ("g++",), "java": ("javac", "java"),
             "go": ("go",)}


@dataclass(frozen=True)
class _Step:
    argv: tuple[str, ...]
    compile: bool
    as_mb: int | None
    env: tuple[tuple[str, str], ...] = ()


def toolchains() -> dict[str, bool]:
    """Which of the five languages can be compiled and run on this host."""
    return {lang: all(_tool(t) for t in _REQUIRED[lang]) for lang in LANGS}


@functools.cache
def _cache_root() -> Path:
    """A per-user directory for shared build caches, refused if someone else could have planted it."""
    root = Path(tempfile.gettempdir()) / f"neuro-exec-{os.geteuid()}"
    root.mkdir(mode=0o755, exist_ok=True)
    st = root.stat()
    if st.st_uid != os.geteuid() or st.st_mode & 0o022:
        return Path(tempfile.mkdtemp(prefix="neuro-exec-cache-"))
    root.chmod(0o755)  # the sandbox uids read the precompiled header from here
    return root


def _cpp_header() -> Path:
    """The common C++ header, precompiled once per compiler and flags (g++ ignores a stale .gch)."""
    folder = _cache_root() / "cpp"
    folder.mkdir(exist_ok=True)
    folder.chmod(0o755)  # whatever the umask: the compiler's uid reads it
    header = folder / "common.h"
    if not header.is_file() or header.read_text() != _CPP_HEADER:
        atomic.write_text(header, _CPP_HEADER, mode=0o644)
    gch = folder / "common.h.gch"
    if not gch.is_file() or gch.stat().st_mtime < header.stat().st_mtime:
        try:  # our own header, not untrusted code: compiled directly, without the sandbox
            with atomic.replacing(gch, mode=0o644, suffix=".tmp.gch") as tmp:
                subprocess.run([_need_tool("g++"), *_CPP_FLAGS, "-x", "c++-header", str(header), "-o", str(tmp)],
                               stdin=subprocess.DEVNULL, capture_output=True, timeout=120, check=True)
        except (OSError, subprocess.SubprocessError):
            pass  # without the .gch g++ reads the header itself: slower, same result
    return header


@functools.cache  # a failed attempt is not retried; a missing archive later only costs speed
def _javac_flags() -> tuple[str, ...]:
    """JVM flags for javac, with a class-data archive of the compiler's own classes when one can be made.

    javac spends most of a small compile loading its classes; the archive (made once, from our own
    hello-world, not from untrusted code) cuts its start-up by about a third.
    """
    flags = tuple(f"-J{f}" for f in ("-Xmx512m", *_JVM_FLAGS, "-Xlog:disable"))
    archive = _cache_root() / "javac.jsa"
    if not archive.is_file():
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / "Hello.java").write_text("class Hello { public static void main(String[] a) {} }\n")
            try:
                with atomic.replacing(archive, mode=0o644, suffix=".tmp.jsa") as part:
                    subprocess.run([_need_tool("javac"), *flags, f"-J-XX:ArchiveClassesAtExit={part}", "-d", tmp,
                                    str(Path(tmp) / "Hello.java")], stdin=subprocess.DEVNULL, capture_output=True,
                                   timeout=120, check=True)
                    if not part.stat().st_size:  # the JVM did not write it: keep no empty archive
                        raise OSError("no class-data archive written")
            except (OSError, subprocess.SubprocessError):
                return flags
    return (*flags, f"-J-XX:SharedArchiveFile={archive}")


def _go_cache(uid: int | None) -> Path:
    """The fallback's writable Go build cache, one per uid (shared by that uid's compiles)."""
    folder = _cache_root() / f"gocache-{uid if uid is not None else os.geteuid()}"
    if not folder.is_dir():
        folder.mkdir(mode=0o700, exist_ok=True)
        if uid is not None:
            os.chown(folder, uid, uid)
    return folder


def _gopath() -> str:
    return os.pathsep.join(p for p in ("/usr/share/gocode", os.environ.get("GOPATH", "")) if p)


def _go_env(cache: str) -> tuple[tuple[str, str], ...]:
    return (("GO111MODULE", "off"), ("GOPATH", _gopath()), ("GOCACHE", cache), ("GOFLAGS", ""),
            ("GOTOOLCHAIN", "local"), ("GOPROXY", "off"), ("GOTELEMETRY", "off"))


# One exported member of each, to use the packages in the seed program of `_go_seed`.
_GO_SEED_USE = {"bytes": "Compare", "crypto/md5": "Sum", "errors": "New", "fmt": "Sprint", "math": "Abs",
                "math/rand": "Intn", "reflect": "DeepEqual", "regexp": "MustCompile", "sort": "Ints",
                "strconv": "Itoa", "strings": "Split", "time": "Now", "unicode": "IsUpper"}

_GO_SEED_TEST = ("package main\n\nimport (\n\t\"testing\"\n{}\n)\n\n"
                 "func TestSeed(t *testing.T) {{\n{}\n}}\n")


@functools.cache  # a failed attempt is not retried: runs then build into a per-run cache (slower)
def _go_seed() -> Path | None:
    """A read-only Go build cache of the standard packages HumanEval-X uses (and testify), for bubblewrap.

    Built once, from our own program (never from code under test), outside the sandbox; runs mount it
    read-only (the go command builds whatever it lacks and ignores its failed writes), so no run can
    plant anything in it for the next one.
    """
    go = _tool("go")
    if go is None:  # no toolchain, no seed (the go runs check for one before they ask)
        return None
    try:
        about = subprocess.run([go, "env", "GOROOT", "GOVERSION"], capture_output=True, text=True, timeout=60,
                               check=True, env={"PATH": SYSTEM_PATH, "HOME": str(_cache_root())}).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    packages = sorted(p for _, p in _GO_STD.values())
    testify = [f"{d}:{os.stat(d).st_mtime_ns}" for d in (Path(g) / "src/github.com/stretchr/testify"
                                                          for g in _gopath().split(os.pathsep)) if d.is_dir()]
    key = hashlib.sha256(f"{about}{_gopath()}{packages}{testify}".encode()).hexdigest()[:12]
    seed = _cache_root() / f"goseed-{key}"
    if seed.is_dir():
        return seed
    code = ("package main\n\nimport (\n" + "".join(f'\t"{p}"\n' for p in packages) + ")\n\nvar _ = []interface{}{"
            + ", ".join(f"{p.rsplit('/', 1)[-1]}.{_GO_SEED_USE[p]}" for p in packages) + "}\n")
    variants = [('\t"github.com/stretchr/testify/assert"', "\tassert.True(t, true)"), ("", "")]
    with tempfile.TemporaryDirectory(dir=_cache_root()) as tmp:
        cache = Path(tmp) / "cache"
        for imports, use in variants:  # testify where GOPATH has it, else the standard library alone
            (Path(tmp) / "main.go").write_text(code)
            (Path(tmp) / "main_test.go").write_text(_GO_SEED_TEST.format(imports, use))
            try:
                subprocess.run([go, "test", "-c", "-vet=off", "-ldflags=-s -w", "-o", "seed.test", "."], cwd=tmp,
                               env={"PATH": SYSTEM_PATH, "HOME": tmp, **dict(_go_env(str(cache)))},
                               stdin=subprocess.DEVNULL, capture_output=True, timeout=300, check=True)
                break
            except (OSError, subprocess.SubprocessError):
                continue
        else:
            return None
        for path in [cache, *cache.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)
        try:
            os.rename(cache, seed)
        except OSError:  # another process made it first
            pass
    return seed if seed.is_dir() else None


def _go_build_cache(uid: int | None) -> str:
    """GOCACHE for a compile step: the read-only seed under bubblewrap, else the per-uid cache."""
    if isolation._isolation() == "bubblewrap":
        seed = _go_seed()
        return str(seed) if seed else "/tmp/gocache"  # /tmp: the run's own tmpfs
    return str(_go_cache(uid))


def _write(path: Path, text: str) -> None:
    path.write_bytes(text.encode("utf-8", "replace"))
    path.chmod(0o644)


def _plan(lang: str, code: str, test: str, work: Path, memory_mb: int, uid: int | None) -> list[_Step]:
    """Write the program files and return the compile and run steps."""
    big = memory_mb + 1024
    if lang == "python":
        _write(work / "main.py", code + "\n\n" + test)
        return [_Step((_need_tool("python3"), "-I", "main.py"), False, memory_mb)]
    if lang == "javascript":
        _write(work / "assert_shim.js", _JS_SHIM)
        _write(work / "main.js", code + "\n\n" + test)
        return [_Step((_need_tool("node"), f"--max-old-space-size={memory_mb}", "-r", str(work / "assert_shim.js"),
                       "main.js"), False, big, (("NODE_PATH", _NODE_PATH),))]
    if lang == "cpp":
        source = code + "\n\n" + test
        _write(work / "main.cpp", source)
        libs = ("-lcrypto",) if "openssl/" in source else ()  # HumanEval-X 162 hashes with OpenSSL's MD5
        return [_Step((_need_tool("g++"), *_CPP_FLAGS, "-include", str(_cpp_header()), "main.cpp", "-o", "main", *libs),
                      True, 2048),
                _Step(("./main",), False, memory_mb)]
    if lang == "java":
        _write(work / "Main.java", code + "\n\n" + test)
        return [_Step((_need_tool("javac"), *_javac_flags(), "-encoding", "UTF-8", "-nowarn", "-d", ".", "Main.java"),
                      True, 2048),
                _Step((_need_tool("java"), f"-Xmx{memory_mb}m", *_JVM_FLAGS, "-Djava.io.tmpdir=.", "-cp", ".",
                       "Main"), False, big)]
    if lang == "go":
        if not re.search(r"(?m)^package\s+\w+", code):
            code = "package main\n\n" + code
        code, test = reconcile_go_imports(code, test)
        _write(work / "main.go", code)
        _write(work / "main_test.go", test)
        env = _go_env(_go_build_cache(uid))
        # -vet=off: vet's style findings are not test failures (the compiler's errors still are);
        # -s -w: no symbol table or DWARF (panics still name functions and lines): links 25 % faster
        return [_Step((_need_tool("go"), "test", "-c", "-vet=off", "-ldflags=-s -w", "-o", "prog.test", "."),
                      True, 2048, env),
                _Step(("./prog.test",), False, big, (("GOMEMLIMIT", f"{memory_mb}MiB"),))]
    raise ValueError(f"unsupported language {lang!r}")


def _binds(lang: str) -> list[str]:
    """Host paths a language's steps read under bubblewrap, besides /usr (see `_bwrap_argv`)."""
    binds = _tool_roots(_REQUIRED[lang])
    if lang == "java":
        binds += sorted(glob.glob("/etc/java*"))  # Debian's JDK links its conf/ there
        binds += [f.split("=", 1)[1] for f in _javac_flags() if f.startswith("-J-XX:SharedArchiveFile=")]
    elif lang == "javascript":
        binds += _NODE_PATH.split(os.pathsep)
    elif lang == "cpp":
        binds.append(str(_cpp_header().parent))
    elif lang == "go":
        binds += _gopath().split(os.pathsep)
        seed = _go_seed()
        if seed:
            binds.append(str(seed))
    return binds
