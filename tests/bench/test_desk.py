"""The Desk's RQ Job and RQ Worker lists on a real site, showing and acting on Celery's jobs and
workers (integrations/frappe/desk.py)."""

from __future__ import annotations

import http.cookiejar
import importlib
import json
import os
import signal
import subprocess
import urllib.error
import urllib.parse
import urllib.request
import uuid
from typing import Any

import pytest

import frappe_celery
from frappe_celery import records
from frappe_celery.broker import wire
from frappe_celery.caller import publish
from frappe_celery.job import site_job_prefix

from ..support.frappe_bench import custom_queues, start_celery_worker, wait_for_status
from ..support.processes import wait_for

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


# -- who sees the job list ------------------------------------------------------------------------


def http_post(opener: Any, url: str, data: dict[str, Any], host: str) -> tuple[int, str]:
    """(status, body) of a form POST, errors included."""
    request = urllib.request.Request(
        url, data=urllib.parse.urlencode(data).encode(), headers={"Host": host}
    )
    try:
        with opener.open(request, timeout=60) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def logged_in(web_url: str, host: str, user: str, password: str) -> Any:
    opener = urllib.request.build_opener(
        urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar())
    )
    status, body = http_post(opener, f"{web_url}/api/method/login", {"usr": user, "pwd": password},
                             host)  # fmt: skip
    assert status == 200, body[-2000:]
    return opener


def website_user(site: Any) -> tuple[str, str]:
    from frappe.utils.password import update_password

    email, password = f"{label()}@example.com", "Pw-" + uuid.uuid4().hex
    user = {"doctype": "User", "email": email, "first_name": "Web", "user_type": "Website User",
            "send_welcome_email": 0}  # fmt: skip
    site.get_doc(user).insert(ignore_permissions=True)
    update_password(email, password)
    site.db.commit()
    return email, password


def test_only_a_system_manager_lists_rq_jobs_and_workers_through_reportview_get(
    bench, site, web, admin_password
):
    """frappe.desk.reportview.get reaches a virtual DocType's get_list / get_count for any
    logged-in user; a Website User must see no job, its arguments or its traceback."""
    secret = label()
    failed = ended(site, "celery_example.tasks.fail_after_write", label=secret)
    email, password = website_user(site)
    query = {"doctype": "RQ Job", "fields": json.dumps(["name", "arguments", "exc_info"]),
             "filters": json.dumps({"status": "failed"}), "page_length": 100000}  # fmt: skip

    visitor = logged_in(web, bench.site, email, password)
    for method in ("frappe.desk.reportview.get", "frappe.desk.reportview.get_count"):
        status, body = http_post(visitor, f"{web}/api/method/{method}", query, bench.site)
        assert status == 403, body[-2000:]
        assert "PermissionError" in body
        assert failed.id not in body and secret not in body
    # Nor the workers, their queues and the jobs they run.
    workers = {"doctype": "RQ Worker", "fields": json.dumps(["name", "current_job_id"])}
    for method in ("frappe.desk.reportview.get", "frappe.desk.reportview.get_count"):
        status, body = http_post(visitor, f"{web}/api/method/{method}", workers, bench.site)
        assert status == 403, body[-2000:]
        assert "PermissionError" in body

    manager = logged_in(web, bench.site, "Administrator", admin_password)
    status, body = http_post(manager, f"{web}/api/method/frappe.desk.reportview.get", workers,
                             bench.site)  # fmt: skip
    assert status == 200, body[-2000:]
    status, body = http_post(manager, f"{web}/api/method/frappe.desk.reportview.get", query,
                             bench.site)  # fmt: skip
    assert status == 200, body[-2000:]
    assert failed.id in body and secret in body  # its arguments, as the form shows them


