"""A pool child's memory over many jobs (frappe_celery/memory.py), in a real worker.

A child inherits the main process's objects; its garbage collector must leave them alone (they
are frozen at the fork), and the garbage a failed job leaves (reference cycles through Celery's
ExceptionInfo and the traceback) must be freed, not pile up until a rare full collection: it
grew a child by ~40 KiB per job of the soak's mix (RELIABILITY.md, "Memory").
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import redis

import frappe_celery as frappe

from .support.processes import wait_for

QUEUE = "reports"  # a queue only this test's worker consumes
FAILED_JOBS = 200
# What may stay alive at a report: the last failed job's cycles (held by Celery's tracer until
# that job has ended) and one more that has not met a collection yet.
FAILURES_ALIVE_LIMIT = 2
# A failed job's garbage is ~300 KiB here (Celery's ExceptionInfo copies the code positions of
# every traceback frame): before the fix, 200 failed jobs grew the child's USS by 58 MiB (72 of
# them still alive); after it, by 0.3 MiB.
USS_GROWTH_LIMIT_KIB = 4 * 1024


def report(r: redis.Redis, key: str, count: int) -> dict[str, Any]:
    """Enqueue a memory_report behind whatever is queued, and return it once written."""
    frappe.enqueue("tests.jobs.memory_report", queue=QUEUE, key=key)
    wait_for(lambda: r.llen(key) >= count, 120)
    return dict(json.loads(r.lindex(key, count - 1)))


def fail_jobs(count: int) -> None:
    for n in range(count):
        frappe.enqueue("tests.jobs.fail", queue=QUEUE, message=f"failing as designed {n}")


def test_a_pool_childs_collector_leaves_the_objects_it_inherited_alone(r, start_worker):
    start_worker(QUEUE, concurrency=1)
    seen = report(r, f"test:memory:{uuid.uuid4().hex[:8]}", 1)
    # Interpreter, Celery, kombu and our modules: tens of thousands of objects, frozen; what the
    # child tracks itself is what it made.
    assert seen["frozen"] > 10_000, seen
    assert seen["tracked"] < seen["frozen"], seen


def test_what_failed_jobs_leave_is_freed_and_a_childs_memory_stays_flat(r, start_worker):
    start_worker(QUEUE, concurrency=1)
    key = f"test:memory:{uuid.uuid4().hex[:8]}"
    # A first round of failures: the child has imported and allocated what failing needs.
    fail_jobs(20)
    before = report(r, key, 1)
    fail_jobs(FAILED_JOBS)
    after = report(r, key, 2)
    assert after["pid"] == before["pid"], "the same pool child ran every job"
    assert after["failures_alive"] <= FAILURES_ALIVE_LIMIT, after
    growth = after["uss_kib"] - before["uss_kib"]
    assert growth <= USS_GROWTH_LIMIT_KIB, f"the child's USS grew {growth} KiB: {before}, {after}"
