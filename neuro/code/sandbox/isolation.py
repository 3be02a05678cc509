"""How runs are isolated on this host: finding tools, the bubblewrap command line (and probing that it
works), the `unshare` fallback, and what `sandbox_features()` reports (see the package docstring)."""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path

from neuro.choices import Isolation

SYSTEM_PATH = "/usr/local/bin:/usr/bin:/bin"

NOBODY = 65534

_TMPFS_MB = 128  # bubblewrap: the private /tmp (a tmpfs lives in memory, hence the cap)

_HOME_MB = 16  # and the private home directory

_HOME = "/home/sandbox"

# /etc entries a sandbox sees (the dynamic loader's cache and config, Debian's alternatives links)
_SANDBOX_ETC = ("/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/alternatives")


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


def _need_tool(name: str) -> str:
    """`_tool` of a tool a command line names: its caller checked that it is installed (the isolation or the
    language's toolchain is available only then)."""
    path = _tool(name)
    if path is None:
        raise FileNotFoundError(f"{name} is not installed")
    return path


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
    return [_need_tool("setpriv"), f"--reuid={uid}", f"--regid={NOBODY}", "--clear-groups", "--inh-caps=-all",
            "--bounding-set=-all", "--no-new-privs", "--"]


def _bwrap_argv(work: Path, binds: Iterable[str]) -> list[str]:
    """bubblewrap's command line for one step, up to and including the `--` before the command.

    New namespaces (all but the user namespace as root: see the package docstring), a root built from
    read-only binds of /usr, a few /etc entries and `binds` (each at its host path), a private /proc and
    /dev, a fresh size-capped tmpfs for /tmp and for the home directory, and `work` as the only writable
    bind and the working directory.
    """
    args = [_need_tool("bwrap"), "--unshare-net", "--unshare-pid", "--unshare-ipc", "--unshare-uts",
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
    """What the sandbox enforces on this host (see the package docstring); JSON-friendly."""
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
