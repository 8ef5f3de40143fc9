"""Jobs of a real Frappe site on real Celery workers, asserted on the site's database.

Each test enqueues the way Frappe code does (``frappe.enqueue``, ``enqueue_doc``,
``queue_action``) from a process connected to the site, and a ``celery -A frappe_celery
worker`` started in the bench's ``sites/`` runs the job.
"""

from __future__ import annotations

import datetime
import decimal
import json
import time
import uuid
from typing import Any

import pytest
import redis

import frappe_celery
from frappe_celery.errors import InvalidArgumentError, UnserializableArgumentError
from frappe_celery.integrations.frappe.arguments import TAG

from ..support.frappe_bench import fresh, publish_unvalidated, wait_for_status
from ..support.processes import wait_for

pytestmark = pytest.mark.usefixtures("celery_worker")

TEST_USER = "celery-tests@example.com"


def label() -> str:
    return f"bench-test-{uuid.uuid4().hex[:10]}"


def todo_rows(frappe: Any, text: str) -> list[Any]:
    return fresh(frappe).get_all(
        "ToDo", filters={"description": ["like", f"{text}%"]}, fields=["description", "owner"]
    )


def ensure_user(frappe: Any) -> str:
    if not frappe.db.exists("User", TEST_USER):
        frappe.get_doc(
            {"doctype": "User", "email": TEST_USER, "first_name": "Celery", "send_welcome_email": 0}
        ).insert(ignore_permissions=True)
        frappe.db.commit()
    return TEST_USER


def test_job_writes_are_committed_as_the_enqueuing_user_with_hooks_around(site):
    name = label()
    user = ensure_user(site)
    site.set_user(user)
    job = site.enqueue("celery_example.tasks.record", label=name)
    site.set_user("Administrator")
    assert isinstance(job, frappe_celery.Job)
    done = wait_for_status(job.id, ("finished", "failed"))
    assert done.get_status() == "finished", done.exc_info
    [row] = todo_rows(site, name)
    assert row.owner == user
    assert f"user={user}" in row.description
    # The app's before_job hook ran first, in the job's own context, and saw the method.
    assert "before_job=celery_example.tasks.record" in row.description
    # after_job hooks got the result; frappe.local.job.after_job callbacks ran.
    assert site.cache.get_value(f"celery_example:after_job:{name}") == repr(done.return_value())
    assert site.cache.get_value(f"celery_example:callback:{name}") == "ran"


def test_failing_job_is_rolled_back_and_leaves_frappes_error_log(site):
    name = label()
    started = site.utils.now()
    job = site.enqueue("celery_example.tasks.fail_after_write", label=name)
    done = wait_for_status(job.id, ("finished", "failed"))
    assert done.get_status() == "failed"
    assert "failing on purpose" in done.exc_info
    assert todo_rows(site, name) == []
    logs = fresh(site).get_all(
        "Error Log",
        filters={"method": "celery_example.tasks.fail_after_write", "creation": [">=", started]},
        fields=["error"],
    )
    assert any(name in log.error for log in logs)


def test_retry_background_job_error_is_retried_as_frappe_does(site):
    name = label()
    job = site.enqueue("celery_example.tasks.retry_then_succeed", label=name, failures=2)
    done = wait_for_status(job.id, ("finished", "failed"), timeout=90)
    assert done.get_status() == "finished", done.exc_info
    assert done.retries == 2
    assert len(todo_rows(site, name)) == 1


def test_a_lock_wait_timeout_is_retried_until_the_lock_is_free(site):
    name = label()
    todo = site.get_doc({"doctype": "ToDo", "description": f"{name}|locked"}).insert()
    site.db.commit()
    site.db.sql("select name from tabToDo where name = %s for update", todo.name)  # hold it
    job = site.enqueue("celery_example.tasks.update_locked", label=name, todo=todo.name)
    wait_for(lambda: job.retries >= 1, timeout=30)
    site.db.commit()  # release the row: the next attempt gets it
    done = wait_for_status(job.id, ("finished", "failed"), timeout=60)
    assert done.get_status() == "finished", done.exc_info
    assert fresh(site).get_value("ToDo", todo.name, "description") == f"{name}|updated"


def test_documents_dicts_datetimes_decimals_and_callables_arrive_as_the_same_types(site):
    name = label()
    doc = site.get_doc({"doctype": "ToDo", "description": f"{name}|argument"}).insert()
    site.db.commit()
    when = datetime.datetime(2026, 12, 1, 10, 30, 5)
    from celery_example.tasks import answer

    job = site.enqueue(
        "celery_example.tasks.describe_arguments",
        label=name,
        doc=doc,
        options=site._dict(mode="fast"),
        when=when,
        amount=decimal.Decimal("12.50"),
        items=[site._dict(a=1)],
        pair=(1, 2),
        callback=answer,
    )
    done = wait_for_status(job.id, ("finished", "failed"))
    assert done.get_status() == "finished", done.exc_info
    kinds = json.loads(site.cache.get_value(f"celery_example:arguments:{name}"))
    assert kinds == {
        "doc": f"ToDo:{doc.name}:{name}|argument",
        "options": "_dict:fast",
        "when": when.isoformat(),
        "amount": "12.50",
        "items": "_dict",
        "pair": "tuple",
        "callback": "from a callable argument",
    }


