"""Sandboxed execution of (generated) programs against their tests in the five languages, and pass@k.

Every run gets a fresh work folder, a clean environment, closed stdin, a wall-clock timeout
(compilation has its own), resource limits and an output cap, and its whole process tree is killed
when it ends. What the sandbox enforces depends on the host; `sandbox_features()` reports it
(`isolation` names the mechanism) and `sandbox_warning()` gives a line for pages to show when the
strong one is missing:

- `bubblewrap` (the `bwrap` tool, Debian package `bubblewrap`; as root, or where unprivileged user
  namespaces are allowed): each compile and run step starts in a new mount, network, PID, IPC and
  UTS namespace (`--die-with-parent`). Its file system is built from scratch: read-only binds of
  /usr and of what the language's toolchain needs (a few /etc entries, a JDK's /etc config, node's
  global modules, the precompiled C++ header, a read-only Go build cache of the standard packages;
  a toolchain installed outside /usr gets its own folder), a fresh size-capped tmpfs for /tmp and
  for the home directory, and the work folder as the only writable bind. So a program cannot leave
  files outside its work folder, fill the host's /tmp, read the repository, the caches, the home
  directories or other runs' folders, or reach any network (only a loopback of its own). As root,
  bwrap runs without a user namespace (its `--uid` would map back to root on the host) and
  util-linux `setpriv` drops to the step's uid inside, with no capabilities, no supplementary
  groups and no_new_privs.
- `namespaces` (the fallback: util-linux `unshare`, needs root or unprivileged user namespaces):
  new network and PID namespaces only; /tmp and world-readable files remain reachable.
- `none`: only proxy variables that point nowhere (this does not stop a direct socket) and the
  process-group kill (which a setsid() escapes).
- Users: as root, compilers run as `nobody` and each program as a fresh unprivileged uid, so it
  cannot write the repository, read /root, or touch other runs, and RLIMIT_NPROC (per uid, ignored
  for root) is a per-run budget of processes and threads that stops fork bombs. Not as root, the
  budget is the user's current task count plus the same margin (a fork bomb still hits it).
- rlimits (util-linux `prlimit`, else `preexec_fn`): CPU seconds, address space, file size, open
  files, no core dumps. Address space is `memory_mb` for Python and C++. The JVM, V8 and the Go
  runtime reserve several hundred MB of address space they never touch (measured: node needs about
  700 MB to start, a Go test binary about 700 MB, the JVM about Xmx + 500 MB), so for them the heap is
  capped at `memory_mb` by the runtime's own flag (-Xmx, --max-old-space-size, GOMEMLIMIT) and the
  address space at `memory_mb` + 1 GiB. Compilers get 2 GiB. The work folder (on the host's disk) is
  watched: a step whose folder grows past a quota is killed.
- Not enforced: a cgroup memory limit (the page cache and kernel memory are not counted), CPU share.

How a program and its test combine (the demo corpus and HumanEval-X follow this): Python and
JavaScript run `code + test` (console.assert made to throw); C++ compiles `code + test` with a
precompiled set of common headers (HumanEval-X's tests assume some the prompt did not include);
Java compiles `code + test` as Main.java (the test holds `public class Main`); Go puts the code in
main.go (with `package main` if it has no package clause) and the test in main_test.go, reconciles
both files' imports with their use (see `reconcile_go_imports`) and runs `go test` in GOPATH mode.

The functions keep no mutable module state (only cached, read-only host probes), so they can be
called from several threads; compiled artefacts that are safe to share (a precompiled C++ header,
a javac class-data archive, Go's build cache) live in a per-user cache directory, built from our
own trusted sources, never from the programs under test.
"""

from __future__ import annotations

import functools
import glob
import hashlib
import math
import os
import re
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from neuro.choices import ExecutionStatus, Isolation
from neuro.code.corpus import LANGS, Snippet, normalize_lang

STATUSES = ("passed", "failed", "compile_error", "timeout", "memory", "killed", "error")

SYSTEM_PATH = "/usr/local/bin:/usr/bin:/bin"

NOBODY = 65534

_RUN_UIDS = (200_000, 260_000)  # unmapped uids for runs; any free uid works for setuid as root

_NPROC_BUDGET = 256  # processes + threads per run (a JVM uses about 25, node about 11)

_GRACE_S = 0.5  # how long to read output after the program exited (its children may hold the pipes)

_TMPFS_MB = 128  # bubblewrap: the private /tmp (a tmpfs lives in memory, hence the cap)

_HOME_MB = 16  # and the private home directory

_HOME = "/home/sandbox"

_QUOTA_MB = {True: 2048, False: 256}  # disk a step may use in its work folder: compile, run

