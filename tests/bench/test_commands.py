"""Frappe's own bench commands on a switched site: doctor, show-pending-jobs and purge-jobs read
and act on Celery's queues; enable-scheduler / disable-scheduler drive the beat's decisions."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from ..support.frappe_bench import Bench, custom_queues

QUEUE = "celery-tests-idle"  # a queue no worker consumes: its jobs stay pending


@pytest.fixture
def idle_queue(bench: Bench) -> Iterator[str]:
    with custom_queues(bench, QUEUE):
        yield QUEUE


def run_ok(bench: Bench, *args: str) -> str:
    result = bench.run(*args)
    assert result.returncode == 0, result.stderr[-3000:]
    return str(result.stdout)


def test_doctor_show_pending_jobs_and_purge_jobs_see_celery_jobs(bench, site: Any, idle_queue):
    label = f"commands-{uuid.uuid4().hex[:8]}"
    job = site.enqueue("celery_example.tasks.record", queue=idle_queue, label=label)
    assert f"celery_example.tasks.record {{'label': '{label}'}}" in run_ok(
        bench, "show-pending-jobs"
    )
    doctor = run_ok(bench, "doctor")
    assert f"Queue: {idle_queue}" in doctor and "celery_example.tasks.record : 1" in doctor
    assert "Purged 1 jobs" in run_ok(bench, "purge-jobs", "--queue", idle_queue)
    assert job.get_status() == "canceled"
