"""Real call sites of Frappe and its apps, unchanged, on a switched site (issue 20).

Each test drives Frappe's own code (or the example app reproducing an app's call exactly, its
comment naming the original file) on a real site, with a real Celery worker, and asserts on the
database or on what the job produced.
"""

from __future__ import annotations

import datetime
import gzip
import json
import queue
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

import frappe_celery
from frappe_celery.broker import keys
from frappe_celery.errors import InvalidArgumentError

from ..support.frappe_bench import HttpSink, fresh, wait_for_status
from ..support.processes import wait_for

pytestmark = pytest.mark.usefixtures("celery_worker")


def label() -> str:
    return f"call-site-{uuid.uuid4().hex[:10]}"


def cached_json(frappe: Any, key: str, timeout: float = 60) -> Any:
    raw = wait_for(lambda: frappe.cache.get_value(key), timeout=timeout)
    return json.loads(raw)


# -- 1. private functions -------------------------------------------------------------------------


def test_list_view_bulk_update_of_25_documents_runs_frappes_private_bulk_action(site):
    # frappe/desk/doctype/bulk_update/bulk_update.py: 20 to 500 documents go to
    # frappe.enqueue(_bulk_action, ...), a single-underscore function.
    from frappe.desk.doctype.bulk_update.bulk_update import submit_cancel_or_update_docs

    name = label()
    names = [
        site.get_doc({"doctype": "ToDo", "description": f"{name}|{i}"}).insert().name
        for i in range(25)
    ]
    site.db.commit()

    submit_cancel_or_update_docs("ToDo", names, "update", {"description": f"{name}|bulk"})

    def updated() -> bool:
        rows = fresh(site).get_all("ToDo", filters={"name": ["in", names]}, pluck="description")
        return sorted(rows) == [f"{name}|bulk"] * 25

    wait_for(updated, timeout=90)


# -- 2. bound methods -----------------------------------------------------------------------------


def test_a_tool_forms_private_bound_method_runs_with_its_unsaved_values(site):
    # HRMS hrms/hr/doctype/shift_assignment_tool/shift_assignment_tool.py enqueues
    # self._bulk_assign_shift of an unsaved tool form (example app: CeleryExampleTask.bulk_mark).
    name = label()
    targets = [
        site.get_doc({"doctype": "Celery Example Task", "title": f"{name}-{i}"}).insert().name
        for i in range(3)
    ]
    site.db.commit()
    tool = site.new_doc("Celery Example Task")
    tool.title = f"{name}-tool"
    tool.posting_time = datetime.timedelta(hours=7, minutes=5)  # as MariaDB loads a Time field

    tool.bulk_mark(targets)

    expected = f"marked by {name}-tool at 7:05:00"
    wait_for(
        lambda: all(
            fresh(site).get_value("Celery Example Task", target, "result") == expected
            for target in targets
        ),
        timeout=60,
    )
    # Never saved: the job got the form's values, not a row.
    assert not fresh(site).exists("Celery Example Task", {"title": f"{name}-tool"})


def test_a_plain_objects_bound_method_travels_as_its_class_and_state(site):
    # The shape of frappe/email/doctype/email_queue/email_queue.py: frappe.enqueue(
    # self.send_emails, ...) with self a QueueBuilder (example app: tasks.Mailer).
    from celery_example.tasks import Mailer

    name = label()
    mailer = Mailer("Hello", {"a@example.com", "b@example.com"}, datetime.timedelta(seconds=90),
                    b"\x00\xffpdf")  # fmt: skip

    job = mailer.queue(name)

    assert job.job_name == "celery_example.tasks.Mailer.send"
    done = wait_for_status(job.id, ("finished", "failed"))
    assert done.get_status() == "finished", done.exc_info
    assert cached_json(site, f"celery_example:mailer:{name}") == {
        "type": "Mailer",
        "subject": "Hello",
        "recipients": ["a@example.com", "b@example.com"],
        "recipients_type": "set",
        "sent_at": 90.0,
        "attachment": "00ff706466",
    }


