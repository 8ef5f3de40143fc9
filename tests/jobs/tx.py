"""Job functions for the dedup and after-commit tests."""

from __future__ import annotations

import os
import time

import frappe_celery as frappe

from . import push


def run_once(key: str, seconds: float = 0.0) -> int:
    """Record a start (with pid and time), run ``seconds``, record the end."""
    push(key, {"event": "start", "pid": os.getpid(), "at": time.time()})
    time.sleep(seconds)
    push(key, {"event": "end", "pid": os.getpid(), "at": time.time()})
    return os.getpid()


def enqueue_child_after_commit(child_key: str, should_fail: bool) -> str:
    """Enqueue a child job with enqueue_after_commit, then succeed or fail."""
    frappe.enqueue(
        "tests.jobs.record", queue="short", enqueue_after_commit=True, key=child_key, value="child"
    )
    if should_fail:
        raise ValueError("parent failed after enqueueing its child")
    return "parent done"


def enqueue_same_id_many_times(job_id: str, key: str, attempts: int, go_at: float) -> list[bool]:
    """Process target: enqueue ``job_id`` with deduplicate ``attempts`` times from this process,
    starting together with the others at ``go_at`` (epoch seconds)."""
    import threading

    frappe.reload_settings()
    results: list[bool] = []
    lock = threading.Lock()

    def attempt() -> None:
        job = frappe.enqueue(
            "tests.jobs.record", queue="reports", job_id=job_id, deduplicate=True, key=key
        )
        with lock:
            results.append(job is not None)

    time.sleep(max(0.0, go_at - time.time()))
    threads = [threading.Thread(target=attempt) for _ in range(attempts)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return results
