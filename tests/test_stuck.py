"""A stuck job: started, and still not ended past its hard time limit plus a grace, because the
worker that should have killed it cannot (its main process frozen here, as a lost VM or a
worker hung in C code would be). doctor and the metrics report it; `frappe-celery stop --stuck`
fails it and frees its id; its run ending after all changes nothing."""

from __future__ import annotations

import json
import os
import signal

import frappe_celery as frappe
from frappe_celery import records
from frappe_celery.ops import metrics

from .support.cli import invoke, ok
from .support.processes import wait_for

QUEUE = "reports"


def events(r, key: str) -> list[str]:
    return [json.loads(item)["event"] for item in r.lrange(key, 0, -1)]


def test_a_stuck_job_is_reported_then_failed_and_freed_and_its_late_end_changes_nothing(
    r, start_worker
):
    worker = start_worker(QUEUE, concurrency=1)
    key = "test:stuck:run"
    # Hard limit: timeout 2 + time_limit_grace 2 = 4 s; stuck 2 s (the grace) after that.
    job = frappe.enqueue("tests.jobs.tx.run_once", queue=QUEUE, timeout=2, job_id="nightly-sync",
                         deduplicate=True, key=key, seconds=10)  # fmt: skip
    wait_for(lambda: events(r, key) == ["start"], 20, interval=0.02)
    # Its main process, which enforces the time limits and records what the child cannot,
    # frozen: the job runs on past its limits and nobody ends it.
    os.kill(worker.process.pid, signal.SIGSTOP)
    try:
        stuck = wait_for(records.stuck_jobs, 20)
        assert [(s.job_id, s.queue) for s in stuck] == [(job.id, QUEUE)]  # type: ignore[union-attr]
        assert job.get_status() == "started"
        assert frappe.is_job_enqueued("nightly-sync")  # its id stays taken: nothing reruns it

        doctor = invoke("doctor")
        assert doctor.exit_code == 1
        assert f"job {job.id} ({QUEUE}) is stuck" in doctor.output
        assert "frappe-celery stop --stuck" in doctor.output
        assert f'frappe_celery_queue_stuck_jobs{{queue="{QUEUE}"}} 1.0' in metrics.render()

        stopped = ok("stop", "--stuck").output
        assert f"Failed {job.id} ({QUEUE})" in stopped
        assert "1 stuck job(s) failed and freed" in stopped
        record = job.refresh()
        assert record["status"] == "failed"
        assert record["exc_type"] == records.STUCK_EXC_TYPE
        assert not frappe.is_job_enqueued("nightly-sync")
        assert records.stuck_jobs() == []
    finally:
        os.kill(worker.process.pid, signal.SIGCONT)

    # Thawed, the worker finds the job past its hard limit and kills it, or the job ends: either
    # end comes after the record was failed, and is refused.
    wait_for(lambda: not r.zcard(f"frappe_celery:started:{QUEUE}") and worker_done(r, key), 30)
    record = job.refresh()
    assert (record["status"], record["exc_type"]) == ("failed", records.STUCK_EXC_TYPE)
    # The freed id takes a new enqueue.
    again = frappe.enqueue("tests.jobs.add", queue="batch", job_id="nightly-sync",
                           deduplicate=True, a=1, b=2)  # fmt: skip
    assert again is not None and again.get_status() == "queued"


def worker_done(r, key: str) -> bool:
    """The stuck run is over: ended by itself (an "end" event) or killed by its worker (its
    message settled, nothing held any more)."""
    return events(r, key) == ["start", "end"] or not r.hlen("unacked")


def test_stop_wants_a_job_id_or_stuck(r):
    assert invoke("stop").exit_code == 2
    assert invoke("stop", "some-id", "--stuck").exit_code == 2