def test_frappe_sendmail_queue_separately_runs_queue_builder_send_emails(site):
    # frappe/email/doctype/email_queue/email_queue.py: queue_separately=True enqueues
    # self.send_emails of a QueueBuilder, one Email Queue row per recipient.
    name = label()
    recipients = [f"{name}-{i}@example.com" for i in range(3)]
    account = outgoing_email_account(site, name)
    try:
        site.sendmail(recipients=recipients, subject=name, message="hi", queue_separately=True,
                      now=False)  # fmt: skip

        def queued() -> list[str]:
            return fresh(site).get_all(
                "Email Queue Recipient",
                filters={"recipient": ["in", recipients]},
                pluck="recipient",
            )

        wait_for(lambda: sorted(queued()) == recipients, timeout=60)
    finally:
        # Rows left behind would be sent by the next flush of the queue, with no account.
        for row in fresh(site).get_all("Email Queue", filters={"email_account": account},
                                       pluck="name"):  # fmt: skip
            site.delete_doc("Email Queue", row, force=True, ignore_permissions=True)
        site.delete_doc("Email Account", account, force=True)
        site.db.commit()


def outgoing_email_account(frappe: Any, name: str) -> str:
    """A default outgoing account whose SMTP server is a closed port on 127.0.0.1: sending
    fails at once (Frappe keeps the Email Queue rows and their error), nothing leaves the host."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    account = frappe.get_doc({
        "doctype": "Email Account", "email_account_name": name, "email_id": f"{name}@example.com",
        "enable_outgoing": 1, "default_outgoing": 1, "smtp_server": "127.0.0.1",
        "smtp_port": closed_port, "no_smtp_authentication": 1, "awaiting_password": 1,
    }).insert(ignore_permissions=True)  # fmt: skip
    frappe.db.commit()
    return str(account.name)


def test_a_bound_method_whose_object_cannot_travel_is_refused_naming_it(site):
    from celery_example.tasks import Mailer

    client = frappe_celery.connection.get_redis()
    keys_before = client.dbsize()
    mailer = Mailer("Hello", ["a@example.com"], None, threading.Lock())

    with pytest.raises(InvalidArgumentError) as raised:
        mailer.queue(label())

    assert raised.value.argument == "method"
    assert "method.__self__._attachment" in str(raised.value)
    assert client.dbsize() == keys_before


# -- 3. Time values and every type a Document holds -----------------------------------------------


@pytest.fixture
def sink() -> Iterator[HttpSink]:
    server = HttpSink()
    yield server
    server.close()


def test_a_webhook_on_a_document_with_time_fields_posts_after_the_commit(site, sink):
    # frappe/integrations/doctype/webhook/__init__.py enqueues the Document inside
    # after_commit; its Time fields load from MariaDB as datetime.timedelta.
    name = label()
    webhook = site.get_doc({
        "doctype": "Webhook",
        "__newname": name,
        "webhook_doctype": "Celery Example Task",
        "webhook_docevent": "on_update",
        "condition": f"doc.title == '{name}'",
        "request_url": f"{sink.url}/{name}",
        "request_method": "POST",
        "request_structure": "JSON",
        "webhook_json": '{"title": "{{ doc.title }}", "posting_time": "{{ doc.posting_time }}", '
        '"items": "{{ doc.get(\'items\') | map(attribute=\'at_time\') | join(\',\') }}"}',
    }).insert()  # fmt: skip
    site.db.commit()
    try:
        doc = site.get_doc({
            "doctype": "Celery Example Task", "title": f"{name}-draft", "posting_time": "09:15:00",
            "items": [{"item": "a", "at_time": "10:00:00"}, {"item": "b", "at_time": "23:59:59"}],
        }).insert()  # fmt: skip
        site.db.commit()
        doc = site.get_doc("Celery Example Task", doc.name)  # as loaded from the database
        assert isinstance(doc.posting_time, datetime.timedelta)
        doc.title = name
        doc.save()
        after_commit_ran = []
        site.db.after_commit.add(lambda: after_commit_ran.append(True))

        site.db.commit()  # the webhook is enqueued here, with the document

        assert after_commit_ran == [True]  # the enqueue raised nothing: later callbacks ran
        path, body = sink.posts.get(timeout=60)
        assert path == f"/{name}"
        assert json.loads(body) == {
            "title": name, "posting_time": "9:15:00", "items": "10:00:00,23:59:59",
        }  # fmt: skip
    finally:
        site.delete_doc("Webhook", webhook.name, force=True)
        site.db.commit()


def test_a_document_with_child_rows_and_time_values_arrives_whole(site):
    name = label()
    doc = site.get_doc({
        "doctype": "Celery Example Task", "title": name, "posting_time": "08:00:01",
        "items": [{"item": "x", "at_time": "00:00:00"}, {"item": "y", "at_time": "12:34:56"}],
    }).insert()  # fmt: skip
    site.db.commit()
    loaded = site.get_doc("Celery Example Task", doc.name)

    job = site.enqueue("celery_example.tasks.describe_document", label=name, doc=loaded)

    assert wait_for_status(job.id, ("finished", "failed")).get_status() == "finished"
    assert cached_json(site, f"celery_example:document:{name}") == {
        "doctype": "Celery Example Task",
        "posting_time": ["timedelta", "8:00:01"],
        "items": [
            ["Celery Example Item", "CeleryExampleItem", "x", "timedelta", "0:00:00"],
            ["Celery Example Item", "CeleryExampleItem", "y", "timedelta", "12:34:56"],
        ],
    }


ROUND_TRIP = {
    "delta": datetime.timedelta(days=-1, seconds=5, microseconds=7),
    "raw": b"\x00\x01binary\xff",
    "tags": {3, 1, 2},
    "frozen": frozenset({1, 2}),
    "pair": (1, "two", None),
    "nested": {"inner": [datetime.timedelta(minutes=3), (b"x",), frozenset()]},
    "when": datetime.datetime(2026, 12, 6, 10, 0, 0, 123456),
    "day": datetime.date(2026, 12, 6),
    "clock": datetime.time(23, 59, 59),
}


def test_every_type_a_document_holds_round_trips_with_its_type_and_value(site):
    name = label()
    doc_dict = site._dict(ROUND_TRIP)

    job = site.enqueue("celery_example.tasks.describe_values", label=name, as_dict=doc_dict,
                       **ROUND_TRIP)  # fmt: skip

    assert wait_for_status(job.id, ("finished", "failed")).get_status() == "finished"
    seen = cached_json(site, f"celery_example:values:{name}")
    expected = {key: [type(value).__name__, repr(value)] for key, value in ROUND_TRIP.items()}
    expected["as_dict"] = ["_dict", repr(doc_dict)]
    # Small ints hash to themselves: a set of them has the same repr in both processes.
    assert seen == expected


# -- 4. string timeouts ---------------------------------------------------------------------------


def test_a_string_timeout_as_erpnexts_payment_reconciliation_passes_it_runs_with_that_limit(site):
    # erpnext/accounts/doctype/payment_reconciliation passes timeout="3600"; RQ parses it.
    name = label()

    job = site.enqueue("celery_example.tasks.insert_todo", label=name, timeout="3600",
                       queue="long")  # fmt: skip

    assert job.timeout == 3600
    assert wait_for_status(job.id, ("finished", "failed")).get_status() == "finished"
    assert fresh(site).exists("ToDo", {"description": ["like", f"{name}|%"]})


# -- 5. RQ's timeout exception --------------------------------------------------------------------


def test_a_job_past_its_timeout_sees_rqs_job_timeout_exception_and_celerys(site):
    name = label()

    job = site.enqueue(
        "celery_example.tasks.resumable_repost", label=name, timeout=2, queue="short"
    )

    done = wait_for_status(job.id, ("finished", "failed"))
    assert done.get_status() == "finished", done.exc_info
    assert done.return_value() == "will resume"
    assert cached_json(site, f"celery_example:timeout:{name}") == {"rq": True, "celery": True}


# -- 6. the job's context for Frappe's job hooks ------------------------------------------------


def test_frappes_monitor_hook_sees_the_current_job_before_it_runs(site, bench):
    # frappe.monitor.start (a before_job hook) reads rq.get_current_job(): the job's id (Frappe
    # 16: job_id, 15: uuid) and its wait time go into the monitor's transaction log.
    from frappe.monitor import MONITOR_REDIS_KEY

    assert bench.run("set-config", "monitor", "1").returncode == 0
    try:
        job = site.enqueue("frappe.ping", queue="short")
        assert wait_for_status(job.id, ("finished", "failed")).get_status() == "finished"

        def logged() -> list[dict[str, Any]]:
            entries = [json.loads(raw) for raw in site.cache.lrange(MONITOR_REDIS_KEY, 0, -1)]
            return [e for e in entries if job.id in (e.get("job_id"), e.get("uuid"))]

        [entry] = wait_for(logged, timeout=30)
        assert entry["transaction_type"] == "job"
        assert entry["job"]["method"] == "frappe.ping"
        assert entry["job"]["wait"] >= 0
    finally:
        bench.run("set-config", "monitor", "0")


def test_a_failing_jobs_exception_reaches_sentry_when_the_site_enables_telemetry(site, sentry_sink):
    # RQ workers call Frappe's _start_sentry(); the session's worker runs with
    # FRAPPE_SENTRY_DSN pointing at sentry_sink, and frappe.log_error sends the exception.
    name = label()
    site.db.set_single_value("System Settings", "enable_telemetry", 1)
    site.db.commit()
    site.clear_document_cache("System Settings", "System Settings")
    try:
        job = site.enqueue("celery_example.tasks.fail_after_write", label=name)
        assert wait_for_status(job.id, ("finished", "failed")).get_status() == "failed"

        def reported() -> bool:
            while True:
                try:
                    path, body = sentry_sink.posts.get(timeout=1)
                except queue.Empty:
                    return False
                if body[:2] == b"\x1f\x8b":  # the Sentry SDK gzips its events
                    body = gzip.decompress(body)
                if "/api/1/" in path and f"{name}: failing on purpose".encode() in body:
                    return True

        wait_for(reported, timeout=30)
    finally:
        site.db.set_single_value("System Settings", "enable_telemetry", 0)
        site.db.commit()
        site.clear_document_cache("System Settings", "System Settings")


# -- 9. Frappe's errors and fallbacks -------------------------------------------------------------


def test_a_refused_enqueue_is_a_frappe_validation_error_that_names_the_argument(site):
    client = frappe_celery.connection.get_redis()
    keys_before = client.dbsize()

    with pytest.raises(site.ValidationError) as raised:
        site.enqueue("celery_example.tasks.record", queue="no-such-queue", label=label())

    assert isinstance(raised.value, InvalidArgumentError)
    assert raised.value.argument == "queue"
    assert "Queue should be one of short, default, long" in str(raised.value)
    assert client.dbsize() == keys_before


def test_a_full_queue_raises_frappes_queue_overloaded_with_its_message(site, bench):
    # Frappe 16's _check_queue_size: max_queued_jobs (here 1) plus 50 per site.
    if not hasattr(site, "QueueOverloaded"):
        pytest.skip("Frappe 15 has no queue limit (tests/test_bench_config.py: none is applied)")
    name = label()
    assert bench.run("set-config", "-g", "max_queued_jobs", "1").returncode == 0
    limit = 1 + 50 * len(frappe_celery.get_settings().sites)
    waiting = []
    try:
        frappe_celery.reload_settings()
        # Two long jobs hold the worker's two slots; the rest wait on the queue.
        waiting = [site.enqueue("celery_example.tasks.resumable_repost", label=f"{name}-{i}",
                                seconds=5, queue="long") for i in range(limit + 2)]  # fmt: skip
        with pytest.raises(site.QueueOverloaded) as raised:
            site.enqueue("celery_example.tasks.record", queue="long", label=name)
        assert raised.value.http_status_code == 503
        assert str(raised.value) == (
            f"Too many queued background jobs ({limit}). Please retry after some time."
        )
        assert isinstance(raised.value, frappe_celery.QueueOverloaded)
    finally:
        bench.run("set-config", "-g", "max_queued_jobs", "0")
        frappe_celery.reload_settings()
        for job in waiting:
            if job.get_status() == "queued":
                job.cancel()


def test_is_async_false_outside_tests_is_frappe_call_without_commit_or_hooks(site):
    name = label()
    site.flags.celery_example_before_job = None

    todo_name = site.enqueue("celery_example.tasks.insert_todo", label=name, is_async=False)

    # The method's own value, in this transaction, with no before_job hook around it.
    description = site.db.get_value("ToDo", todo_name, "description")
    assert description == f"{name}|user=Administrator|before_job=None"
    site.db.rollback()  # nothing was committed
    assert not site.db.exists("ToDo", todo_name)


def test_a_job_enqueued_during_migrate_with_redis_down_runs_inline(site, monkeypatch):
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    name = label()
    monkeypatch.setenv("FRAPPE_CELERY_BROKER_URL", f"redis://127.0.0.1:{closed}/0")
    frappe_celery.reload_settings()
    try:
        with pytest.raises(frappe_celery.BrokerUnreachable):
            site.enqueue("celery_example.tasks.insert_todo", label=f"{name}-outside")
        site.local.flags.in_migrate = True  # as bench migrate sets it

        todo_name = site.enqueue("celery_example.tasks.insert_todo", label=name)

        assert site.db.get_value("ToDo", todo_name, "description").startswith(f"{name}|")
    finally:
        site.local.flags.in_migrate = False
        monkeypatch.delenv("FRAPPE_CELERY_BROKER_URL")
        frappe_celery.reload_settings()


# -- 7. RQ's Job API: delete ----------------------------------------------------------------------


def test_deleting_a_running_job_from_the_desk_stops_it_and_forgets_it(site):
    # Frappe's test_delete_doc enqueues and deletes at once: a Celery worker has often started
    # the job by then. RQ deletes it anyway; here it is stopped first, so it never runs twice.
    import rq.exceptions

    name = label()
    job = site.enqueue("celery_example.tasks.sleep_for", label=name, seconds=60, queue="short")
    wait_for(lambda: frappe_celery.get_job_status(job.id) == "started", 30)
    handle = site.utils.background_jobs.get_job(job.id)

    site.get_doc("RQ Job", job.id).delete()

    assert frappe_celery.get_job_status(job.id) is None
    assert site.utils.background_jobs.get_job(job.id) is None
    with pytest.raises(rq.exceptions.NoSuchJobError):
        handle.refresh()


# -- 8. retention as Frappe hands it to RQ --------------------------------------------------------


def test_the_enqueuing_processs_frappe_conf_ttls_go_with_the_job(site):
    # Frappe passes frappe.conf's rq_job_failure_ttl / rq_results_ttl with every job (Frappe's
    # own test_configurable_ttl sets one in memory only).
    site.conf.rq_job_failure_ttl = 600
    site.conf.rq_results_ttl = 90
    try:
        job = site.enqueue("frappe.ping", queue="short")

        assert (job.failure_ttl, job.result_ttl) == (600, 90)
        assert wait_for_status(job.id, ("finished", "failed")).get_status() == "finished"
        client = frappe_celery.connection.get_redis()
        assert 60 < client.ttl(keys.job(job.id)) <= 90
    finally:
        del site.conf["rq_job_failure_ttl"], site.conf["rq_results_ttl"]
