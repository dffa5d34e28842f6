"""Large jobs: resumable job folders (a manifest next to the outputs), worker processes on one
host, and Ray clusters. See README "Large jobs".

- :mod:`.settings`: what the pixels depend on, and its hash
- :mod:`.manifest`: the append-only ``stylegrad-job.jsonl``
- :mod:`.work`: tasks and the worker that computes them (the same code in every executor)
- :mod:`.runner`: plan, resume, run with an executor, record; :func:`job_status`
- :mod:`.local_pool`: worker processes; :mod:`.ray_pool`: Ray actors (imports Ray on use)
- :mod:`.stats`: images/hour and per-image percentiles
"""
from stylegrad.jobs.manifest import MANIFEST_NAME, JobFolderBusy
from stylegrad.jobs.runner import InlineExecutor, JobListener, JobRequest, JobSettingsChanged, JobSummary, job_status, run_job
from stylegrad.jobs.work import JobSpec

__all__ = ["MANIFEST_NAME", "JobFolderBusy", "InlineExecutor", "JobListener", "JobRequest", "JobSettingsChanged",
           "JobSummary", "JobSpec", "job_status", "run_job"]
