from __future__ import annotations

import frappe_celery as frappe

from .support.processes import wait_for


def test_job_runs_on_a_real_worker_and_finishes(r, shared_worker):
    job = frappe.enqueue("tests.jobs.add", a=2, b=3)
    assert job.get_status() in ("queued", "started", "finished")
    wait_for(lambda: job.get_status() == "finished", 20)
    assert job.return_value() == 5
