"""Scheduled job functions for the scheduler tests (they take no arguments, as scheduled
methods don't)."""

from __future__ import annotations

import time

import frappe_celery

from . import push

TICKS = "test:sched:ticks"
OTHER = "test:sched:other"


def tick() -> None:
    """Records when the beat published this run (its tick), not when a worker got to it: a run
    delayed behind others must not look like a second run of the next tick."""
    job = frappe_celery.get_current_job()
    enqueued_at = job.enqueued_at if job is not None else None
    push(TICKS, enqueued_at.timestamp() if enqueued_at is not None else time.time())


def other() -> None:
    push(OTHER, time.time())