_QUOTA_ENTRIES = 10_000  # files and folders in the work folder

_QUOTA_EVERY_S = 0.2  # how often the work folder is measured

# /etc entries a sandbox sees (the dynamic loader's cache and config, Debian's alternatives links)
_SANDBOX_ETC = ("/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/alternatives")

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

# Small reservations outside the heap (class space would reserve 1 GiB), C1 only, one GC thread: a
# test run is short, so start-up time matters more than peak speed.
# Globally installed npm packages (HumanEval-X 162 requires js-md5: `npm install -g js-md5`).
_NODE_PATH = os.pathsep.join(("/usr/local/lib/node_modules", "/usr/lib/node_modules", "/usr/share/nodejs"))

_JVM_FLAGS = ("-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-XX:-UsePerfData", "-Xshare:auto",
              "-XX:ActiveProcessorCount=2", "-XX:CompressedClassSpaceSize=128m", "-XX:ReservedCodeCacheSize=64m",
              "-XX:MaxMetaspaceSize=256m")


@dataclass(frozen=True)
class ExecutionResult:
    """The outcome of one program run against its test. `status` is one of STATUSES."""

    passed: bool
    status: ExecutionStatus
    returncode: int | None
    stdout: str
    stderr: str
    truncated: bool
    duration: float
    reason: str


@dataclass(frozen=True)
class _Limits:
    cpu_s: int
    as_mb: int | None
    fsize_mb: int
    nproc: int
    nofile: int = 1024


@dataclass(frozen=True)
class _Step:
    argv: tuple[str, ...]
    compile: bool
    as_mb: int | None
    env: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class _Proc:
    returncode: int | None
    stdout: bytes
    stderr: bytes
    timed_out: bool
    overflow: bool  # the output passed the cap (and the run was killed)
    over_quota: bool = False  # the work folder passed its quota (and the run was killed)


def _world_executable(path: str) -> bool:
    """Whether a process of another uid can run `path` (e.g. a pyenv Python under /root cannot)."""
    real = Path(os.path.realpath(path))
    try:
        return all(p.stat().st_mode & 0o001 for p in [real, *real.parents])
    except OSError:
        return False


@functools.cache
def _tool(name: str) -> str | None:
    """Absolute path of a tool, preferring system locations that unprivileged uids can execute."""
    candidates = [shutil.which(name, path=SYSTEM_PATH), shutil.which(name)]
    if name == "python3":
        candidates.append(sys.executable)
    found = [c for c in candidates if c]
    return next((c for c in found if _world_executable(c)), found[0] if found else None)


_REQUIRED = {"python": ("python3",), "javascript": ("node",), "cpp": ("g++",), "java": ("javac", "java"),
             "go": ("go",)}


def toolchains() -> dict[str, bool]:
    """Which of the five languages can be compiled and run on this host."""
    return {lang: all(_tool(t) for t in _REQUIRED[lang]) for lang in LANGS}


@functools.cache
def _namespace_prefix() -> tuple[str, ...]:
    """`unshare` options giving new network and PID namespaces, or () where this host forbids them."""
    unshare = _tool("unshare")
    if not unshare or not sys.platform.startswith("linux"):
        return ()
    base = (unshare, "--net", "--pid", "--kill-child")
    for prefix in ((base,) if os.geteuid() == 0 else ()) + ((base + ("--map-root-user",)),):
        probe = prefix + (("--setuid", str(NOBODY), "--setgid", str(NOBODY)) if os.geteuid() == 0 else ())
        try:
            ok = subprocess.run([*probe, "--", "true"], stdin=subprocess.DEVNULL, capture_output=True,
                                timeout=10, env={"PATH": SYSTEM_PATH}).returncode == 0
        except (OSError, subprocess.SubprocessError):
            ok = False
        if ok:
            return prefix
    return ()


