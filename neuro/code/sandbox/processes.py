"""Running one step: the command under bubblewrap or the fallback, its resource limits (prlimit or
preexec), the wall-clock timeout, the output cap, the work folder's disk quota, and killing the whole
process tree (and PID namespace) when the step ends."""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from neuro.code.sandbox import isolation
from neuro.code.sandbox.isolation import NOBODY, _bwrap_argv, _namespace_prefix, _setpriv, _tool, _tool_roots

_GRACE_S = 0.5  # how long to read output after the program exited (its children may hold the pipes)

_QUOTA_ENTRIES = 10_000  # files and folders in the work folder

_QUOTA_EVERY_S = 0.2  # how often the work folder is measured


@dataclass(frozen=True)
class _Limits:
    cpu_s: int
    as_mb: int | None
    fsize_mb: int
    nproc: int
    nofile: int = 1024


@dataclass(frozen=True)
class _Proc:
    returncode: int | None
    stdout: bytes
    stderr: bytes
    timed_out: bool
    overflow: bool  # the output passed the cap (and the run was killed)
    over_quota: bool = False  # the work folder passed its quota (and the run was killed)


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
    mechanism = isolation._isolation()
    prlimit = _tool("prlimit")
    prefix: list[str] = []
    if mechanism == "bubblewrap":
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
    as_uid = not ns and uid is not None  # no namespace to drop to `uid` in: Popen does it
    start = time.monotonic()
    proc = subprocess.Popen(
        prefix + argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, start_new_session=True, preexec_fn=None if prlimit else _preexec(limits),
        user=uid if as_uid else None, group=NOBODY if as_uid else None, extra_groups=[] if as_uid else None)
    stdout, stderr = proc.stdout, proc.stderr
    assert stdout is not None and stderr is not None  # both are pipes (stdout=PIPE, stderr=PIPE)
    bufs: dict[object, bytearray] = {stdout: bytearray(), stderr: bytearray()}  # keyed as the selector's fileobj
    timed_out = overflow = over_quota = False
    exited_at = None
    next_check = start + _QUOTA_EVERY_S
    with selectors.DefaultSelector() as sel:
        for stream in (stdout, stderr):
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
            stdout.close()
            stderr.close()
    if quota_mb is not None and not (timed_out or overflow) and _folder_usage(cwd) > quota_mb << 20:
        over_quota = True  # it filled its folder and exited between two checks
    rc = None if timed_out or overflow or over_quota else proc.returncode  # we killed it: its status says nothing
    if ns and rc is not None and 128 < rc < 128 + 65:  # `sh` (or bwrap) reports a signal as 128 + its number
        rc = -(rc - 128)
    return _Proc(rc, bytes(bufs[stdout]), bytes(bufs[stderr]), timed_out, overflow, over_quota)
