"""RQ's Job and Queue API, as Frappe and ERPNext call it, on a real site switched to
frappe-celery (integrations/frappe/rq_compat.py): ``get_job(x).get_id()``, ``meta`` /
``save_meta()``, ``delete()``, ``latest_result()``, the TTLs of the site's config, ``stopped``,
``get_queue(q)`` with its registries, ``fetch_job`` and ``enqueue``, ``get_all_queued_jobs`` and
``get_jobs`` / ``is_job_queued`` with the installed Frappe's job ids."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from frappe_celery.broker import keys
from frappe_celery.connection import get_redis
from frappe_celery.errors import InvalidArgumentError
from frappe_celery.ops import admin
from frappe_celery.ops.monitor import get_workers

from ..support.frappe_bench import fresh, wait_for_status
from ..support.processes import wait_for

pytestmark = pytest.mark.usefixtures("celery_worker")

EXECUTE_JOB_ARGS = {"site", "user", "method", "event", "job_name", "kwargs", "is_async"}


def label() -> str:
    return f"rq-api-{uuid.uuid4().hex[:10]}"


def record_of(job_id: str) -> dict[str, str]:
    raw = get_redis().hgetall(keys.job(job_id))
    return {k.decode(): v.decode() for k, v in raw.items()}


@pytest.fixture
def long_paused(site: Any) -> Iterator[str]:
    """No worker takes the long queue's jobs during the test (Celery's cancel_consumer on every
    worker consuming it), so jobs enqueued there stay pending; resumed and emptied after."""
    from frappe_celery.celery_app import app

    nodes = [w["node"] for w in get_workers() if "long" in (w.get("queues") or [])]
    replies = app.control.cancel_consumer("long", destination=nodes, reply=True, timeout=5)
    assert len(replies) == len(nodes), replies
    time.sleep(2)  # a wait already sent on the long queue's doorbell ends within 1 s
    try:
        yield "long"
    finally:
        admin.purge_jobs("long", site=site.local.site)
        app.control.add_consumer("long", destination=nodes, reply=True, timeout=5)


@pytest.fixture
def site_config(site: Any) -> Iterator[Any]:
    """Set keys of the site's site_config.json (as ``bench set-config``); removed after."""
    from frappe.installer import update_site_config

    changed: list[str] = []

    def set_key(key: str, value: Any) -> None:
        update_site_config(key, value)
        changed.append(key)

    yield set_key
    for key in changed:
        update_site_config(key, "None")


# -- Job API ---------------------------------------------------------------------------------------


def test_get_job_gives_rqs_job_api_with_frappes_own_id_and_execute_job_kwargs(site):
    from frappe.utils.background_jobs import create_job_id, get_job

    name = label()
    site.enqueue("celery_example.tasks.record", queue="default", job_id=name, label=name)
    job = get_job(name)
    # ERPNext's transaction_deletion_record: get_job(x).get_id()
    assert job.get_id() == job.id == create_job_id(name)
    separator = "::" if int(site.__version__.split(".")[0]) < 16 else "||"
    assert job.get_id() == f"{site.local.site}{separator}{name}"
    assert set(job.kwargs) == EXECUTE_JOB_ARGS
    assert job.kwargs["site"] == site.local.site and job.kwargs["user"] == "Administrator"
    assert job.kwargs["method"] == "celery_example.tasks.record"
    assert job.kwargs["kwargs"] == {"label": name}
    wait_for_status(job.id, ("finished",))
    import rq.results

    result = job.latest_result()
    assert result.type == rq.results.Result.Type.SUCCESSFUL
    todo = result.return_value
    assert fresh(site).get_value("ToDo", todo, "description").startswith(f"{name}|")
    assert job.is_finished and not job.is_stopped


def test_a_failed_jobs_latest_result_is_rqs_failed_with_the_traceback(site):
    import rq.results
    from frappe.utils.background_jobs import get_job

    name = label()
    site.enqueue("celery_example.tasks.fail_after_write", queue="default", job_id=name, label=name)
    wait_for_status(get_job(name).id, ("failed",))
    result = get_job(name).latest_result()
    assert result.type == rq.results.Result.Type.FAILED
    assert "failing on purpose" in result.exc_string