def _under(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def _tool_roots(names: Iterable[str]) -> list[str]:
    """Install folders of tools that live outside /usr (`.../bin/tool` -> `...`), for read-only binds."""
    roots = []
    for name in names:
        path = _tool(name)
        real = os.path.realpath(path) if path else None
        if real and not _under(real, "/usr"):
            roots.append(str(Path(real).parent.parent))
    return roots


def _setpriv(uid: int) -> list[str]:
    """Inside bwrap (as root): become `uid`, with no groups, no capabilities and no way to regain any."""
    return [_tool("setpriv"), f"--reuid={uid}", f"--regid={NOBODY}", "--clear-groups", "--inh-caps=-all",
            "--bounding-set=-all", "--no-new-privs", "--"]


def _bwrap_argv(work: Path, binds: Iterable[str]) -> list[str]:
    """bubblewrap's command line for one step, up to and including the `--` before the command.

    New namespaces (all but the user namespace as root: see the module docstring), a root built from
    read-only binds of /usr, a few /etc entries and `binds` (each at its host path), a private /proc and
    /dev, a fresh size-capped tmpfs for /tmp and for the home directory, and `work` as the only writable
    bind and the working directory.
    """
    args = [_tool("bwrap"), "--unshare-net", "--unshare-pid", "--unshare-ipc", "--unshare-uts",
            "--unshare-cgroup-try", "--die-with-parent", "--new-session", "--as-pid-1"]
    if os.geteuid() != 0:
        args.append("--unshare-user")  # unprivileged bwrap needs one; it keeps our uid inside
    args += ["--ro-bind", "/usr", "/usr"]
    for top in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):  # as on the host (merged /usr: links)
        if os.path.islink(top):
            args += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            args += ["--ro-bind", top, top]
    args += ["--proc", "/proc", "--dev", "/dev",
             "--perms", "1777", "--size", str(_TMPFS_MB << 20), "--tmpfs", "/tmp",
             "--perms", "0755", "--dir", str(Path(_HOME).parent),
             "--perms", "1777", "--size", str(_HOME_MB << 20), "--tmpfs", _HOME]
    made = {"/", "/tmp", str(Path(_HOME).parent), _HOME}

    def parents(path: str) -> list[str]:
        out = []
        for parent in reversed(Path(path).parents):
            if str(parent) not in made:
                made.add(str(parent))
                out += ["--perms", "0755", "--dir", str(parent)]  # bwrap would make them 0700
        return out

    for path in dict.fromkeys((*_SANDBOX_ETC, *binds)):
        if not _under(path, "/usr") and os.path.exists(path):
            args += parents(path) + ["--ro-bind", path, path]
    return args + parents(str(work)) + ["--bind", str(work), str(work), "--chdir", str(work), "--"]


@functools.cache
def _bwrap_works() -> bool:
    """Whether bubblewrap runs here with the options runs use (and, as root, drops to another uid)."""
    root = os.geteuid() == 0
    if not sys.platform.startswith("linux") or not _tool("bwrap") or (root and not _tool("setpriv")):
        return False
    work = Path(tempfile.mkdtemp(prefix="neuro-exec-probe-"))
    try:
        work.chmod(0o755)
        argv = _bwrap_argv(work, _tool_roots(["sh", "setpriv", "prlimit"]))
        if root:
            os.chown(work, NOBODY, NOBODY)
            argv += _setpriv(NOBODY)
        argv += [os.path.realpath(_tool("sh") or "/bin/sh"), "-c", "echo ok > probe"]
        done = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=30,
                              env={"PATH": SYSTEM_PATH})
        probe = work / "probe"
        return (done.returncode == 0 and probe.is_file() and probe.read_text().strip() == "ok"
                and (not root or probe.stat().st_uid == NOBODY))
    except (OSError, subprocess.SubprocessError):
        return False
    finally:
        shutil.rmtree(work, ignore_errors=True)


@functools.cache
def _isolation() -> Isolation:
    """The mechanism runs are isolated with: "bubblewrap", "namespaces" (the fallback) or "none"."""
    if _bwrap_works():
        return "bubblewrap"
    return "namespaces" if _namespace_prefix() else "none"


def _separate_uids() -> bool:
    """Whether runs get their own uids: as root, unless only a user namespace (mapping us to root) works."""
    if os.geteuid() != 0:
        return False
    return _isolation() == "bubblewrap" or "--map-root-user" not in _namespace_prefix()


def sandbox_features() -> dict[str, str | bool]:
    """What the sandbox enforces on this host (see the module docstring); JSON-friendly."""
    isolation = _isolation()
    return {
        "isolation": isolation,
        "filesystem_isolation": isolation == "bubblewrap",
        "network_namespace": isolation != "none",
        "pid_namespace": isolation != "none",
        "ipc_namespace": isolation == "bubblewrap",
        "separate_uids": _separate_uids(),
        "nproc_limit": sys.platform.startswith("linux"),
        "rlimits": True,
    }


