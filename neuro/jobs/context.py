"""The context a running job reports through: JobContext implements neuro.training.context.TaskContext
(progress, metrics, log, cancellation) by writing the job's folder, and hands the task its saved corpus
and its checkpoints (`save_checkpoint`, `resume_from`). The worker (runner.py) makes one per run.
"""

from __future__ import annotations

import os
import shutil
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from neuro.choices import JobState
from neuro.jobs.state import MetricPoint, proc_start, read_json, read_metrics, write_json, write_metrics
from neuro.training.checkpoints import TRAIN_STATE
from neuro.training.context import JobCancelled

HEARTBEAT_S = 5.0


@dataclass
class JobContext:
    """A running job's TaskContext (neuro/training/context.py), written to its folder, plus what the
    worker hands the task: the saved corpus, `save_checkpoint` and `resume_from`. `echo` also prints
    the log to stderr."""

    path: Path
    echo: bool = False
    _status: dict = field(default_factory=dict)
    _metrics: list[MetricPoint] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _cancel: threading.Event = field(default_factory=threading.Event)
    _last_write: float = 0.0
    _phase: str = ""
    _phase_since: tuple[float, int] | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _plan: list = field(default_factory=list)  # [(phase, weight)] the task declared (`phases`)
    _overall: float = 0.0
    _index: int = 0

    @property
    def checkpoint_dir(self) -> Path:
        return self.path / "checkpoint"

    @property
    def resume_from(self) -> Path | None:
        """The checkpoint to continue from: a job that starts with a resumable checkpoint was resumed."""
        return self.checkpoint_dir if (self.checkpoint_dir / TRAIN_STATE).is_file() else None

    def snippets(self):
        """The corpus saved with the job (None when the job has none)."""
        from neuro.code.corpus import load_jsonl
        data = self.path / "data.jsonl"
        return load_jsonl(data) if data.is_file() else None

    # status
    def _write_status(self, **changes) -> None:
        with self._lock:
            self._status.update(changes, heartbeat=time.time())
            write_json(self.path / "status.json", self._status)

    def begin(self) -> None:
        self._status = read_json(self.path / "status.json", {}) or {}
        self._metrics = read_metrics(self.path / "metrics.json")  # a resumed job's earlier steps
        self._write_status(state="running", pid=os.getpid(), proc_start=proc_start(os.getpid()),
                           host=socket.gethostname(), own_group=os.getpgid(0) == os.getpid(),
                           started=time.time(), message="starting", error=None)
        threading.Thread(target=self._beat, daemon=True, name="heartbeat").start()

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            self._write_status()

    def end(self, state: JobState, message: str = "", error: str | None = None) -> None:
        self._stop.set()
        self._flush_metrics()
        changes = {"progress": {"done": 1, "total": 1, "phase": "done"}} if state == "finished" else {}
        self._write_status(state=state, message=message, error=error, finished=time.time(), **changes)

    def phases(self, plan: Sequence[tuple[str, float]]) -> None:
        """The phases the task will report, in order, each weighted by its expected model passes: progress
        of a listed phase then also says the phase's number and the whole job's fraction (see `_overall_at`)."""
        self._plan = [(name, max(0.0, float(weight))) for name, weight in plan]

    def _overall_at(self, done: int, total: int, phase: str) -> dict:
        """{"overall", "index", "phases"}: the earlier phases' weights plus this one's done share, over the
        total weight; never lower than before (an unlisted phase, e.g. loading, keeps the last value)."""
        names = [name for name, _ in self._plan]
        if not names:
            return {}
        if phase in names:
            i = names.index(phase)
            weights = [w for _, w in self._plan]
            whole = sum(weights) or 1.0
            share = min(1.0, done / total) if total else 0.0
            self._overall = max(self._overall, (sum(weights[:i]) + weights[i] * share) / whole)
            self._index = i + 1
        return {"overall": round(self._overall, 6), "index": self._index, "phases": len(names)}

    def progress(self, done: int, total: int, phase: str = "") -> None:
        """Progress of the current phase; written at most twice a second (and always at the end)."""
        new_phase = phase != self._phase or self._phase_since is None
        since = self._phase_since
        if new_phase or since is None:  # a new phase: its rate is measured from here
            since = (time.time(), int(done))
            self._phase, self._phase_since = phase, since
        progress = {"done": int(done), "total": int(total), "phase": phase, "since": list(since),
                    **self._overall_at(done, total, phase)}
        if new_phase or done >= total or time.time() - self._last_write > 0.5:
            self._last_write = time.time()
            self._flush_metrics()
            self._write_status(progress=progress, message=phase)
        else:
            with self._lock:
                self._status["progress"] = progress

    def metric(self, **values) -> None:
        """One metric point; past 4000 points every other one is dropped, so files stay small."""
        self._metrics.append(MetricPoint.from_json(values))
        if len(self._metrics) > 4000:
            self._metrics = self._metrics[::2]

    def _flush_metrics(self) -> None:
        if self._metrics:
            write_metrics(self.path / "metrics.json", self._metrics)

    def log(self, message: str) -> None:
        line = f"{time.strftime('%H:%M:%S')} {message}\n"
        with open(self.path / "log.txt", "a", encoding="utf-8") as fh:
            fh.write(line)
        if self.echo:
            print(line, end="", file=sys.stderr, flush=True)

    # cancel
    def request_cancel(self, *_args) -> None:
        self._cancel.set()

    def cancelled(self) -> bool:
        return self._cancel.is_set() or (self.path / "cancel").exists()

    def check(self) -> None:
        """Raise JobCancelled when a cancel was requested (call between steps)."""
        if self.cancelled():
            raise JobCancelled()

    # checkpoints and artifacts
    def save_checkpoint(self, write: Callable[[Path], None], name: str = "checkpoint") -> Path:
        """`write(folder)` fills a temporary folder that then replaces `<job>/<name>` as a whole.

        Metrics are flushed first, so metrics.json always reaches the checkpoint's step (a resume keeps
        the points up to it). A kill between the two renames is repaired by `recover_checkpoint`."""
        self._flush_metrics()
        final = self.path / name
        tmp = self.path / f".{name}.{uuid.uuid4().hex[:6]}.tmp"
        tmp.mkdir()
        try:
            write(tmp)
            old = self.path / f".{name}.old.tmp"
            shutil.rmtree(old, ignore_errors=True)  # a stale one would block the rename
            if final.exists():
                os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        return final
