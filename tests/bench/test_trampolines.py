"""Trampolines closed: functions of the bench's apps that run a shell, any SQL or any named
function (methods.DENIED), paths that walk into live objects (``frappe:db.sql``), and document
methods that are neither whitelisted nor the controller's own are refused at enqueue (nothing
written) and, forged straight onto the queue, never run on a real worker: the record fails."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from frappe_celery.errors import InvalidArgumentError
from frappe_celery.integrations.frappe.arguments import TAG

from ..support.frappe_bench import fresh, publish_unvalidated, wait_for_status
from ..support.processes import wait_for

pytestmark = pytest.mark.usefixtures("celery_worker")


def label() -> str:
    return f"trampoline-{uuid.uuid4().hex[:8]}"


def queued_lengths(site: Any) -> dict[str, int]:
    from frappe_celery import get_queue_list
    from frappe_celery.broker import keys
    from frappe_celery.connection import get_redis

    r = get_redis()
    return {
        name: int(r.llen(name)) for queue in get_queue_list() for name in keys.queue_lists(queue)
    }


def assert_refused_forged(job: Any, *expected: str) -> None:
    done = wait_for_status(job.id, ("finished", "failed"))
    assert done.get_status() == "failed"
    record = job.refresh()
    assert record["exc_type"] == "MethodNotAllowed", job.exc_info
    for text in expected:
        assert text in job.exc_info


def test_a_shell_any_sql_and_frappe_call_are_refused_at_enqueue_and_never_run_forged(
    site, tmp_path: Path
):
    doc = site.get_doc({"doctype": "Celery Example Task", "title": label()}).insert()
    site.db.commit()
    marker = tmp_path / "shell-ran"
    sql = f"update `tabCelery Example Task` set result='by sql' where name='{doc.name}'"
    calls: list[tuple[str, dict[str, Any], str]] = [
        ("frappe.utils.execute_in_shell", {"cmd": f"touch {marker}"}, "runs a shell command"),
        ("frappe:db.sql", {"query": sql}, "frappe.db the site's database connection"),
        (
            "frappe.call",
            {"fn": "frappe.utils.execute_in_shell", "cmd": f"touch {marker}"},
            "frappe.call calls the function it is named",
        ),
    ]
    for method, kwargs, reason in calls:
        before = queued_lengths(site)
        with pytest.raises(InvalidArgumentError) as refused:
            site.enqueue(method, queue="short", **kwargs)
        assert isinstance(refused.value, site.ValidationError)  # Frappe's error too
        assert refused.value.argument == "method"
        assert refused.value.given == method
        assert reason in refused.value.allowed
        assert queued_lengths(site) == before, f"{method}: something was published"

    for method, kwargs, reason in calls:
        assert_refused_forged(publish_unvalidated(method, kwargs), method, reason)
    assert not marker.exists()
    assert fresh(site).get_value("Celery Example Task", doc.name, "result") != "by sql"
    after = site.enqueue("frappe.ping", queue="short")  # the worker goes on
    assert wait_for_status(after.id, ("finished", "failed")).return_value() == "pong"


def test_a_document_method_neither_whitelisted_nor_the_controllers_own_is_refused(site):
    doc = site.get_doc({"doctype": "Celery Example Task", "title": label()}).insert()
    site.db.commit()
    # db_set is Document's, not Celery Example Task's, and not whitelisted: a message naming it
    # would write any field of any document.
    with pytest.raises(InvalidArgumentError) as refused:
        site.enqueue_doc(doc.doctype, doc.name, "db_set", fieldname="result", value="forced")
    assert refused.value.argument == "method"
    assert refused.value.given == "db_set"
    assert "neither whitelisted nor defined by the Celery Example Task controller" in (
        refused.value.allowed
    )
    with pytest.raises(InvalidArgumentError) as refused:
        site.enqueue(doc.db_set, fieldname="result", value="forced")
    assert refused.value.argument == "method"
    assert "'db_set' is neither whitelisted nor defined by" in refused.value.allowed
    forged = [
        # enqueue_doc's job, Frappe's enqueue_doc's job and queue_action's job, by hand.
        publish_unvalidated(
            "frappe_celery.jobs.run_doc_method",
            {
                "doctype": doc.doctype,
                "name": doc.name,
                "doc_method": "db_set",
                "fieldname": "result",
                "value": "forced",
            },
        ),
        publish_unvalidated(
            "frappe.utils.background_jobs.run_doc_method",
            {
                "doctype": doc.doctype,
                "name": doc.name,
                "doc_method": "db_set",
                "fieldname": "result",
                "value": "forced",
            },
        ),
        publish_unvalidated(
            "frappe.model.document.execute_action",
            {
                "__doctype": doc.doctype,
                "__name": doc.name,
                "__action": "db_set",
                "fieldname": "result",
                "value": "forced",
            },
        ),
        # A bound method of a Document (frappe.enqueue(doc.db_set)) is held to the same rule.
        publish_unvalidated(
            "frappe_celery.jobs.run_bound_method",
            {
                "bound_self": {TAG: "document", "data": doc.as_dict(convert_dates_to_str=True)},
                "bound_method": "db_set",
                "bound_kwargs": {"fieldname": "result", "value": "forced"},
            },
        ),
    ]
    for job in forged:
        assert_refused_forged(job, "'db_set' is neither whitelisted nor defined by")
    assert fresh(site).get_value("Celery Example Task", doc.name, "result") != "forced"

    # The controller's own methods and queue_action's _submit still run (as the call sites do).
    job_id = doc.process_in_background(note="still runs")
    assert wait_for_status(job_id, ("finished", "failed")).get_status() == "finished"
    doc.submit_in_background()  # queue_action("submit") enqueues execute_action(_submit)
    site.db.commit()
    wait_for(
        lambda: fresh(site).get_value("Celery Example Task", doc.name, "docstatus") == 1,
        timeout=60,
    )
