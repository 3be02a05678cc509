"""Jobs: every background job (fine-tuning, transfer, export) read from disk, with cancel, resume and logs.
A refresh, a second tab or a restarted app shows the same list: the job folders are the only state."""

import json

import pandas as pd
import streamlit as st

from neuro.jobs.folders import (
    JobRefused,
    cancel_job,
    checkpoint_step,
    job_metrics,
    jobs_root,
    list_jobs,
    log_tail,
    resume_reason,
)
from neuro.jobs.kinds import job_config, job_result
from neuro.jobs.runner import resume_job
from views.ui import mark_full_run, rerun_when_jobs_change
from views.ui.charts import TRAIN_CURVE, loss_curves

st.title("Jobs")
st.caption(f"Background runs started here or with `python -m neuro finetune|transfer` (folder: "
           f"`{jobs_root()}`). A job whose process died without finishing shows as failed; a failed or "
           "cancelled training job with a checkpoint can be resumed from it.")


@st.fragment(run_every=2.0)
def board() -> None:
    jobs = list_jobs()
    rerun_when_jobs_change(jobs, "jobs_seen")  # the picker below shows states: redraw it when one changed
    if not jobs:
        st.info("No jobs yet. Start one on the Fine-tuning or Summarization transfer page.")
        return
    st.dataframe(pd.DataFrame([j.row() for j in jobs]), hide_index=True, width="stretch",
                 column_config={"progress": st.column_config.ProgressColumn("progress", min_value=0,
                                                                            max_value=100, format="%.0f%%")})
    for job in [j for j in jobs if j.active]:
        left, right = st.columns([5, 1])
        left.progress(job.fraction, text=f"{job.id}: {job.progress_text()}")
        if right.button("Cancel", key=f"cancel_{job.id}"):
            with st.spinner("Stopping…"):
                info = cancel_job(job)
            st.toast(f"{info.id}: {info.state}")
    for job in [j for j in jobs if resume_reason(j) is None]:
        left, right = st.columns([5, 1])
        left.caption(f"{job.id}: {job.label} — {job.state}; checkpoint at step {checkpoint_step(job)} "
                     f"of {job_config(job).steps}")
        if right.button("Resume", key=f"resume_{job.id}"):
            try:
                info = resume_job(job)
                st.toast(f"{info.id}: resuming from step {checkpoint_step(info)}")
            except JobRefused as err:  # e.g. resumed in another tab a moment ago
                st.toast("; ".join(err.reasons))


mark_full_run("jobs_seen")
board()

st.subheader("Details")
jobs = list_jobs()
if jobs:
    pick = st.selectbox("Job", [j.id for j in jobs], key="jobs_pick",
                        format_func=lambda i: next(f"{j.id} ({j.state}): {j.label}" for j in jobs if j.id == i))

    @st.fragment(run_every=3.0)
    def details(job_id: str) -> None:
        job = next((j for j in list_jobs() if j.id == job_id), None)
        if job is None:
            st.warning("This job's folder is gone.")
            return
        c1, c2, c3 = st.columns(3)
        c1.metric("State", job.state)
        c2.metric("Progress", f"{100 * job.fraction:.0f} %")
        c3.metric("Elapsed", f"{job.elapsed:.0f} s", help="Summed over every run of the job (a resume continues it).")
        if job.error:
            st.error(job.error)
        if job.state in ("failed", "cancelled") and job.kind != "export":
            st.caption(resume_reason(job) or f"Resumable from the checkpoint at step {checkpoint_step(job)} "
                       "(Resume button above).")
        points = job_metrics(job)
        if points:
            frame = pd.DataFrame([{"method": job.kind, "run": job.id, "curve": TRAIN_CURVE, "step": p.step,
                                   "loss": p.loss} for p in points if p.loss is not None])
            st.altair_chart(loss_curves(frame, "Training loss"), width="stretch")
        with st.expander("Parameters"):
            st.code(json.dumps(job.params, indent=1), language="json")
        result = job_result(job)
        if result:
            with st.expander("Result"):
                st.code(json.dumps(result.to_json(), indent=1, default=str)[:50_000], language="json")
        st.markdown("**Log** (last lines)")
        st.code(log_tail(job, 8_000) or "(empty)", language="text")

    details(pick)