def test_an_argument_that_cannot_travel_is_refused_by_name_and_nothing_is_written(site):
    client = frappe_celery.connection.get_redis()
    keys_before = client.dbsize()
    with pytest.raises(UnserializableArgumentError) as raised:
        site.enqueue("celery_example.tasks.record", label=label(), handle=object())
    assert raised.value.argument == "handle"
    assert client.dbsize() == keys_before


def test_enqueue_after_commit_publishes_on_commit_and_never_after_rollback(site):
    committed, rolled_back = label(), label()
    assert (
        site.enqueue(
            "celery_example.tasks.record",
            label=committed,
            job_id=committed,
            enqueue_after_commit=True,
        )
        is None
    )
    assert frappe_celery.get_job_status(committed) is None
    site.db.commit()
    done = wait_for_status(committed, ("finished", "failed"))
    assert done.get_status() == "finished"

    site.enqueue(
        "celery_example.tasks.record",
        label=rolled_back,
        job_id=rolled_back,
        enqueue_after_commit=True,
    )
    site.db.rollback()
    site.db.commit()  # a later commit must not publish what the rollback dropped
    time.sleep(2)
    assert frappe_celery.get_job_status(rolled_back) is None
    assert todo_rows(site, rolled_back) == []


def test_enqueue_doc_and_queue_action_run_the_document_methods_in_a_worker(site):
    doc = site.get_doc({"doctype": "Celery Example Task", "title": label()}).insert()
    site.db.commit()
    job_id = doc.process_in_background(note="hello")
    assert wait_for_status(job_id, ("finished", "failed")).get_status() == "finished"
    assert fresh(site).get_value("Celery Example Task", doc.name, "result") == (
        "processed by Administrator: hello"
    )

    doc.submit_in_background()  # queue_action("submit"): published when this commits
    site.db.commit()
    wait_for(
        lambda: fresh(site).get_value("Celery Example Task", doc.name, "docstatus") == 1,
        timeout=60,
    )
    assert fresh(site).get_value("Celery Example Task", doc.name, "result") == (
        "submitted in background by Administrator"
    )


def test_rq_get_current_job_gives_frappe_the_running_celery_job(site):
    name = label()
    job = site.enqueue("celery_example.tasks.current_job_info", label=name, queue="short")
    assert wait_for_status(job.id, ("finished", "failed")).get_status() == "finished"
    info = json.loads(site.cache.get_value(f"celery_example:current_job:{name}"))
    assert info["id"] == job.id
    assert info["timeout"] == 300
    assert info["method"] == "celery_example.tasks.current_job_info"
    enqueued = datetime.datetime.fromisoformat(info["enqueued_at"])
    assert enqueued.tzinfo is None  # naive UTC, as RQ gives it (Frappe's monitor relies on it)
    assert abs((job.enqueued_at.replace(tzinfo=None) - enqueued).total_seconds()) < 1


def test_frappes_prepared_report_runs_on_celery_and_records_its_job_id(site):
    report = site.get_doc(
        {
            "doctype": "Prepared Report",
            "report_name": "Database Storage Usage By Tables",
            "filters": "{}",
        }
    ).insert(ignore_permissions=True)
    site.db.commit()  # Frappe enqueues generate_report after commit
    wait_for(
        lambda: (
            fresh(site).get_value("Prepared Report", report.name, "status")
            in ("Completed", "Error")
        ),
        timeout=90,
    )
    status, job_id = site.db.get_value("Prepared Report", report.name, ["status", "job_id"])
    assert status == "Completed"
    # The report commits "Completed" from inside the job, just before the job itself ends.
    assert wait_for_status(job_id, ("finished", "failed")).get_status() == "finished"


def test_frappes_scheduler_enqueues_scheduled_job_types_onto_celery(site):
    # What `bench schedule` does for each due event (ScheduledJobType.enqueue): hourly_long
    # goes to the long queue, deduplicated by Frappe's job id, with its Scheduled Job Log.
    job_type = site.get_doc("Scheduled Job Type", {"method": "celery_example.tasks.hourly_long"})
    started = site.utils.now()
    assert job_type.enqueue(force=True) is True
    job = frappe_celery.get_job(job_type.rq_job_id)
    assert job is not None and job.queue == "long"
    done = wait_for_status(job_type.rq_job_id, ("finished", "failed"))
    assert done.get_status() == "finished", done.exc_info
    assert todo_rows(site, "scheduled hourly_long")
    logs = fresh(site).get_all(
        "Scheduled Job Log",
        filters={"scheduled_job_type": job_type.name, "creation": [">=", started]},
        pluck="status",
    )
    assert logs == ["Complete"]


