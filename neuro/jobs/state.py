"""Job folders on disk: a job read back from its folder, and the changes made to it there (a job whose
process is gone recorded as failed, a resume re-queued). Starting and stopping the process is in
processes.py, the running job's side (JobContext) in context.py; which kinds of job exist, and starting,
running and resuming them, in kinds.py and runner.py.

A job is a folder `cache/jobs/<id>/`; the folder is the only truth, so a refreshed page, a second tab
or a restarted app sees every job as it is:

    spec.json      kind, label, params (the kind's typed config as JSON; written once, before the process starts)
    data.jsonl     the corpus the job was started with (so it runs on exactly what the user saw)
    status.json    state, pid, host, heartbeat, progress, message, error (rewritten atomically); progress is the
                   current phase's done / total and, when the task declared its phases (JobContext.phases),
                   the phase's number of n and the whole job's fraction; elapsed_before: seconds of earlier runs
    metrics.json   list of metric points, e.g. {"step": 3, "loss": 2.1, "tokens": 512} (rewritten atomically; read
                   as `MetricPoint`s)
    result.json    the kind's typed result as JSON (written atomically before the state becomes "finished")
    log.txt        append-only log; the detached process's stdout and stderr land here too
    checkpoint/    the trainable state and what resuming needs (train_state.json: step, losses, batch order
                   and its RNG; optimizer.pt while steps remain), replaced atomically as a whole folder
    cancel         present when a cancel was requested

States: queued -> running -> finished | failed | cancelled. A queued or running job whose process is
gone (checked by pid and process start time on this host, by heartbeat age elsewhere) is shown, and
recorded, as failed. Cancel: the cancel file plus SIGTERM to the job's process group; the worker stops
at its next check and records "cancelled"; a worker that does not stop within a grace period is killed
and the canceller records the state and removes temporary files.

Resume: a failed or cancelled job whose checkpoint holds train_state.json goes back to "queued" and a
new worker continues from that checkpoint (metrics after its step are dropped, the task skips what the
checkpoint already holds). A finished job, or one without such a checkpoint, is refused.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import socket
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from neuro import atomic
from neuro.choices import JobState
from neuro.paths import cache_dir
from neuro.progress import duration, seconds_left
from neuro.training.checkpoints import TRAIN_STATE

ACTIVE = ("queued", "running")

TERMINAL = ("finished", "failed", "cancelled")

STALE_S = 300.0  # a job on another host with no heartbeat for this long is considered dead


class JobRefused(ValueError):
    """Parameters refused before anything started; `reasons` lists every problem found."""

    def __init__(self, reasons: Sequence[str]):
        self.reasons = list(reasons)
        super().__init__("; ".join(self.reasons))


def jobs_root(root: str | os.PathLike | None = None) -> Path:
    return Path(root) if root is not None else cache_dir() / "jobs"


def write_json(path: Path, data) -> None:
    """Write JSON atomically (neuro.atomic: a unique temporary file in the same folder, then os.replace)."""
    atomic.write_json(path, data, indent=1, default=str)


def read_json(path: Path, default=None):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return default


def remove_temporaries(job_dir: Path) -> None:
    """Temporary files and folders left by a killed writer (names start with '.', end with '.tmp')."""
    recover_checkpoint(job_dir)
    for path in job_dir.glob(".*.tmp"):
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def recover_checkpoint(job_dir: Path, name: str = "checkpoint") -> None:
    """A writer killed between its two renames (see JobContext.save_checkpoint) left the previous
    checkpoint as `.<name>.old.tmp` and none in place: put it back, so a resume still finds it."""
    old = job_dir / f".{name}.old.tmp"
    if old.is_dir() and not (job_dir / name).exists():
        os.replace(old, job_dir / name)


def proc_start(pid: int) -> str | None:
    """The process's start time (clock ticks since boot) from /proc, None when it is gone or a zombie."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return None if fields[0] in ("Z", "X") else fields[19]


def process_alive(pid: int | None, start: str | None = None) -> bool:
    """True when `pid` runs (not a zombie) and, when `start` is given, is the same process (pid reuse)."""
    if not pid:
        return False
    if Path("/proc").is_dir():
        now = proc_start(pid)
        return now is not None and (start is None or now == start)
    try:
        os.kill(pid, 0)
        return True
    except OSError:
        return False