def sandbox_warning() -> str | None:
    """A line for pages that run generated code, or None when bubblewrap isolates the runs."""
    isolation = _isolation()
    if isolation == "bubblewrap":
        return None
    return (f"Generated code runs without bubblewrap (isolation: {isolation}): it can read this host's "
            "world-readable files (the repository included) and write its /tmp"
            + ("" if isolation == "namespaces" else ", and reach the network")
            + ". Install bubblewrap (`apt-get install bubblewrap`) and run as root or with user namespaces enabled.")


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
        tmp = folder / f"common.h.{os.getpid()}.{time.monotonic_ns()}"
        tmp.write_text(_CPP_HEADER)
        tmp.chmod(0o644)
        os.replace(tmp, header)
    gch = folder / "common.h.gch"
    if not gch.is_file() or gch.stat().st_mtime < header.stat().st_mtime:
        tmp = folder / f"tmp.{os.getpid()}.{time.monotonic_ns()}.gch"
        try:  # our own header, not untrusted code: compiled directly, without the sandbox
            subprocess.run([_tool("g++"), *_CPP_FLAGS, "-x", "c++-header", str(header), "-o", str(tmp)],
                           stdin=subprocess.DEVNULL, capture_output=True, timeout=120, check=True)
            tmp.chmod(0o644)
            os.replace(tmp, gch)
        except (OSError, subprocess.SubprocessError):
            tmp.unlink(missing_ok=True)  # without the .gch g++ reads the header itself: slower, same result
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
            part = Path(tmp) / "javac.jsa"
            try:
                subprocess.run([_tool("javac"), *flags, f"-J-XX:ArchiveClassesAtExit={part}", "-d", tmp,
                                str(Path(tmp) / "Hello.java")], stdin=subprocess.DEVNULL, capture_output=True,
                               timeout=120, check=True)
                part.chmod(0o644)
                os.replace(part, archive)
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
    if _isolation() == "bubblewrap":
        seed = _go_seed()
        return str(seed) if seed else "/tmp/gocache"  # /tmp: the run's own tmpfs
    return str(_go_cache(uid))


def _user_tasks(uid: int) -> int:
    """Tasks (processes and threads) of `uid`: what RLIMIT_NPROC counts."""
    count = 0
    for pid in os.listdir("/proc"):
        try:
            if pid.isdigit() and os.stat(f"/proc/{pid}").st_uid == uid:
                count += len(os.listdir(f"/proc/{pid}/task"))
        except OSError:
            continue
    return count


def _rlimit_args(limits: _Limits) -> list[str]:
    mb = 1 << 20
    args = [f"--cpu={limits.cpu_s}:{limits.cpu_s + 1}", f"--fsize={limits.fsize_mb * mb}",
            f"--nofile={limits.nofile}", f"--nproc={limits.nproc}", "--core=0"]
    if limits.as_mb is not None:
        args.append(f"--as={limits.as_mb * mb}")
    return args


def _preexec(limits: _Limits):
    """Fallback where `prlimit` is missing (preexec_fn is not safe with threads, hence only a fallback)."""
    import resource

    def apply():
        mb = 1 << 20
        resource.setrlimit(resource.RLIMIT_CPU, (limits.cpu_s, limits.cpu_s + 1))
        resource.setrlimit(resource.RLIMIT_FSIZE, (limits.fsize_mb * mb,) * 2)
        resource.setrlimit(resource.RLIMIT_NOFILE, (limits.nofile,) * 2)
        resource.setrlimit(resource.RLIMIT_NPROC, (limits.nproc,) * 2)
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        if limits.as_mb is not None:
            resource.setrlimit(resource.RLIMIT_AS, (limits.as_mb * mb,) * 2)
    return apply


def _folder_usage(folder: Path) -> int:
    """Bytes allocated under `folder`, or more than any quota once it holds `_QUOTA_ENTRIES` entries."""
    total, count, stack = 0, 0, [str(folder)]
    while stack:
        try:
            with os.scandir(stack.pop()) as entries:
                for entry in entries:
                    count += 1
                    if count > _QUOTA_ENTRIES:
                        return 1 << 62
                    total += entry.stat(follow_symlinks=False).st_blocks * 512
                    if entry.is_dir(follow_symlinks=False):
                        stack.append(entry.path)
        except OSError:
            continue
    return total


def _exited(pid: int) -> bool:
    """Whether `pid` has exited, without reaping it (so its process group id cannot be reused yet)."""
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


def _kill_group(proc: subprocess.Popen, namespace: bool, patience: float = 5.0) -> None:
    """SIGKILL everything the run started and wait until it is gone.

    With a PID namespace, its init (the child of `unshare`) is killed first: the kernel then kills
    the whole namespace and `unshare` reaps it, whereas a killed `unshare` would leave the init to
    the host's PID 1, which may reap slowly. Then the process group is killed and polled until empty,
    since killing hundreds of processes (a fork bomb) is asynchronous.
    """
    if namespace and not _exited(proc.pid):
        try:
            with open(f"/proc/{proc.pid}/task/{proc.pid}/children") as fh:
                children = [int(c) for c in fh.read().split()]
            for child in children:
                os.kill(child, signal.SIGKILL)
            if children:  # else `unshare` has not forked yet: the group kill below covers it
                proc.wait(timeout=patience)
        except (OSError, ValueError, subprocess.TimeoutExpired):
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # the leader is not reaped yet, so its pgid is not reused
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()
    end = time.monotonic() + patience
    while time.monotonic() < end:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            return
        time.sleep(0.01)