def test_a_worker_view_shows_a_running_job_of_this_site_only_not_of_a_longer_named_one(
    site, celery_worker
):
    """Sites test.local and test.local.au: a job id of the second begins with the first's
    name; the RQ Worker list of test.local must not show it as the worker's current job."""
    other = f"{site_job_prefix(site.local.site + '.au')}{uuid.uuid4().hex}"
    kwargs = {"label": label(), "seconds": 60}
    payload = importlib.import_module("frappe_celery.caller.enqueue").make_payload(
        "celery_example.tasks.sleep_for", "default", None, site=site.local.site,
        user="Administrator", kwargs=kwargs,
    )  # fmt: skip
    body = wire.encode_body(payload, kwargs)
    publication = publish.prepare(
        other, payload, body, at_front=False, deduplicate=False, at_front_when_starved=False
    )
    job = publish.publish(publication)
    assert job is not None
    try:
        wait_for(lambda: job.get_status() == "started", 30)

        def current_jobs() -> dict[str, Any]:
            rows = site.get_all("RQ Worker", fields=["name", "current_job_id", "status"])
            return {row.name: row for row in rows if row.name.startswith(celery_worker.node)}

        busy = wait_for(lambda: [r for r in current_jobs().values() if r.status == "busy"], 30)
        assert busy, current_jobs()
        assert all(row.current_job_id != other for row in current_jobs().values())
    finally:
        from frappe_celery.ops.admin import stop_job

        stop_job(other)
        wait_for(lambda: job.get_status() in ("stopped", "finished", "failed"), 30)


def test_a_list_call_returns_at_most_the_desks_largest_page(bench, site):
    """reportview.get with any page_length: one web request fetches and serializes at most
    2500 job records (the Desk's largest page), not every job of the site."""
    from frappe_celery.integrations.frappe.desk import MAX_PAGE_LENGTH
    from frappe_celery.ops import admin

    queue = "pagecap"
    # A queue no worker consumes, allowed more waiting jobs than the page holds.
    with custom_queues(bench, queue, max_queued_jobs=10 * MAX_PAGE_LENGTH):
        calls = [{"method": "frappe.ping", "queue": queue} for _ in range(MAX_PAGE_LENGTH + 100)]
        try:
            assert all(frappe_celery.enqueue_many(calls))
            from frappe.desk import reportview

            site.local.form_dict = site._dict(
                doctype="RQ Job", fields=json.dumps(["name"]),
                filters=json.dumps({"queue": queue}), page_length=100_000,
            )  # fmt: skip
            listed = reportview.get()
            assert len(listed["values"]) == MAX_PAGE_LENGTH
            # The filter, given as the API gives it (a dict), applies.
            at = listed["keys"].index("queue")
            assert {row[at] for row in listed["values"]} == {queue}
        finally:
            admin.purge_jobs(queue)


def test_retry_from_the_form_and_the_list_runs_failed_jobs_again_for_a_system_manager_only(
    bench, site, web, admin_password
):
    failed = [ended(site, "celery_example.tasks.fail_first_time", label=label()) for _ in range(3)]
    assert all(frappe_celery.get_job_status(job.id) == "failed" for job in failed)
    manager = logged_in(web, bench.site, "Administrator", admin_password)
    stranger = logged_in(web, bench.site, *website_user(site))
    api = f"{web}/api/method/frappe.core.doctype.rq_job.rq_job"

    # The form and list scripts come with the doctype.
    status, body = http_post(manager, f"{web}/api/method/frappe.desk.form.load.getdoctype",
                             {"doctype": "RQ Job"}, bench.site)  # fmt: skip
    assert status == 200, body[-2000:]
    assert "rq_job.retry_job" in body and "rq_job.retry_jobs" in body

    status, body = http_post(stranger, f"{api}.retry_job", {"job_id": failed[0].id}, bench.site)
    assert status == 403 and "PermissionError" in body
    assert frappe_celery.get_job_status(failed[0].id) == "failed"

    status, body = http_post(manager, f"{api}.retry_job", {"job_id": failed[0].id}, bench.site)
    assert status == 200, body[-2000:]
    status, body = http_post(manager, f"{api}.retry_jobs",
                             {"job_ids": json.dumps([j.id for j in failed[1:]])},
                             bench.site)  # fmt: skip
    assert status == 200 and json.loads(body)["message"] == 2, body[-2000:]
    for job in failed:  # run again, as the same user on the same site: it works this time
        assert wait_for_status(job.id, ("finished",)).get_status() == "finished"


def cached_form_meta(frappe: Any) -> Any:
    """The RQ Job form meta as the site's cache holds it (Frappe 15: a hash; 16: client_cache)."""
    if hasattr(frappe, "client_cache"):
        return frappe.client_cache.get_value("doctype_form_meta::RQ Job")
    return frappe.cache.hget("doctype_form_meta", "RQ Job")