@dataclass(frozen=True)
class JobInfo:
    """What a listing shows of one job (read from its folder)."""

    id: str
    kind: str
    label: str
    state: JobState
    path: Path
    params: dict
    created: float
    started: float | None = None
    finished: float | None = None
    heartbeat: float | None = None
    done: int = 0
    total: int = 0
    phase: str = ""
    message: str = ""
    error: str | None = None
    pid: int | None = None
    host: str | None = None
    phase_since: tuple[float, int] | None = None  # (time, done) of the current phase's first report
    overall: float | None = None  # the whole job's fraction done, when the task declared its phases
    phase_index: int = 0  # the current phase, 1-based, of phase_count declared ones (0: none declared)
    phase_count: int = 0
    elapsed_before: float = 0.0  # seconds run before the last resume (a resumed job keeps its time)

    @property
    def active(self) -> bool:
        return self.state in ACTIVE

    @property
    def fraction(self) -> float:
        """The whole job's fraction done (across its phases when it declared them, else the phase's)."""
        if self.state == "finished":
            return 1.0
        if self.overall is not None:
            return min(1.0, self.overall)
        return min(1.0, self.done / self.total) if self.total else 0.0

    @property
    def elapsed(self) -> float:
        """Seconds run, summed over every run of the job (a resume continues the count)."""
        if not self.started:
            return self.elapsed_before
        return self.elapsed_before + max(0.0, (self.finished or time.time()) - self.started)

    def seconds_left(self) -> float | None:
        """Time left in the current phase at the rate measured since it began (None: not yet known)."""
        if not self.active or self.phase_since is None:
            return None
        return seconds_left(self.done, self.total, *self.phase_since, time.time())

    def progress_text(self) -> str:
        """What a progress bar says: the job, its phase, how far, and about how long the phase has left."""
        text = f"{self.label} — {self.phase or self.state} ({self.done}/{self.total})"
        if self.phase_count and self.active:
            text = (f"{self.label} — {100 * self.fraction:.0f} % overall · phase {self.phase_index} of "
                    f"{self.phase_count}: {self.phase} ({self.done}/{self.total})")
        left = self.seconds_left()
        return text + (f" · about {duration(left)} left" if left else "")

    def row(self) -> dict:
        """A flat row for tables."""
        phase = self.phase
        if self.phase_count and self.active:
            phase = f"{self.phase_index}/{self.phase_count} {phase}"
        return {"id": self.id, "state": self.state, "progress": round(100 * self.fraction, 1), "kind": self.kind,
                "label": self.label, "phase": phase,
                "created": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.created)),
                "elapsed_s": round(self.elapsed, 1), "message": self.error or self.message}


def _dead(status: dict, launcher: dict) -> str | None:
    """Why an active job's process is known to be gone, or None when it may still run."""
    here = socket.gethostname()
    pid, start, host = status.get("pid"), status.get("proc_start"), status.get("host")
    if not pid:  # queued: the launcher knows the pid until the worker writes its own
        pid, start, host = launcher.get("pid"), launcher.get("proc_start"), launcher.get("host")
    if pid and host == here:
        return None if process_alive(pid, start) else "the job's process ended without finishing (killed or crashed)"
    beat = status.get("heartbeat") or status.get("created") or 0
    if time.time() - beat > STALE_S:
        return f"no heartbeat for {time.time() - beat:.0f} s"
    return None


def read_job(path: str | os.PathLike, reconcile: bool = True) -> JobInfo | None:
    """The job in `path`, or None when it is not a job folder. With `reconcile`, an active job whose
    process is gone is recorded as failed (the status is re-read first, so a job that just finished
    is never overwritten)."""
    path = Path(path)
    spec = read_json(path / "spec.json")
    status = read_json(path / "status.json")
    if not isinstance(spec, dict) or not isinstance(status, dict):
        return None
    if reconcile and status.get("state") in ACTIVE:
        reason = _dead(status, read_json(path / "launcher.json", {}) or {})
        if reason:
            status = read_json(path / "status.json", status)
            if status.get("state") in ACTIVE:
                status = dict(status, state="failed", error=reason, finished=time.time())
                write_json(path / "status.json", status)
                remove_temporaries(path)
    progress = status.get("progress") or {}
    return JobInfo(
        id=path.name, kind=spec.get("kind", "?"), label=spec.get("label", ""), state=status.get("state", "?"),
        path=path, params=spec.get("params", {}), created=spec.get("created", 0.0),
        started=status.get("started"), finished=status.get("finished"), heartbeat=status.get("heartbeat"),
        done=int(progress.get("done", 0)), total=int(progress.get("total", 0)), phase=progress.get("phase", ""),
        message=status.get("message", ""), error=status.get("error"), pid=status.get("pid"),
        host=status.get("host"), phase_since=tuple(progress["since"]) if progress.get("since") else None,
        overall=progress.get("overall"), phase_index=int(progress.get("index", 0)),
        phase_count=int(progress.get("phases", 0)), elapsed_before=float(status.get("elapsed_before") or 0.0))


