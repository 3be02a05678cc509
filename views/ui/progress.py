"""Long work on a page: what it will cost before it starts (neuro.cost), a progress bar that says how far it is
and about how long is left (neuro.progress.Eta), and analyses long enough to run as background jobs, whose
progress the page follows and whose result it picks up from the cache when they finish."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager

import streamlit as st

from neuro.cost import Estimate, Meter, estimate, tokens_in
from neuro.progress import Progress, duration, reporter


@contextmanager
def progress_bar(label: str, lazy: bool = False, meter: Meter | None = None,
                 cancel: str | None = None) -> Iterator[Progress]:
    """`with progress_bar("Layer scores") as progress: compute(..., progress=progress)`; the bar goes when the
    computation ends or is cancelled (a cancelled resumable pass keeps its finished chunks). `lazy`: the bar
    appears with the first report, for a call that may find its result cached and report nothing (put it
    inside an `st.spinner`, which shows only when the call takes longer than a moment). `meter`: the pass's
    rate is measured from the reports and kept for later estimates (neuro.cost.Meter). `cancel`: the key of a
    Cancel button under the bar: a click reruns the page, which stops the pass at its next report (Streamlit
    raises in the running script), keeping what a resumable pass finished; `cancelled(key)` says so after."""
    slot = st.empty()
    stop = st.empty()
    if not lazy:
        slot.progress(0.0, text=f"{label}: starting…")
    if cancel:
        stop.button("Cancel", key=cancel, help="Stops at the next batch; passes already finished stay in the cache, "
                                                "so starting again goes on from them.")
    report = reporter(label, lambda fraction, text: slot.progress(fraction, text=text))
    try:
        if meter is None:
            yield report
        else:
            with meter:
                yield meter.wrap(report)
    finally:
        slot.empty()
        stop.empty()


def cancelled(key: str) -> bool:
    """Whether this rerun comes from a click on the Cancel button `key` (see progress_bar); says so on the page."""
    if st.session_state.get(key):
        st.info("Cancelled. What finished is kept in the cache: starting again goes on from there.")
        return True
    return False


@contextmanager
def metered_bar(label: str, kind: str, model, programs: float, cancel: str | None = None,
                to_exit: bool = False) -> Iterator[Progress]:
    """A progress bar whose pass's rate is recorded (kind: neuro.cost's pass kind; programs: the call's work;
    to_exit: the work ends with the block, not the last report)."""
    with progress_bar(label, meter=Meter(kind, model, programs, to_exit=to_exit), cancel=cancel) as progress:
        yield progress


def cost_caption(kind: str, model, programs, passes: int = 1, what: str = "", background: bool = False) -> Estimate:
    """Say what a button will cost before it is clicked: passes over programs and the time, with its basis.
    `programs`: the programs each pass runs over (their length feeds the rough guess), or a count. `background`:
    the page offers a long one as a background job (and says so)."""
    count = programs if isinstance(programs, int) else len(programs)
    tokens = None if isinstance(programs, int) else tokens_in(programs)
    est = estimate(kind, model, count, passes=passes, tokens=tokens)
    st.caption(f"Cost: {what + ': ' if what else ''}{est.text()}."
               + (" Long enough to run as a background job: the page stays usable and it can be cancelled."
                  if est.long and background else ""))
    return est


def job_matching(kind: str, config) -> object | None:
    """The newest job of `kind` started with exactly `config` (its JSON), or None."""
    from neuro.jobs.folders import list_jobs

    wanted = json.loads(json.dumps(config.to_json(), default=str))
    return next((job for job in list_jobs(kind=kind) if job.params == wanted), None)


def start_background(kind, config, loaded, snippets) -> None:
    """Start a background job (neuro.jobs) and say so; refused starts say why."""
    from neuro.jobs.folders import JobRefused
    from neuro.jobs.runner import start_job

    try:
        info = start_job(kind, config, loaded, snippets)
    except JobRefused as err:
        st.error("; ".join(err.reasons))
        return
    if info.state == "failed":
        st.error(info.error or "the job could not start")


def follow_job(kind: str, config, what: str) -> str | None:
    """Show the job of `kind` with `config` if there is one: its progress with time left and a Cancel button
    while it runs (the page reruns when it ends, to pick its result up from the cache), or why it stopped.
    Returns its state (None: no such job)."""
    job = job_matching(kind, config)
    if job is None:
        return None
    if job.active:
        _job_progress(kind, config, what)
    elif job.state in ("failed", "cancelled"):
        st.warning(f"{what}: the background job `{job.id}` {'failed' if job.state == 'failed' else 'was cancelled'}"
                   + (f" ({job.error})" if job.error else "")
                   + ". Starting it again goes on from the passes it finished (they are kept in the cache).")
    return job.state


@st.fragment(run_every=1.0)
def _job_progress(kind: str, config, what: str) -> None:
    from neuro.jobs.folders import cancel_job

    job = job_matching(kind, config)
    if job is None or not job.active:
        st.rerun()  # finished (or stopped): the whole page picks the result up from the cache
        return
    left = job.seconds_left()
    text = (f"{what} (background job `{job.id}`): {job.phase or job.state} {job.done:,}/{job.total:,} · "
            f"{duration(job.elapsed)} elapsed" + (f" · about {duration(left)} left" if left else ""))
    st.progress(job.fraction, text=text)
    st.caption("Other tabs and pages stay usable; leaving the page does not stop the job (Jobs page).")
    if st.button("Cancel", key=f"cancel|{job.id}"):
        cancel_job(job, grace=2.0)
        st.rerun()
