"""Job folders, one import away: the names below live in three modules with one job each, and are
re-exported here so `from neuro.jobs.folders import X` keeps working:

- state.py      the on-disk state of a job folder (layout, states, reading, reconciling, resume's requeue)
- processes.py  process control (launching the worker, cancel)
- context.py    the context a running job reports through (JobContext)
"""

from neuro.jobs.context import HEARTBEAT_S, JobContext
from neuro.jobs.processes import cancel_job, launch
from neuro.jobs.state import (
    ACTIVE,
    STALE_S,
    TERMINAL,
    JobInfo,
    JobRefused,
    checkpoint_step,
    find_job,
    job_metrics,
    jobs_root,
    list_jobs,
    log_tail,
    new_job_id,
    proc_start,
    process_alive,
    read_job,
    read_json,
    read_known_job,
    recover_checkpoint,
    remove_temporaries,
    requeue,
    resume_reason,
    write_json,
)

__all__ = ["ACTIVE", "HEARTBEAT_S", "STALE_S", "TERMINAL", "JobContext", "JobInfo", "JobRefused", "cancel_job",
           "checkpoint_step", "find_job", "job_metrics", "jobs_root", "launch", "list_jobs", "log_tail",
           "new_job_id", "proc_start", "process_alive", "read_job", "read_json", "read_known_job",
           "recover_checkpoint",
           "remove_temporaries", "requeue", "resume_reason", "write_json"]