def read_known_job(path: str | os.PathLike, reconcile: bool = True) -> JobInfo:
    """`read_job` of a folder that holds a job (one created, run or cancelled just before): never None."""
    info = read_job(path, reconcile)
    if info is None:
        raise FileNotFoundError(f"{path} is not a job folder")
    return info


def list_jobs(root: str | os.PathLike | None = None, kind: str | None = None) -> list[JobInfo]:
    """Every job under the jobs folder, newest first."""
    folder = jobs_root(root)
    if not folder.is_dir():
        return []
    jobs = [job for p in folder.iterdir() if p.is_dir() and (job := read_job(p)) is not None]
    jobs = [j for j in jobs if kind is None or j.kind == kind]
    return sorted(jobs, key=lambda j: (j.created, j.id), reverse=True)


def find_job(job: str | os.PathLike | JobInfo, root: str | os.PathLike | None = None) -> JobInfo:
    """A job by id, folder or JobInfo."""
    if isinstance(job, JobInfo):
        path = job.path
    else:
        path = Path(job)
        if not (path / "spec.json").is_file():
            path = jobs_root(root) / str(job)
    info = read_job(path)
    if info is None:
        raise FileNotFoundError(f"no job {job!s}")
    return info


@dataclass(frozen=True)
class MetricPoint:
    """One point of metrics.json, as `TaskContext.metric(**values)` reported it: the training loop reports the step,
    its loss and the step's tokens; `extra` keeps every value other than step and loss by name. Written back as
    the same flat JSON object (`to_json`), so a resumed job's file reads as it was written."""

    step: int | None = None
    loss: float | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> MetricPoint:
        return cls(step=data.get("step"), loss=data.get("loss"),
                   extra={k: v for k, v in data.items() if k not in ("step", "loss")})

    def to_json(self) -> dict[str, Any]:
        known = {"step": self.step, "loss": self.loss}
        return {**{k: v for k, v in known.items() if v is not None}, **self.extra}


def read_metrics(path: Path) -> list[MetricPoint]:
    """The metric points in `path` (a metrics.json); none when it is missing or not a list of objects."""
    data = read_json(path, []) or []
    return [MetricPoint.from_json(p) for p in data if isinstance(p, Mapping)] if isinstance(data, list) else []


def write_metrics(path: Path, points: Sequence[MetricPoint]) -> None:
    write_json(path, [p.to_json() for p in points])


def job_metrics(job: JobInfo) -> list[MetricPoint]:
    return read_metrics(job.path / "metrics.json")


def log_tail(job: JobInfo, max_chars: int = 20_000) -> str:
    path = job.path / "log.txt"
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            fh.seek(max(0, size - max_chars))
            return fh.read().decode("utf-8", "replace")
    except OSError:
        return ""


def new_job_id(kind: str) -> str:
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{kind}-{uuid.uuid4().hex[:6]}"



def checkpoint_step(job: JobInfo) -> int | None:
    """The training step of the job's resumable checkpoint, None when it has none."""
    state = read_json(job.path / "checkpoint" / TRAIN_STATE)
    return int(state["step"]) if isinstance(state, dict) and "step" in state else None


def resume_reason(job: JobInfo) -> str | None:
    """Why `job` cannot be resumed (None: it can)."""
    if job.state == "finished":
        return f"job {job.id} already finished; there is nothing to resume"
    if job.active:
        return f"job {job.id} is {job.state}; only a failed or cancelled job can be resumed"
    if checkpoint_step(job) is None:
        return (f"job {job.id} has no checkpoint to resume from (it stopped before its first one; "
                "set 'checkpoint every' to save them during training)")
    return None


def requeue(path: Path) -> None:
    """Put a resumable job back to "queued": metrics cut at the checkpoint's step, cancel and result
    gone. Under a lock, so two tabs clicking Resume at once start one worker (the second is refused)."""
    with open(path / ".resume.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        info = read_job(path)
        if info is None:
            raise JobRefused([f"{path} is not a job folder"])
        reason = resume_reason(info)
        if reason:
            raise JobRefused([reason])
        step = checkpoint_step(info)
        assert step is not None  # resume_reason refuses a job without a checkpoint
        write_metrics(path / "metrics.json", [m for m in job_metrics(info) if int(m.step or 0) <= step])
        for name in ("cancel", "result.json", "launcher.json"):
            (path / name).unlink(missing_ok=True)
        write_json(path / "status.json", {"state": "queued", "created": time.time(), "resumed_from": step,
                                          "elapsed_before": info.elapsed, "message": f"resuming from step {step}"})
        with open(path / "log.txt", "a", encoding="utf-8") as fh:
            fh.write(f"{time.strftime('%H:%M:%S')} resuming from the checkpoint at step {step}\n")