def test_meta_saved_on_a_job_is_read_back_by_the_next_get_job(site, long_paused):
    from frappe.utils.background_jobs import get_job

    name = label()
    site.enqueue("celery_example.tasks.record", queue="long", job_id=name, label=name)
    job = get_job(name)
    assert job.meta == {}
    job.meta["reference"] = "Sales Invoice/SINV-0001"
    job.save_meta()
    assert get_job(name).meta == {"reference": "Sales Invoice/SINV-0001"}
    assert json.loads(record_of(job.id)["meta"]) == {"reference": "Sales Invoice/SINV-0001"}


def test_deleting_a_job_from_the_desk_makes_its_refresh_raise_rqs_no_such_job(site, long_paused):
    """Frappe's own test_rq_job.test_delete_doc, on a job that is still queued."""
    from rq.exceptions import NoSuchJobError

    job = site.enqueue("celery_example.tasks.record", queue="long", label=label())
    queue = site.utils.background_jobs.get_queue("long")
    before = len(queue)
    site.get_doc("RQ Job", job.id).delete()
    with pytest.raises(NoSuchJobError):
        job.refresh()
    assert site.utils.background_jobs.get_job(job.id) is None
    assert len(queue) == before - 1
    assert not get_redis().exists(keys.job(job.id))


def test_job_delete_removes_an_ended_job(site):
    from rq.exceptions import NoSuchJobError

    name = label()
    site.enqueue("celery_example.tasks.record", queue="default", job_id=name, label=name)
    job = site.utils.background_jobs.get_job(name)
    wait_for_status(job.id, ("finished",))
    job.delete()
    with pytest.raises(NoSuchJobError):
        job.refresh()


def test_ttls_and_failed_jobs_limit_come_from_the_enqueuing_sites_config(site, site_config):
    from frappe.utils.background_jobs import get_job

    site_config("rq_results_ttl", 45)
    site_config("rq_job_failure_ttl", 4545)
    name = label()
    site.enqueue("celery_example.tasks.record", queue="default", job_id=name, label=name)
    job = get_job(name)
    assert (job.result_ttl, job.failure_ttl) == (45, 4545)
    wait_for_status(job.id, ("finished",))
    assert 0 < get_redis().ttl(keys.job(job.id)) <= 45  # the worker read the site's config

    site_config("rq_failed_jobs_limit", 2)
    failed = [
        site.enqueue("celery_example.tasks.fail_after_write", queue="short", label=label())
        for _ in range(4)
    ]
    # Each ends failed, and the oldest are then dropped with their records (status None).
    wait_for(lambda: all(job.get_status() in ("failed", None) for job in failed), 60)
    registry = site.utils.background_jobs.get_queue("short").failed_job_registry
    assert registry.count == 2 and set(registry.get_job_ids()) <= {job.id for job in failed}
    assert sum(job.get_status() is None for job in failed) == 2
    kept = registry.get_job_ids()[-1]
    assert 4500 < get_redis().ttl(keys.job(kept)) <= 4545


# -- stopped ---------------------------------------------------------------------------------------


def test_stop_from_the_desk_records_the_running_job_stopped_as_rq_does(site):
    from frappe.core.doctype.rq_job.rq_job import stop_job
    from frappe.utils.background_jobs import get_job

    name = label()
    site.enqueue("celery_example.tasks.sleep_for", queue="default", job_id=name, label=name)
    job = get_job(name)
    wait_for_status(job.id, ("started",), timeout=30)
    stop_job(job_id=job.id)  # the Desk's Stop button
    wait_for_status(job.id, ("stopped",), timeout=30)
    assert get_job(name).is_stopped
    assert site.get_doc("RQ Job", job.id).status == "stopped"
    assert record_of(job.id)["status"] == "stopped"
    queue = site.utils.background_jobs.get_queue("default")
    assert job.id in queue.failed_job_registry.get_job_ids()
    assert job.id not in queue.started_job_registry.get_job_ids()
    assert not site.utils.background_jobs.is_job_enqueued(name)


# -- Queue API -------------------------------------------------------------------------------------


