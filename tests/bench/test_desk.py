"""The Desk's RQ Job and RQ Worker lists on a real site, showing and acting on Celery's jobs and
workers (integrations/frappe/desk.py)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

import frappe_celery

from .conftest import wait_for, wait_for_status

pytestmark = pytest.mark.usefixtures("celery_worker")


def label() -> str:
    return f"desk-test-{uuid.uuid4().hex[:10]}"


def ended(frappe: Any, method: str, **kwargs: Any) -> Any:
    job = frappe.enqueue(method, queue="default", **kwargs)
    wait_for_status(job.id, ("finished", "failed"))
    return job


def test_an_rq_job_document_is_the_celery_job_with_its_status_and_traceback(site):
    failed = ended(site, "celery_example.tasks.fail_after_write", label=label())
    doc = site.get_doc("RQ Job", failed.id)
    assert (doc.job_id, doc.queue, doc.status) == (failed.id, "default", "failed")
    assert doc.job_name == "celery_example.tasks.fail_after_write"
    assert "failing on purpose" in doc.exc_info
    assert doc.started_at and doc.ended_at and doc.time_taken >= 0
    finished = ended(site, "celery_example.tasks.record", label=label())
    assert site.get_doc("RQ Job", finished.id).status == "finished"


def test_the_rq_job_list_filters_celery_jobs_by_status_and_queue(site):
    failed = ended(site, "celery_example.tasks.fail_after_write", label=label())
    finished = ended(site, "celery_example.tasks.record", label=label())

    def names(**filters: str) -> list[str]:
        return [row.name for row in site.get_all("RQ Job", filters=filters)]

    assert failed.id in names(status="failed", queue="default")
    assert finished.id not in names(status="failed", queue="default")
    assert finished.id in names(status="finished")
    assert failed.id not in names(status="failed", queue="long")


def test_stop_from_the_desk_stops_the_running_celery_job(site):
    name = label()
    job = site.enqueue("celery_example.tasks.sleep_for", queue="default", label=name, seconds=60)
    wait_for(lambda: frappe_celery.get_job_status(job.id) == "started", 30)
    site.get_doc("RQ Job", job.id).stop_job()
    assert wait_for_status(job.id, ("stopped",), timeout=30).get_status() == "stopped"


def test_remove_failed_jobs_deletes_this_sites_failed_celery_jobs(site):
    from frappe.core.doctype.rq_job.rq_job import remove_failed_jobs

    failed = ended(site, "celery_example.tasks.fail_after_write", label=label())
    finished = ended(site, "celery_example.tasks.record", label=label())
    remove_failed_jobs()
    with pytest.raises(site.DoesNotExistError):
        site.get_doc("RQ Job", failed.id)
    assert frappe_celery.get_job_status(finished.id) == "finished"


def test_deleting_an_ended_rq_job_forgets_it(site):
    finished = ended(site, "celery_example.tasks.record", label=label())
    site.get_doc("RQ Job", finished.id).delete()
    with pytest.raises(site.DoesNotExistError):
        site.get_doc("RQ Job", finished.id)


def test_the_rq_worker_list_shows_the_celery_workers(site, celery_worker):
    workers = site.get_all("RQ Worker", fields=["name", "pid", "queue", "status"])
    mine = [w for w in workers if w.name.startswith(celery_worker.node)]
    assert len(mine) == 1
    assert mine[0].pid == celery_worker.process.pid
    assert "default" in mine[0].queue
    assert site.get_doc("RQ Worker", mine[0].name).status in ("idle", "busy")
