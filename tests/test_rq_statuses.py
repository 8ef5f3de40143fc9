"""RQ's statuses and Job API on frappe-celery's records: a stopped running job is ``stopped``
(kept in the failed registry, as RQ keeps it), a canceled queued one ``canceled``; retention is
read per site; Frappe 15's ``{site}::`` ids are found by every site filter."""

from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import Any

import pytest

import frappe_celery as frappe
from frappe_celery.broker import keys
from frappe_celery.config import get_settings
from frappe_celery.job import Job, NoSuchJobError, Result
from frappe_celery.ops import admin, monitor
from frappe_celery.retention import site_retention

from .support.processes import wait_for

SITE = "test.site"


@pytest.fixture
def running(r: Any, shared_worker: Any) -> Any:
    """A job that runs until released (released after the test, in case it still runs)."""
    key, release = "test:rq:running", "test:rq:running:release"
    job = frappe.enqueue("tests.jobs.wait_for_release", queue="short", key=key, release_key=release)
    wait_for(lambda: b'"started"' in r.lrange(key, 0, -1) and job.is_started, 30)
    yield job, key, release
    r.set(release, 1)
    wait_for(lambda: job.get_status() not in ("queued", "started"), 30)


def test_stopping_a_running_job_records_it_stopped_in_the_failed_registry(r, running):
    job, key, release = running
    admin.stop_job(job.id)
    wait_for(lambda: job.get_status() == "stopped", 15)
    assert job.is_stopped and not job.is_canceled and not job.is_failed
    assert r.zscore(keys.failed_registry("short"), job.id) is not None
    assert r.zscore(keys.canceled_registry("short"), job.id) is None
    assert r.zscore(keys.started_registry("short"), job.id) is None
    result = job.latest_result()
    assert result is not None and result.type == Result.Type.FAILED
    assert "terminated" in (result.exc_string or "")
    # Killed: it never went on to record "released", not even once released.
    r.set(release, 1)
    time.sleep(1.5)
    assert [json.loads(v) for v in r.lrange(key, 0, -1)] == ["started"]
    assert job.get_status() == "stopped"
    assert not frappe.is_job_enqueued(job.id)


def test_a_stopped_job_is_listed_as_stopped_and_among_the_failed_as_in_rq(r, running):
    job, _, _ = running
    admin.stop_job(job.id)
    wait_for(lambda: job.get_status() == "stopped", 15)
    assert job.id in [i for i, _ in monitor.job_ids("short", "stopped")]
    assert job.id in [i for i, _ in monitor.job_ids("short", "failed")]
    failed = frappe.enqueue("tests.jobs.fail", queue="short", message="plain failure")
    wait_for(lambda: failed.is_failed, 30)
    assert failed.id not in [i for i, _ in monitor.job_ids("short", "stopped")]


def test_canceling_a_queued_job_still_records_it_canceled(r):
    job = frappe.enqueue("tests.jobs.add", queue="reports", a=1, b=2)
    job.cancel()
    assert job.get_status() == "canceled" and job.is_canceled and not job.is_stopped
    assert r.zscore(keys.canceled_registry("reports"), job.id) is not None
    assert job.latest_result() is None


def test_latest_result_gives_the_return_value_or_the_traceback(r, shared_worker):
    ok = frappe.enqueue("tests.jobs.add", queue="short", a=20, b=22)
    bad = frappe.enqueue("tests.jobs.fail", queue="short", message="no luck")
    wait_for(lambda: ok.is_finished and bad.is_failed, 30)
    done = ok.latest_result()
    assert done is not None and done.type == Result.Type.SUCCESSFUL and done.return_value == 42
    assert done.created_at is not None
    failed = bad.latest_result()
    assert failed is not None and failed.type == Result.Type.FAILED
    assert "no luck" in (failed.exc_string or "")


def test_latest_result_waits_up_to_its_timeout_as_rqs_does(r, shared_worker):
    job = frappe.enqueue("tests.jobs.sleep_then_return", queue="short", seconds=1, value=7)
    assert job.latest_result() is None  # no timeout: does not wait
    result = job.latest_result(timeout=30)
    assert result is not None and result.return_value == 7
    never = frappe.enqueue("tests.jobs.add", queue="reports", a=1, b=1)  # no worker on it
    started = time.monotonic()
    assert never.latest_result(timeout=0.3) is None
    assert time.monotonic() - started >= 0.3