def test_a_form_meta_cached_while_the_bench_ran_rq_gets_the_scripts_and_the_cache_keeps_none(
    bench, site, web, admin_password
):
    """No `bench clear-cache` after `bench enable`: the scripts are added to the meta handed
    out, not to the one cached, so neither switching on nor back off needs the cache cleared."""
    site.clear_cache(doctype="RQ Job")
    # A process of the bench on RQ (the switch off for it alone) loads the form: Frappe
    # builds the meta, without our scripts, and caches it for the whole site.
    script = (
        "import sys, frappe, frappe.desk.form.meta\n"
        "frappe.init(sys.argv[1], sites_path='.')\n"
        "frappe.connect()\n"
        "meta = frappe.desk.form.meta.get_meta('RQ Job')\n"
        "print('rq_job.retry_job' in (meta.get('__js') or ''))\n"
    )
    env = {**os.environ, "FRAPPE_CELERY_SWITCH": "off"}
    on_rq = subprocess.run([bench.python, "-c", script, bench.site], cwd=bench.sites, env=env,
                           capture_output=True, text=True, timeout=120)  # fmt: skip
    assert on_rq.returncode == 0, on_rq.stderr[-3000:]
    assert on_rq.stdout.strip().splitlines()[-1] == "False"
    assert "rq_job.retry_job" not in (cached_form_meta(site).get("__js") or "")

    manager = logged_in(web, bench.site, "Administrator", admin_password)
    status, body = http_post(manager, f"{web}/api/method/frappe.desk.form.load.getdoctype",
                             {"doctype": "RQ Job"}, bench.site)  # fmt: skip
    assert status == 200, body[-2000:]
    assets = json.loads(body)["docs"][0]
    assert assets["__js"].count("rq_job.retry_job") == 1
    assert assets["__list_js"].count("rq_job.retry_jobs") == 1
    # What the cache holds is still Frappe's alone.
    cached = cached_form_meta(site)
    assert cached is not None and "rq_job.retry_job" not in (cached.get("__js") or "")


def test_a_stuck_job_is_said_so_on_the_form_and_in_the_list(bench, site, tmp_path):
    queue = f"desk-stuck-{uuid.uuid4().hex[:6]}"
    common = json.loads((bench.sites / "common_site_config.json").read_text())
    # Stuck 2 s (the grace) past the hard limit, itself 2 s past the 2-s timeout.
    own = {**common.get("frappe_celery", {}), "time_limit_grace": 2}
    with custom_queues(bench, queue, frappe_celery=own):
        worker = start_celery_worker(bench, tmp_path / "worker.log", queues=queue)
        try:
            job = site.enqueue("celery_example.tasks.sleep_for", queue=queue, timeout=2,
                               label=label(), seconds=30)  # fmt: skip
            wait_for_status(job.id, ("started",))
            # Its main process, which enforces the time limits, frozen: nobody ends the job.
            os.kill(worker.process.pid, signal.SIGSTOP)
            try:
                wait_for(lambda: job.id in {s.job_id for s in records.stuck_jobs()}, 30)
                said = site.get_doc("RQ Job", job.id).stuck
                assert said.startswith("Stuck: still running") and "stop --stuck" in said
                rows = site.get_all("RQ Job", filters={"queue": queue})
                assert [(row.name, row.status, bool(row.stuck)) for row in rows] == [
                    (job.id, "started", True)
                ]
            finally:
                os.kill(worker.process.pid, signal.SIGCONT)
            # Thawed, the worker kills the job past its hard limit: no longer stuck.
            assert wait_for_status(job.id, ("failed",)).get_status() == "failed"
            assert not site.get_doc("RQ Job", job.id).stuck
        finally:
            worker.stop()


def test_the_form_shows_a_jobs_progress(site):
    name = label()
    job = site.enqueue("celery_example.tasks.report_progress", label=name, percent=42)
    wait_for_status(job.id, ("finished",))
    doc = site.get_doc("RQ Job", job.id)
    assert (doc.progress, doc.progress_message) == ("42", name)