def _spawn(argv: list[str], cwd: Path, env: dict[str, str], timeout: float, limits: _Limits,
           uid: int | None, output_limit: int, binds: Iterable[str] = (), quota_mb: int | None = None) -> _Proc:
    """Run one command in the sandbox; kill its process group (and PID namespace) when it ends.

    Under bubblewrap, `binds` are the extra host paths the command may read. A work folder that grows
    past `quota_mb` (or `_QUOTA_ENTRIES` entries) ends the step like an output overflow.
    """
    isolation = _isolation()
    prlimit = _tool("prlimit")
    prefix: list[str] = []
    if isolation == "bubblewrap":
        prefix += _bwrap_argv(cwd, [*binds, *_tool_roots(["prlimit", "setpriv"])])
        if prlimit:
            prefix += [prlimit, *_rlimit_args(limits), "--"]
        if uid is not None:
            prefix += _setpriv(uid)
        # `sh` is PID 1 (bwrap's --as-pid-1): a PID 1 ignores its own default-action signals, so the program
        # runs as its child; and when PID 1 exits, the kernel kills the whole namespace before bwrap
        # returns (bwrap's own reaper would report the exit first and let the namespace die afterwards)
        prefix += [os.path.realpath(_tool("sh") or "/bin/sh"), "-c", '"$@"; exit $?', "sh"]
        if os.path.isabs(argv[0]):  # the tool itself, not a link elsewhere (e.g. /etc/alternatives, a venv)
            argv = [os.path.realpath(argv[0]), *argv[1:]]
        ns = True
    else:
        ns = bool(_namespace_prefix())
        if ns:
            prefix += _namespace_prefix()
            if uid is not None:
                prefix += ["--setuid", str(uid), "--setgid", str(NOBODY)]
            prefix.append("--")
        if prlimit:
            prefix += [prlimit, *_rlimit_args(limits), "--"]
        if ns:  # PID 1 of a namespace ignores its own default-action signals: keep the program off PID 1
            prefix += [_tool("sh") or "/bin/sh", "-c", '"$@"; exit $?', "sh"]
    extra = {} if ns or uid is None else {"user": uid, "group": NOBODY, "extra_groups": []}
    start = time.monotonic()
    proc = subprocess.Popen(
        prefix + argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, start_new_session=True, preexec_fn=None if prlimit else _preexec(limits),
        **extra)
    bufs = {proc.stdout: bytearray(), proc.stderr: bytearray()}
    timed_out = overflow = over_quota = False
    exited_at = None
    next_check = start + _QUOTA_EVERY_S
    with selectors.DefaultSelector() as sel:
        for stream in bufs:
            os.set_blocking(stream.fileno(), False)
            sel.register(stream, selectors.EVENT_READ)
        try:
            while True:
                now = time.monotonic()
                if exited_at is None and _exited(proc.pid):
                    exited_at = now
                if exited_at is not None and (not sel.get_map() or now - exited_at > _GRACE_S):
                    break
                if now - start > timeout:
                    timed_out = True
                    break
                if quota_mb is not None and now >= next_check:
                    next_check = now + _QUOTA_EVERY_S
                    if _folder_usage(cwd) > quota_mb << 20:
                        over_quota = True
                        break
                if not sel.get_map():
                    time.sleep(0.01)  # the program closed its output but still runs
                    continue
                for key, _ in sel.select(timeout=0.05):
                    chunk = os.read(key.fd, 1 << 16)
                    if not chunk:
                        sel.unregister(key.fileobj)
                        continue
                    buf = bufs[key.fileobj]
                    room = output_limit - len(buf)
                    buf += chunk[:room]
                    overflow |= len(chunk) > room
                if overflow:
                    break
        finally:
            _kill_group(proc, bool(ns))
            proc.stdout.close()
            proc.stderr.close()
    if quota_mb is not None and not (timed_out or overflow) and _folder_usage(cwd) > quota_mb << 20:
        over_quota = True  # it filled its folder and exited between two checks
    rc = None if timed_out or overflow or over_quota else proc.returncode  # we killed it: its status says nothing
    if ns and rc is not None and 128 < rc < 128 + 65:  # `sh` (or bwrap) reports a signal as 128 + its number
        rc = -(rc - 128)
    return _Proc(rc, bytes(bufs[proc.stdout]), bytes(bufs[proc.stderr]), timed_out, overflow, over_quota)