def test_meta_is_saved_with_the_job_and_read_back_by_a_new_handle(r):
    job = frappe.enqueue("tests.jobs.add", queue="reports", a=1, b=1)
    job.meta["progress_key"] = "abc"
    job.save_meta()
    again = frappe.get_job(job.id)
    assert again is not None and again.meta == {"progress_key": "abc"}
    assert again.get_id() == job.id


def test_deleting_a_queued_job_takes_it_off_its_queue_and_refresh_then_raises(r):
    job = frappe.enqueue("tests.jobs.add", queue="reports", a=1, b=1)
    job.delete()
    assert admin.pending_count("reports") == 0
    assert not r.exists(keys.job(job.id))
    with pytest.raises(NoSuchJobError):
        job.refresh()
    with pytest.raises(NoSuchJobError):
        job.save_meta()  # a vanished job is not recreated by its meta
    assert not r.exists(keys.job(job.id))


def test_a_running_job_is_not_deleted(r, running):
    job, _, _ = running
    with pytest.raises(frappe.InvalidJobOperation):
        job.delete()
    assert job.is_started


def test_ttls_of_a_job_are_its_sites_and_site_config_overrides_common_config(tmp_path):
    sites = tmp_path / "sites"
    for site, conf in (("a.site", {"rq_results_ttl": 42, "rq_failed_jobs_limit": 7}),
                       ("b.site", {})):  # fmt: skip
        (sites / site).mkdir(parents=True)
        (sites / site / "site_config.json").write_text(json.dumps(conf))
    settings = dataclasses.replace(
        get_settings(), sites_path=str(sites), results_ttl=600, failure_ttl=3600
    )
    a = site_retention("a.site", settings)
    assert (a.results_ttl, a.failure_ttl, a.failed_jobs_limit) == (42, 3600, 7)
    b = site_retention("b.site", settings)
    assert (b.results_ttl, b.failure_ttl) == (600, 3600)
    # A bench set-config reaches the next job's end without a restart.
    (sites / "b.site" / "site_config.json").write_text(json.dumps({"rq_job_failure_ttl": 99}))
    os.utime(sites / "b.site" / "site_config.json", ns=(time.time_ns(), time.time_ns() + 10**9))
    assert site_retention("b.site", settings).failure_ttl == 99
    assert site_retention("no.such.site", settings).results_ttl == 600


def test_a_job_reports_the_ttls_its_site_keeps_it_for(r):
    job = frappe.enqueue("tests.jobs.add", queue="reports", a=1, b=1)
    settings = get_settings()
    assert (job.result_ttl, job.failure_ttl) == (settings.results_ttl, settings.failure_ttl)


@pytest.fixture
def frappe_15_ids(r: Any) -> Any:
    os.environ["FRAPPE_CELERY_JOB_ID_STYLE"] = "v15"
    frappe.reload_settings()
    yield
    del os.environ["FRAPPE_CELERY_JOB_ID_STYLE"]
    frappe.reload_settings()


def test_frappe_15_pending_jobs_are_found_by_their_site(frappe_15_ids):
    job = frappe.enqueue("tests.jobs.add", queue="reports", job_name="v15-job", a=1, b=1)
    assert job.id.startswith(f"{SITE}::")
    assert monitor.get_jobs(site=SITE, queue="reports", key="job_name")[SITE] == ["v15-job"]
    assert [row.id for row in monitor.list_jobs(site=SITE)] == [job.id]
    assert monitor.get_jobs(site="other.site")["other.site"] == []


def test_get_jobs_reads_a_key_of_the_jobs_own_arguments(r):
    frappe.enqueue("tests.jobs.add", queue="reports", a=5, b=1)
    assert monitor.get_jobs(site=SITE, key="a")[SITE] == [5]
    assert monitor.get_jobs(site=SITE, key="missing")[SITE] == []


def test_refresh_of_an_expired_job_raises_no_such_job(r):
    job = Job(f"{SITE}||never-enqueued")
    with pytest.raises(NoSuchJobError):
        job.refresh()
    assert job.get_status() is None and job.latest_result() is None
