"""``celery -A frappe_celery worker --burst`` and ``--queue-order``: RQ's burst mode and dequeue
strategies, on a real worker and a real redis-server.

Only the test config's custom queues (``reports``, ``batch``) are used: the session's shared
worker consumes short, default and long, and would take the jobs."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid

import pytest

import frappe_celery as frappe

from . import jobs
from .support.processes import ROOT


def run_worker(
    env: dict[str, str], *args: str, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """A worker in the foreground, as ``bench worker --burst`` runs one: its exit and output."""
    node = f"burst-{uuid.uuid4().hex[:8]}@%h"
    command = [sys.executable, "-m", "celery", "-A", "frappe_celery", "worker", "-P", "prefork",
               "-n", node, "--loglevel", "INFO", *args]  # fmt: skip
    return subprocess.run(
        command,
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def test_burst_runs_every_waiting_job_of_its_queues_then_exits_zero(worker_env, r):
    key = f"test:burst:{uuid.uuid4().hex[:8]}"
    queued = [
        frappe.enqueue(jobs.sleep_then_record, queue="batch", key=key, seconds=0.3)
        for _ in range(6)
    ]
    other = frappe.enqueue(jobs.record, queue="reports", key=f"{key}:other")

    result = run_worker(worker_env, "-Q", "batch", "-c", "2", "--burst")

    assert result.returncode == 0, result.stderr[-3000:]
    assert "done, quitting" in result.stderr
    assert [job.get_status() for job in queued] == ["finished"] * 6
    assert r.llen(key) == 6
    # A queue it was not told to consume keeps its job.
    assert other.get_status() == "queued"


def test_burst_on_empty_queues_exits_at_once(worker_env, r):
    result = run_worker(worker_env, "-Q", "batch", "-c", "1", "--burst")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "done, quitting" in result.stderr


@pytest.mark.parametrize(
    ("order", "expected"),
    [
        # RQ's default: strictly in -Q order, every reports job before any batch one.
        ("priority", ["reports"] * 3 + ["batch"] * 3),
        # The queue just served goes last: they alternate.
        ("round_robin", ["reports", "batch"] * 3),
    ],
)
def test_queue_order_decides_which_queue_serves_next(worker_env, r, order, expected):
    key = f"test:order:{uuid.uuid4().hex[:8]}"
    for _ in range(3):
        for queue in ("batch", "reports"):
            frappe.enqueue(jobs.push, queue=queue, key=key, value=queue)
    result = run_worker(
        worker_env, "-Q", "reports,batch", "-c", "1", "--burst", "--queue-order", order
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert [json.loads(v) for v in r.lrange(key, 0, -1)] == expected


def test_random_queue_order_serves_every_queue(worker_env, r):
    key = f"test:order:{uuid.uuid4().hex[:8]}"
    for queue in ("batch", "reports", "batch", "reports"):
        frappe.enqueue(jobs.push, queue=queue, key=key, value=queue)
    result = run_worker(
        worker_env, "-Q", "reports,batch", "-c", "1", "--burst", "--queue-order", "random"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(json.loads(v) for v in r.lrange(key, 0, -1)) == ["batch"] * 2 + ["reports"] * 2


def test_an_unknown_queue_order_is_refused_naming_the_choices(worker_env):
    result = run_worker(worker_env, "-Q", "batch", "--burst", "--queue-order", "fifo")
    assert result.returncode != 0
    assert "--queue-order" in result.stderr and "round_robin" in result.stderr


@pytest.mark.unit
def test_the_queue_orders_the_option_offers_are_the_ones_the_worker_knows():
    """--queue-order is declared with the app (celery_app.py), its step in worker/options.py."""
    from frappe_celery.celery_app import QUEUE_ORDER_NAMES
    from frappe_celery.worker.options import QUEUE_ORDERS

    assert sorted(QUEUE_ORDERS) == sorted(QUEUE_ORDER_NAMES)
