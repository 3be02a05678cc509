"""Running a program against its test: the compile and run steps of its language, each under its limits
and uid, and the outcome classified into one of STATUSES with a one-line reason."""

from __future__ import annotations

import math
import os
import re
import shutil
import signal
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from neuro.choices import ExecutionStatus
from neuro.code.corpus import Snippet, normalize_lang
from neuro.code.sandbox import isolation, processes
from neuro.code.sandbox.isolation import _HOME, NOBODY, SYSTEM_PATH, _separate_uids, _tool, _world_executable
from neuro.code.sandbox.languages import _REQUIRED, _binds, _plan, _Step
from neuro.code.sandbox.processes import _Limits, _Proc, _spawn, _user_tasks

STATUSES = ("passed", "failed", "compile_error", "timeout", "memory", "killed", "error")

_RUN_UIDS = (200_000, 260_000)  # unmapped uids for runs; any free uid works for setuid as root

_NPROC_BUDGET = 256  # processes + threads per run (a JVM uses about 25, node about 11)

_QUOTA_MB = {True: 2048, False: 256}  # disk a step may use in its work folder: compile, run


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


def _share(work: Path) -> None:
    """Let the run's uid read what the compiler's uid wrote, whatever umask the caller has."""
    for path in work.rglob("*"):
        mode = path.stat().st_mode
        path.chmod(mode | 0o044 | (0o011 if mode & 0o100 else 0))


def _env(work: Path, extra: Iterable[tuple[str, str]]) -> dict[str, str]:
    home, tmp = (_HOME, "/tmp") if isolation._isolation() == "bubblewrap" else (str(work), str(work))
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
        return "killed", f"{what} wrote more than {quota} MB (or {processes._QUOTA_ENTRIES} files) to its folder"
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
    capped at the same number plus one); `memory_mb` is the heap budget (see the package docstring);
    stdout and stderr are each cut at `output_limit` bytes, and a run that passes it is killed.
    """
    start = time.monotonic()
    lang = normalize_lang(lang)
    missing = [t for t in _REQUIRED[lang] if not _tool(t)]
    if missing:
        return _result("error", None, start, f"{', '.join(missing)} not installed: cannot run {lang}")
    separate = _separate_uids()
    compile_uid = NOBODY if separate else None
    drawn = _RUN_UIDS[0] + int.from_bytes(os.urandom(4), "little") % (_RUN_UIDS[1] - _RUN_UIDS[0])
    run_uid = drawn if separate else None
    own_tasks = 0 if separate else _user_tasks(os.geteuid())
    bwrap = isolation._isolation() == "bubblewrap"
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
