"""Starting, running and resuming jobs of the registered kinds (kinds.py), on the folders of folders.py.

Starting takes a kind and its typed config: the config is validated (every reason to refuse, before
anything is created), written to spec.json with the corpus, and the worker `python -m neuro.jobs run
<job_dir>` is launched (or the job runs here, for the CLI's foreground mode). The worker looks the
kind up in KINDS, runs it with a JobContext and writes its typed result to result.json.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
import traceback
from pathlib import Path

from neuro.jobs.folders import (
    JobContext,
    JobInfo,
    JobRefused,
    find_job,
    jobs_root,
    launch,
    new_job_id,
    read_json,
    read_known_job,
    remove_temporaries,
    requeue,
    write_json,
)
from neuro.jobs.kinds import KINDS, JobConfig, JobKind
from neuro.model.loading import LoadedModel
from neuro.training.context import JobCancelled


def create_job(kind: str, params: dict, *, label: str = "", snippets=None,
               root: str | os.PathLike | None = None) -> Path:
    """Write a queued job's folder (spec, data, status) without starting it."""
    if kind not in KINDS:
        raise ValueError(f"unknown job kind {kind!r}; known: {', '.join(KINDS)}")
    folder = jobs_root(root) / new_job_id(kind)
    folder.mkdir(parents=True)
    if snippets is not None:
        from neuro.code.corpus import save_jsonl
        save_jsonl(snippets, folder / "data.jsonl")
    now = time.time()
    write_json(folder / "spec.json", {"kind": kind, "label": label, "params": params, "created": now})
    write_json(folder / "status.json", {"state": "queued", "created": now, "message": "waiting to start"})
    return folder


def _launch_or_fail(folder: Path) -> JobInfo:
    """Start the job's process; a job whose process cannot start is marked failed with the reason."""
    try:
        launch(folder)
    except OSError as err:
        write_json(folder / "status.json", {"state": "failed", "created": time.time(), "finished": time.time(),
                                            "error": f"could not start the job process: {err}"})
    return read_known_job(folder, reconcile=False)


def start_job(kind: JobKind, config: JobConfig, loaded: LoadedModel | None = None, snippets=None, *,
              root: str | os.PathLike | None = None, memory_budget: int | None = None, detach: bool = True,
              run_loaded: LoadedModel | None = None) -> JobInfo:
    """Validate `config`, then start a `kind` job (detached: in the background; else here, returning when
    done).

    Raises JobRefused with every reason when it cannot start; nothing is created then. `loaded`: the
    model the config was planned on (validation reads its shape); `snippets`: the corpus the job runs on;
    `run_loaded`: for a foreground run, the model to use in place of loading a fresh copy.
    """
    reasons = kind.validate(config, loaded, snippets, memory_budget)
    if reasons:
        raise JobRefused(reasons)
    folder = create_job(kind.name, config.to_json(), label=config.label(), snippets=snippets, root=root)
    return _launch_or_fail(folder) if detach else run_job(folder, loaded=run_loaded, echo=True)


def resume_job(job: str | os.PathLike | JobInfo, *, root: str | os.PathLike | None = None,
               detach: bool = True) -> JobInfo:
    """Continue a failed or cancelled job from its last checkpoint (detached: in the background, else
    here, returning when done). Raises JobRefused when it cannot be resumed."""
    path = find_job(job, root).path
    requeue(path)
    return run_job(path, echo=True) if not detach else _launch_or_fail(path)


def run_job(job_dir: str | os.PathLike, loaded: LoadedModel | None = None, echo: bool = False) -> JobInfo:
    """Run a created job in this process (the worker; also the CLI's foreground mode).

    `loaded`: an already loaded model to use instead of loading the job's model (CLI foreground).
    """
    path = Path(job_dir)
    spec = read_json(path / "spec.json")
    if not isinstance(spec, dict):
        raise FileNotFoundError(f"{path} is not a job folder")
    ctx = JobContext(path, echo=echo)
    ctx.begin()
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, ctx.request_cancel) if main_thread else None
    try:
        ctx.check()
        ctx.log(f"job {path.name}: {spec['kind']} {spec.get('label', '')}")
        kind = KINDS[spec["kind"]]
        result = kind.run(kind.config.from_json(spec.get("params", {})), ctx, loaded)
        write_json(path / "result.json", result.to_json())
        ctx.end("finished", "done")
        ctx.log("finished")
    except (JobCancelled, KeyboardInterrupt):
        ctx.log("cancelled")
        ctx.end("cancelled", "cancelled by user")
    except BaseException as err:  # the job failed; record why, keep the process exit clean
        ctx.log("failed:\n" + traceback.format_exc())
        ctx.end("failed", "failed", error=f"{type(err).__name__}: {err}")
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)
        remove_temporaries(path)
    return read_known_job(path, reconcile=False)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2 or argv[0] != "run":
        print("usage: python -m neuro.jobs run <job_dir>", file=sys.stderr)
        return 2
    info = run_job(argv[1])
    return 0 if info.state in ("finished", "cancelled") else 1
