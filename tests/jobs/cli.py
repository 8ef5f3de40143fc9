"""Job functions (and one scheduler_events entry) for the `frappe-celery` command tests.

Used as a hooks module too (FRAPPE_CELERY_HOOKS=...,tests.jobs.cli): its daily_long entry is
a scheduled job that fails, so `status` has a "last run failed" entry to show once it was
triggered.
"""

from __future__ import annotations

from frappe_celery import get_current_job, publish_progress, set_progress

from . import conn, push, wait_for_release

scheduler_events = {"daily_long": ["tests.jobs.cli.scheduled_fail"]}


def progress_then_wait(
    key: str, release_key: str, percent: float, message: str, via: str, limit: float = 30
) -> str:
    """Report progress (through the Job handle or Frappe's publish_progress), record "started",
    then wait (at most ``limit`` s) until the test sets ``release_key``."""
    if via == "set_progress":
        job = get_current_job()
        assert job is not None, "get_current_job() is None inside a job"
        job.set_progress(percent, message)
    elif via == "frappe_celery.set_progress":
        set_progress(percent, message)
    else:
        publish_progress(percent, title=message)
    return wait_for_release(key, release_key, limit)


def fail_until_allowed(allow_key: str, value: int) -> int:
    """Fail until the test sets ``allow_key``; then return ``value * 2`` (so a retried run shows
    that it got the same arguments)."""
    push(allow_key + ":attempts", value)
    if not conn().exists(allow_key):
        raise RuntimeError(f"not allowed yet ({value})")
    return value * 2


def scheduled_fail() -> None:
    raise RuntimeError("scheduled job failed")