def test_get_queue_counts_and_lists_pending_jobs_and_fetches_them(site, long_paused):
    from frappe.utils.background_jobs import get_queue

    queue = get_queue("long")
    before = len(queue)
    jobs = [site.enqueue("celery_example.tasks.record", queue="long", label=label()) for _ in "ab"]
    assert len(queue) == queue.count == before + 2
    assert [job.id for job in jobs] == [i for i in queue.get_job_ids() if i in {j.id for j in jobs}]
    fetched = queue.fetch_job(jobs[0].id)
    assert fetched.get_id() == jobs[0].id and fetched.kwargs["site"] == site.local.site
    assert queue.fetch_job(f"{site.local.site}::no-such-job") is None


def test_every_registry_has_count_len_and_job_ids_for_frappes_monitoring(site):
    """The monitoring pattern of Frappe's docs: len(q), len(q.failed_job_registry), ... ."""
    from frappe.utils.background_jobs import get_queue, get_queue_list

    failed = site.enqueue("celery_example.tasks.fail_after_write", queue="short", label=label())
    wait_for_status(failed.id, ("failed",))
    for name in get_queue_list():
        queue = get_queue(name)
        assert len(queue) == queue.count
        for registry in (
            queue.failed_job_registry,
            queue.started_job_registry,
            queue.scheduled_job_registry,
            queue.finished_job_registry,
        ):
            ids = registry.get_job_ids()
            assert len(registry) == registry.count == len(ids)
    assert failed.id in get_queue("short").failed_job_registry.get_job_ids()
    assert failed.id in get_queue("short").failed_job_registry


def test_queue_enqueue_takes_rqs_signature_and_runs_in_the_site(site):
    from frappe.utils.background_jobs import get_queue

    queue = get_queue("default")
    name = label()
    job = queue.enqueue(
        "celery_example.rq_api.add", 2, 3, scale=10, job_timeout=42, job_id=name,
        description="adding", meta={"origin": "test"},
    )  # fmt: skip
    assert job.get_id() == site.utils.background_jobs.create_job_id(name)
    assert job.kwargs["kwargs"] == {"a": 2, "b": 3, "scale": 10}
    assert job.timeout == 42 and job.kwargs["job_name"] == "adding"
    assert job.meta == {"origin": "test"}
    wait_for_status(job.id, ("finished",))
    assert job.latest_result().return_value == 50
    inside = queue.enqueue_call("celery_example.rq_api.current_job_facts")
    wait_for_status(inside.id, ("finished",))
    assert inside.return_value() == {
        "id": inside.id, "site": site.local.site, "user": "Administrator",
    }  # fmt: skip
    with pytest.raises(InvalidArgumentError, match="result_ttl"):
        queue.enqueue("celery_example.rq_api.add", 1, 1, result_ttl=10)


# -- pending jobs, by site, with the installed Frappe's job ids ------------------------------------


def test_get_all_queued_jobs_lists_this_sites_waiting_jobs(site, long_paused):
    from frappe.core.doctype.rq_job.rq_job import get_all_queued_jobs

    job = site.enqueue("celery_example.tasks.record", queue="long", label=label())
    listed = {queued.id: queued for queued in get_all_queued_jobs()}
    assert job.id in listed
    assert listed[job.id].kwargs["site"] == site.local.site
    assert listed[job.id].kwargs["kwargs"]["label"]


def test_get_jobs_and_is_job_queued_see_the_sites_pending_jobs(site, long_paused):
    """Email pulls, the backups page and safe_exec.is_job_queued read get_jobs(site=...): a
    pending job missed there is enqueued twice."""
    from frappe.utils.background_jobs import get_jobs
    from frappe.utils.safe_exec import is_job_queued

    method = "celery_example.tasks.record"
    job = site.enqueue(method, queue="long", label=label())
    assert job.get_status() == "queued"
    assert method in get_jobs(site=site.local.site, queue="long")[site.local.site]
    assert method in get_jobs(site=site.local.site, key="job_name")[site.local.site]
    assert is_job_queued(method, queue="long")
    assert get_jobs(site="no.such.site")["no.such.site"] == []