def test_frappes_email_queue_flush_runs_on_celery(site):
    job = site.enqueue("frappe.email.queue.flush", queue="short")
    done = wait_for_status(job.id, ("finished", "failed"))
    assert done.get_status() == "finished", done.exc_info


def test_only_functions_of_the_benchs_apps_may_run(site, tmp_path):
    with pytest.raises(InvalidArgumentError) as raised:
        site.enqueue("pytest.main", args=["--version"])
    assert "allowed module prefixes: frappe, celery_example" in str(raised.value)

    marker = tmp_path / "forged-ran"
    forged = [
        publish_unvalidated("pytest.main", {"args": ["--version"]}),
        publish_unvalidated("os.system", {"command": f"touch {marker}"}),
        # A callable argument resolves under the same allowlist as the method.
        publish_unvalidated(
            "celery_example.tasks.record",
            {"label": label(), "hook": {TAG: "callable", "path": "os.system"}},
        ),
        # A bound method's object is rebuilt only from a class of the bench's apps...
        publish_unvalidated(
            "frappe_celery.jobs.run_bound_method",
            {
                "bound_self": {
                    TAG: "object",
                    "class": "subprocess.Popen",
                    "state": {"args": f"touch {marker}"},
                },
                "bound_method": "wait",
                "bound_kwargs": {},
            },
        ),
        # ... and never to call a dunder of it.
        publish_unvalidated(
            "frappe_celery.jobs.run_bound_method",
            {
                "bound_self": {TAG: "object", "class": "celery_example.tasks.Mailer", "state": {}},
                "bound_method": "__reduce__",
                "bound_kwargs": {},
            },
        ),
    ]
    for job in forged:
        wait_for(lambda job=job: job.get_status() in ("finished", "failed"), timeout=60)
        assert job.get_status() == "failed"
        assert job.refresh()["exc_type"] == "MethodNotAllowed", job.exc_info
    assert not marker.exists()
    # Refused in the worker, it is in Frappe's Error Log as any failed job is.
    logged = fresh(site).get_all("Error Log", filters={"method": "os.system"}, pluck="error")
    assert any("MethodNotAllowed" in error for error in logged)
    after = site.enqueue("frappe.ping")  # the worker goes on
    assert wait_for_status(after.id, ("finished", "failed")).return_value() == "pong"


def test_job_for_a_site_not_on_this_bench_fails_naming_it_and_the_worker_goes_on(site):
    real_site = site.local.site
    site.local.site = "no-such-site.local"
    try:
        job = site.enqueue("frappe.ping")
    finally:
        site.local.site = real_site
    # Its id is namespaced by the other site: read the record by the full id.
    wait_for(lambda: job.get_status() in ("finished", "failed"), timeout=60)
    assert job.get_status() == "failed"
    assert "site 'no-such-site.local' does not exist in the bench" in job.exc_info
    after = site.enqueue("frappe.ping")
    finished = wait_for_status(after.id, ("finished", "failed"))
    assert finished.return_value() == "pong"


def test_frappes_publish_progress_in_a_job_lands_on_its_record_and_still_sends_the_event(site):
    # Frappe sends the event on the queue Redis's "events" channel (realtime.emit_via_redis);
    # the socket.io server relays it to the browser.
    events = redis.Redis.from_url(frappe_celery.get_settings().broker_url).pubsub()
    events.subscribe("events")
    try:
        name = label()
        job = site.enqueue("celery_example.tasks.report_progress", label=name, percent=42)
        done = wait_for_status(job.id, ("finished", "failed"))
        assert done.get_status() == "finished", done.exc_info
        record = done.refresh()
        assert (record["progress"], record["progress_message"]) == ("42", name)
        sent = []
        deadline = time.monotonic() + 10
        while not sent and time.monotonic() < deadline:
            message = events.get_message(timeout=1)
            if message and message["type"] == "message" and name.encode() in message["data"]:
                sent.append(json.loads(message["data"]))
        assert sent and sent[0]["event"] == "progress"
        assert sent[0]["message"]["percent"] == 42
        assert sent[0]["message"]["description"] == name
    finally:
        events.close()


def test_an_apps_job_retries_in_its_hooks_retry_a_function_with_backoff(site):
    # celery_example/hooks.py: job_retries = {"celery_example.tasks.flaky_io": {...}}
    name = label()
    job = site.enqueue("celery_example.tasks.flaky_io", label=name, failures=2)
    done = wait_for_status(job.id, ("finished", "failed"))
    assert done.get_status() == "finished", done.exc_info
    record = done.refresh()
    attempts = json.loads(record["attempts"])
    assert [a["exc_type"] for a in attempts] == ["ConnectionError", "ConnectionError"]
    assert f"{name}: run 1 refused" in attempts[0]["traceback"]
    assert len(todo_rows(site, name)) == 1
