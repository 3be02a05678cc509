"""Process control of jobs: start a job's worker process in its own session, and cancel a job (the cancel
file, then SIGTERM and if need be SIGKILL to its process group, then the state recorded). What the folder
holds is read and written through state.py.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from neuro.jobs.state import (
    ACTIVE,
    JobInfo,
    find_job,
    proc_start,
    process_alive,
    read_json,
    read_known_job,
    remove_temporaries,
    write_json,
)
from neuro.paths import REPO_DIR


def launch(job_dir: Path, env: dict | None = None) -> int:
    """Start the worker process for a created job, in its own session (so cancel can kill its group)."""
    job_dir = Path(job_dir)
    log = open(job_dir / "log.txt", "ab")
    try:
        proc = subprocess.Popen([sys.executable, "-m", "neuro.jobs", "run", str(job_dir.resolve())],
                                cwd=REPO_DIR, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                start_new_session=True, env={**os.environ, **(env or {})})
    finally:
        log.close()
    write_json(job_dir / "launcher.json", {"pid": proc.pid, "proc_start": proc_start(proc.pid),
                                           "host": socket.gethostname()})
    # Reap the child when it exits so a long-lived app does not collect zombies.
    threading.Thread(target=proc.wait, daemon=True, name=f"reap-{proc.pid}").start()
    return proc.pid


def _wait_gone(pid: int, start: str | None, timeout: float) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if not process_alive(pid, start):
            return True
        time.sleep(0.1)
    return not process_alive(pid, start)


def cancel_job(job: str | os.PathLike | JobInfo, *, grace: float = 10.0,
               root: str | os.PathLike | None = None) -> JobInfo:
    """Ask a job to stop; on this host make sure its process group is gone and the state is clean."""
    info = find_job(job, root)
    if not info.active:
        return info
    (info.path / "cancel").touch()
    status = read_json(info.path / "status.json", {}) or {}
    launcher = read_json(info.path / "launcher.json", {}) or {}
    pid, start, host = status.get("pid") or launcher.get("pid"), status.get("proc_start"), status.get("host")
    if not status.get("pid"):
        start, host = launcher.get("proc_start"), launcher.get("host")
    if pid and host == socket.gethostname() and process_alive(pid, start):
        # A detached worker leads its own process group; a CLI run in a user's shell does not, and
        # killing that group would hit the user's pipeline: signal the process alone then.
        group = status.get("own_group", True)
        _signal(pid, signal.SIGTERM, group)
        if not _wait_gone(pid, start, grace):
            _signal(pid, signal.SIGKILL, group)
            _wait_gone(pid, start, 5.0)
    elif host and host != socket.gethostname():
        return read_known_job(info.path)  # the worker elsewhere sees the cancel file at its next step
    status = read_json(info.path / "status.json", {}) or {}
    if status.get("state") in ACTIVE:
        write_json(info.path / "status.json", dict(status, state="cancelled", message="cancelled by user",
                                                   finished=time.time()))
    remove_temporaries(info.path)
    return read_known_job(info.path)


def _signal(pid: int, sig: int, group: bool) -> None:
    try:
        if group:
            os.killpg(os.getpgid(pid), sig)
            return
    except (ProcessLookupError, PermissionError):
        pass
    try:
        os.kill(pid, sig)
    except OSError:
        pass