# Packages a Go file may use without importing them (HumanEval-X's prompts and tests rely on these).
_GO_STD = {p.rsplit("/", 1)[-1]: (None, p) for p in (
    "bytes", "crypto/md5", "errors", "fmt", "math", "math/rand", "reflect", "regexp", "sort", "strconv",
    "strings", "time", "unicode")}

# One exported member of each, to use the packages in the seed program of `_go_seed`.
_GO_SEED_USE = {"bytes": "Compare", "crypto/md5": "Sum", "errors": "New", "fmt": "Sprint", "math": "Abs",
                "math/rand": "Intn", "reflect": "DeepEqual", "regexp": "MustCompile", "sort": "Ints",
                "strconv": "Itoa", "strings": "Split", "time": "Now", "unicode": "IsUpper"}

_GO_DECLARING = {"short_var_declaration": "left", "var_spec": "name", "const_spec": "name",
                 "parameter_declaration": "name", "range_clause": "left"}


def _go_file(source: str):
    """(import specs as (alias, path), byte spans of the import declarations, used names, declared names)."""
    from neuro.code.syntax import parse

    root = parse(source, "go").root_node
    if root.has_error:
        return None
    specs, spans, used, declared = [], [], set(), set()
    stack = [root]
    while stack:
        node = stack.pop()
        stack.extend(reversed(node.children))  # document order, so kept imports keep their order
        if node.type == "import_declaration":
            spans.append((node.start_byte, node.end_byte))
        elif node.type == "import_spec":
            alias = node.child_by_field_name("name")
            path = node.child_by_field_name("path").text.decode().strip('"`')
            specs.append((alias.text.decode() if alias else None, path))
        elif node.type == "selector_expression" and node.child_by_field_name("operand").type == "identifier":
            used.add(node.child_by_field_name("operand").text.decode())
        elif node.type == "qualified_type":
            used.add(node.child_by_field_name("package").text.decode())
        elif node.type in _GO_DECLARING:
            target = node.child_by_field_name(_GO_DECLARING[node.type])
            names = [target] if target is not None and target.type == "identifier" else (
                [c for c in target.children if c.type == "identifier"] if target is not None else [])
            declared.update(n.text.decode() for n in names)
    return specs, spans, used, declared


def _go_package_name(alias: str | None, path: str) -> str | None:
    """The name an import binds, or None where the path does not tell (then the import is kept)."""
    last = path.rsplit("/", 1)[-1]
    if alias:
        return alias
    return None if re.search(r"[^a-z0-9]|^v\d+$", last) else last


def reconcile_go_imports(code: str, test: str) -> tuple[str, str]:
    """Make each Go file import what it uses, as goimports would: drop unused imports, add missing ones.

    The program and its test are separate files of one package, and Go rejects an unused import:
    HumanEval-X's prompts import packages their solutions never use, and its tests use packages only
    the prompt imports (e.g. math). Missing imports are taken from either file or a few standard
    packages. A file that does not parse, or needs nothing changed, is returned as it is.
    """
    files = [code, test]
    parsed = [_go_file(f) for f in files]
    pool = dict(_GO_STD)
    for info in parsed:
        for alias, path in info[0] if info else ():
            name = _go_package_name(alias, path)
            if name and name not in ("_", "."):
                pool[name] = (alias, path)
    out = []
    for source, info in zip(files, parsed, strict=True):
        if info is None:
            out.append(source)
            continue
        specs, spans, used, declared = info
        keep = [(a, p) for a, p in specs if _go_package_name(a, p) in {None, "_", ".", *used}]
        have = {_go_package_name(a, p) for a, p in keep}
        keep += [pool[n] for n in sorted(used - have - declared) if n in pool]
        if keep == specs:
            out.append(source)
            continue
        raw = source.encode()
        for start, end in sorted(spans, reverse=True):
            raw = raw[:start] + raw[end:]
        block = "import (\n" + "".join(f"\t{a + ' ' if a else ''}\"{p}\"\n" for a, p in keep) + ")\n" if keep else ""
        text = raw.decode()
        clause = re.search(r"(?m)^package\s+\w+[^\n]*\n?", text)
        cut = clause.end() if clause else 0
        out.append(text[:cut] + "\n" + block + "\n" + text[cut:].lstrip("\n"))
    return out[0], out[1]


def _write(path: Path, text: str) -> None:
    path.write_bytes(text.encode("utf-8", "replace"))
    path.chmod(0o644)


def _share(work: Path) -> None:
    """Let the run's uid read what the compiler's uid wrote, whatever umask the caller has."""
    for path in work.rglob("*"):
        mode = path.stat().st_mode
        path.chmod(mode | 0o044 | (0o011 if mode & 0o100 else 0))


def _plan(lang: str, code: str, test: str, work: Path, memory_mb: int, uid: int | None) -> list[_Step]:
    """Write the program files and return the compile and run steps."""
    big = memory_mb + 1024
    if lang == "python":
        _write(work / "main.py", code + "\n\n" + test)
        return [_Step((_tool("python3"), "-I", "main.py"), False, memory_mb)]
    if lang == "javascript":
        _write(work / "assert_shim.js", _JS_SHIM)
        _write(work / "main.js", code + "\n\n" + test)
        return [_Step((_tool("node"), f"--max-old-space-size={memory_mb}", "-r", str(work / "assert_shim.js"),
                       "main.js"), False, big, (("NODE_PATH", _NODE_PATH),))]
    if lang == "cpp":
        source = code + "\n\n" + test
        _write(work / "main.cpp", source)
        libs = ("-lcrypto",) if "openssl/" in source else ()  # HumanEval-X 162 hashes with OpenSSL's MD5
        return [_Step((_tool("g++"), *_CPP_FLAGS, "-include", str(_cpp_header()), "main.cpp", "-o", "main", *libs),
                      True, 2048),
                _Step(("./main",), False, memory_mb)]
    if lang == "java":
        _write(work / "Main.java", code + "\n\n" + test)
        return [_Step((_tool("javac"), *_javac_flags(), "-encoding", "UTF-8", "-nowarn", "-d", ".", "Main.java"),
                      True, 2048),
                _Step((_tool("java"), f"-Xmx{memory_mb}m", *_JVM_FLAGS, "-Djava.io.tmpdir=.", "-cp", ".",
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
        return [_Step((_tool("go"), "test", "-c", "-vet=off", "-ldflags=-s -w", "-o", "prog.test", "."),
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


def _env(work: Path, extra: Iterable[tuple[str, str]]) -> dict[str, str]:
    home, tmp = (_HOME, "/tmp") if _isolation() == "bubblewrap" else (str(work), str(work))
    env = {"PATH": SYSTEM_PATH, "HOME": home, "TMPDIR": tmp, "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8",
           "PYTHONDONTWRITEBYTECODE": "1", "PYTHONHASHSEED": "0"}
    # Without a network namespace these at least stop proxied HTTP (not direct sockets).
    env.update({k: "http://127.0.0.1:9" for k in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY",
                                                   "HTTPS_PROXY", "ALL_PROXY")})
    env.update(extra)
    return env


_REASON = re.compile(r"^(?:(?:\w+\.)*\w*(?:Error|Exception)\b.*|.*Assertion .* failed.*|--- FAIL.*|panic: .*"
                     r"|fatal error: .*|.*\berror: .*|Exception in thread .*|terminate called .*)$", re.M)

_MEMORY = re.compile(r"MemoryError|std::bad_alloc|OutOfMemoryError|out of memory|Allocation failed"
                     r"|Cannot allocate memory|allocation failed|failed to reserve", re.I)


def _reason(text: str) -> str:
    match = _REASON.search(text)
    line = match.group(0) if match else next(
        (x for x in text.splitlines() if x.strip() and not x.startswith("#")), "")
    return line.strip()[:200]


def _signal_name(rc: int) -> str:
    try:
        return signal.Signals(-rc).name
    except ValueError:
        return f"signal {-rc}"


def _result(status: ExecutionStatus, proc: _Proc | None, start: float, reason: str) -> ExecutionResult:
    out = proc.stdout.decode("utf-8", "replace") if proc else ""
    err = proc.stderr.decode("utf-8", "replace") if proc else ""
    return ExecutionResult(status == "passed", status, proc.returncode if proc else None, out, err,
                           bool(proc and proc.overflow), time.monotonic() - start, reason)


def _classify(step: _Step, proc: _Proc, limits: _Limits, output_limit: int) -> tuple[ExecutionStatus, str]:
    text = proc.stderr.decode("utf-8", "replace") + "\n" + proc.stdout.decode("utf-8", "replace")
    what = "compilation" if step.compile else "run"
    if proc.overflow:
        return "killed", f"{what} output exceeded {output_limit} bytes"
    if proc.timed_out:
        return "timeout", f"{what} exceeded the wall-clock limit"
    if proc.over_quota:
        quota = _QUOTA_MB[step.compile]
        return "killed", f"{what} wrote more than {quota} MB (or {_QUOTA_ENTRIES} files) to its folder"
    rc = proc.returncode
    if rc == 0:
        return ("passed", "all tests passed") if not step.compile else ("passed", "compiled")
    if rc == -signal.SIGXCPU:
        return "timeout", f"{what} exceeded the CPU-time limit ({limits.cpu_s} s)"
    if _MEMORY.search(text):
        return "memory", f"{what} exceeded the memory limit: {_reason(text) or 'out of memory'}"
    if rc == -signal.SIGXFSZ:
        return "killed", f"{what} exceeded the file-size limit"
    if step.compile:
        return "compile_error", _reason(text) or f"compiler exit status {rc}"
    detail = _reason(text)
    if rc is not None and rc < 0:
        return "failed", f"killed by {_signal_name(rc)}" + (f": {detail}" if detail else "")
    return "failed", detail or f"exit status {rc}"


def run_program(lang: str, code: str, test: str, *, timeout: float = 10.0, compile_timeout: float = 60.0,
                memory_mb: int = 512, output_limit: int = 64 * 1024) -> ExecutionResult:
    """Compile and run `code` with its `test` in the sandbox; passed means the test exited with status 0.

    `timeout` bounds the run and `compile_timeout` the compilation (wall-clock seconds; CPU time is
    capped at the same number plus one); `memory_mb` is the heap budget (see the module docstring);
    stdout and stderr are each cut at `output_limit` bytes, and a run that passes it is killed.
    """
    start = time.monotonic()
    lang = normalize_lang(lang)
    missing = [t for t in _REQUIRED[lang] if not _tool(t)]
    if missing:
        return _result("error", None, start, f"{', '.join(missing)} not installed: cannot run {lang}")
    separate = _separate_uids()
    compile_uid = NOBODY if separate else None
    run_uid = _RUN_UIDS[0] + int.from_bytes(os.urandom(4), "little") % (_RUN_UIDS[1] - _RUN_UIDS[0])
    run_uid = run_uid if separate else None
    own_tasks = 0 if separate else _user_tasks(os.geteuid())
    bwrap = _isolation() == "bubblewrap"
    work = Path(tempfile.mkdtemp(prefix="neuro-exec-"))
    try:
        work.chmod(0o755)
        steps = _plan(lang, code, test, work, memory_mb, compile_uid)
        binds = _binds(lang) if bwrap else []
        proc = None
        for step in steps:
            uid = compile_uid if step.compile else run_uid
            if (not bwrap and uid is not None and not _world_executable(step.argv[0])
                    and not step.argv[0].startswith("./")):
                uid = None  # the tool lives where other uids cannot reach it: run as ourselves (bwrap binds it)
            if uid is not None:
                os.chown(work, uid, NOBODY)
            limit_s = compile_timeout if step.compile else timeout
            limits = _Limits(cpu_s=math.ceil(limit_s) + 1, as_mb=step.as_mb, fsize_mb=512 if step.compile else 64,
                             nproc=(4 * _NPROC_BUDGET if step.compile else _NPROC_BUDGET) + own_tasks)
            try:
                proc = _spawn(list(step.argv), work, _env(work, step.env), limit_s, limits, uid, output_limit,
                              binds, _QUOTA_MB[step.compile])
            except OSError as err:
                return _result("error", None, start, f"could not start {step.argv[0]}: {err}")
            status, reason = _classify(step, proc, limits, output_limit)
            if status != "passed":
                return _result(status, proc, start, reason)
            if separate and step.compile:
                _share(work)
        return _result("passed", proc, start, "all tests passed")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run_snippet(snippet: Snippet, code: str | None = None, **kwargs) -> ExecutionResult:
    """Run a snippet's test against its own code or against `code` (e.g. a model's completion)."""
    if not snippet.test:
        return ExecutionResult(False, "error", None, "", "", False, 0.0, f"snippet {snippet.id} has no test")
    return run_program(snippet.lang, snippet.code if code is None else code, snippet.test, **kwargs)


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples of which c pass: 1 - C(n-c, k) / C(n, k) (Chen et al., 2021)."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n (got n={n}, c={c}, k={k})")
    if n - c < k:
        return 1.0
    prod = 1.0  # the product form avoids huge binomials: prod_{i=n-c+1}^{n} (1 - k / i)
    for i in range(n - c + 1, n + 1):
        prod *= 1.0 - k / i
    return 1.0 - prod


def pass_at_k_by_language(outcomes: Iterable[tuple[str, str, bool]], ks: Iterable[int] = (1,)
                          ) -> dict[str, dict[int, float]]:
    """Mean pass@k per language from (lang, task, passed) samples; a k above some task's n is left out."""
    counts: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    for lang, task, passed in outcomes:
        entry = counts[(normalize_lang(lang), task)]
        entry[0] += 1
        entry[1] += bool(passed)
    table: dict[str, dict[int, float]] = {}
    for lang in LANGS:
        tasks = [nc for (lng, _), nc in counts.items() if lng == lang]
        if tasks:
            table[lang] = {k: sum(pass_at_k(n, c, k) for n, c in tasks) / len(tasks)
                           for k in ks if all(n >= k for n, _ in tasks)}
    return table
