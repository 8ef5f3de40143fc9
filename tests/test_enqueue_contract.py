"""The enqueue contract: what ``frappe.enqueue`` accepts, refuses, writes and hands back.

Real Redis and real ``celery worker`` processes only. Jobs that must wait go to the custom
queues ``reports`` and ``batch``, which the shared worker does not consume; a dedicated worker
is started once the test has looked at the queued state.
"""

from __future__ import annotations

import json
import os
import time
import uuid
import warnings
from collections.abc import Callable
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
import redis

import frappe_celery as frappe
from frappe_celery.broker import keys
from frappe_celery.broker.wire import MAX_KWARGS, MAX_MESSAGE_BYTES, START_CHECKED
from frappe_celery.ops.embedded import free_port

from . import jobs
from .support.broker_state import redis_state
from .support.processes import wait_for

ALL_QUEUES = ["short", "default", "long", "reports", "batch"]
SITE_PREFIX = "test.site||"


# -- helpers ------------------------------------------------------------------------------------


def pending(r: redis.Redis, queue: str) -> int:
    """Messages waiting in ``queue``, summed over its priority lists."""
    return sum(int(r.llen(name)) for name in keys.queue_lists(queue))


def queued_messages(r: redis.Redis, queue: str) -> list[dict[str, Any]]:
    """Every broker message waiting in ``queue`` (all priority lists), decoded."""
    return [json.loads(raw) for name in keys.queue_lists(queue) for raw in r.lrange(name, 0, -1)]


def recorded(r: redis.Redis, key: str) -> list[Any]:
    """What tests.jobs.record / push wrote to ``key``, in order."""
    return [json.loads(raw) for raw in r.lrange(key, 0, -1)]


def new_key() -> str:
    return f"test:{uuid.uuid4().hex}"


def finished(job: frappe.Job) -> bool:
    return job.get_status() == frappe.JobStatus.FINISHED


def nested_function_factory() -> Callable[[str], None]:
    def nested(key: str) -> None:
        jobs.push(key, "nested")

    return nested


# -- 1. method: callable or dotted path ---------------------------------------------------------


@pytest.mark.parametrize("method", [jobs.add, "tests.jobs.add"], ids=["callable", "dotted_path"])
def test_method_given_as_callable_or_dotted_path_runs_on_a_worker(r, shared_worker, method):
    job = frappe.enqueue(method, a=20, b=22)

    assert job.method == "tests.jobs.add"
    wait_for(lambda: finished(job), 20)
    assert job.return_value() == 42


def test_staticmethod_given_as_callable_runs_on_a_worker(r, shared_worker):
    key = new_key()

    job = frappe.enqueue(jobs.Holder.static_job, key=key)

    wait_for(lambda: finished(job), 20)
    assert recorded(r, key) == ["static"]


@pytest.mark.parametrize(
    ("method", "reason"),
    [
        (lambda key: None, "lambda or nested function"),
        (nested_function_factory(), "lambda or nested function"),
        (jobs.Document("Report", "R-1").submit_later, "bound method"),
    ],
    ids=["lambda", "nested_function", "bound_method"],
)
def test_unimportable_callable_is_refused_naming_method_and_writes_nothing(r, method, reason):
    before = redis_state(r)

    with pytest.raises(frappe.InvalidArgumentError) as caught:
        frappe.enqueue(method, queue="reports", job_id="refused", key="test:refused")

    assert caught.value.argument == "method"
    assert str(caught.value).startswith("method: got ")
    assert reason in str(caught.value)
    assert "dotted path" in str(caught.value)
    assert redis_state(r) == before
    assert frappe.get_job("refused") is None


@pytest.mark.parametrize(
    "method", [jobs._private_add, "tests.jobs._private_add"], ids=["callable", "dotted_path"]
)
def test_a_single_underscore_function_runs_as_frappes_bulk_action_does(r, shared_worker, method):
    # frappe.enqueue(_bulk_action, ...) in frappe/desk/doctype/bulk_update/bulk_update.py
    job = frappe.enqueue(method, a=40, b=2)

    assert job.method == "tests.jobs._private_add"
    wait_for(lambda: finished(job), 20)
    assert job.return_value() == 42


@pytest.mark.parametrize(
    ("timeout", "seconds"),
    [("3600", 3600), ("1h", 3600), ("30m", 1800), ("45s", 45), ("2d", 172800), (" 90 ", 90),
     (600, 600), (2.5, 2.5), (0, 120), ("0", 120), (None, 120)],
)  # fmt: skip
def test_timeout_accepts_what_rq_accepts_and_a_falsy_one_means_the_queues(r, timeout, seconds):
    # ERPNext's payment reconciliation passes timeout="3600"; Frappe maps a falsy one to the
    # queue's default (reports: 120 s here). Nothing consumes "reports" in this test.
    job = frappe.enqueue("tests.jobs.add", queue="reports", timeout=timeout, a=1, b=2)

    assert job.timeout == seconds
    [message] = [m for m in queued_messages(r, "reports") if m["headers"]["id"] == job.id]
    assert message["headers"]["timelimit"][1] == seconds  # Celery's soft limit
    job.cancel()


# -- 2. queue routing ---------------------------------------------------------------------------


def test_job_waits_on_its_own_queue_list_until_a_worker_on_that_queue_starts(
    r, shared_worker, start_worker
):
    key = new_key()

    job = frappe.enqueue("tests.jobs.record", queue="reports", key=key, value="ran")

    messages = queued_messages(r, "reports")
    assert [m["headers"]["id"] for m in messages] == [job.id]
    assert messages[0]["properties"]["delivery_info"]["routing_key"] == "reports"
    assert job.queue == "reports"
    for other in ("short", "default", "long", "batch"):
        assert pending(r, other) == 0
    # The shared worker (short,default,long) leaves it alone.
    time.sleep(1)
    assert job.get_status() == frappe.JobStatus.QUEUED
    assert recorded(r, key) == []

    start_worker("reports", concurrency=1)

    wait_for(lambda: finished(job), 30)
    assert recorded(r, key) == ["ran"]
    assert pending(r, "reports") == 0


def test_a_job_without_job_id_gets_a_uuid4_id_and_its_own_token_and_delivery_tag(r):
    """The ids enqueue makes itself (frappe_celery.caller.ids, not uuid.uuid4): the job id ends in a
    version-4 UUID's text as Frappe's str(uuid4()), the token is 128 bits of hex, the delivery
    tag is a UUID, and no two jobs share any of them."""
    made = [frappe.enqueue("tests.jobs.add", queue="short", a=1, b=2) for _ in range(50)]
    records = [job.refresh() for job in made]
    ids = [job.id.rsplit("|", 1)[1] for job in made]
    assert all(str(uuid.UUID(i)) == i and uuid.UUID(i).version == 4 for i in ids)
    assert all(len(rec["token"]) == 32 and int(rec["token"], 16) >= 0 for rec in records)
    assert all(uuid.UUID(rec["delivery_tag"]).version == 4 for rec in records)
    for name, values in (("id", ids), ("token", [rec["token"] for rec in records]),
                         ("delivery_tag", [rec["delivery_tag"] for rec in records])):  # fmt: skip
        assert len(set(values)) == len(values), name


def test_unknown_queue_is_refused_listing_the_valid_queues_and_writes_nothing(r):
    before = redis_state(r)

    with pytest.raises(frappe.InvalidArgumentError) as caught:
        frappe.enqueue("tests.jobs.add", queue="reportz", job_id="bad-queue", a=1, b=2)

    message = str(caught.value)
    assert caught.value.argument == "queue"
    assert "'reportz'" in message
    assert ", ".join(ALL_QUEUES) in message
    assert redis_state(r) == before
    assert frappe.get_job("bad-queue") is None


# -- 3. at_front and at_front_when_starved -------------------------------------------------------


def test_at_front_job_runs_before_queued_jobs(r, start_worker):
    key = new_key()
    for n in range(20):
        frappe.enqueue("tests.jobs.record", queue="reports", key=key, value=f"n{n}")

    front = frappe.enqueue(
        "tests.jobs.record", queue="reports", at_front=True, key=key, value="front"
    )

    assert front.get_position() == 0
    start_worker("reports", concurrency=1)
    wait_for(lambda: r.llen(key) == 21, 60)
    assert recorded(r, key) == ["front"] + [f"n{n}" for n in range(20)]


def test_at_front_when_starved_runs_first_with_more_than_16_pending(r, start_worker):
    key = new_key()
    for n in range(17):
        frappe.enqueue("tests.jobs.record", queue="reports", key=key, value=f"n{n}")

    starved = frappe.enqueue(
        "tests.jobs.record",
        queue="reports",
        at_front_when_starved=True,
        key=key,
        value="starved",
    )

    assert starved.get_position() == 0
    start_worker("reports", concurrency=1)
    wait_for(lambda: r.llen(key) == 18, 60)
    assert recorded(r, key) == ["starved"] + [f"n{n}" for n in range(17)]


def test_at_front_when_starved_waits_its_turn_with_16_pending(r, start_worker):
    key = new_key()
    for n in range(16):
        frappe.enqueue("tests.jobs.record", queue="reports", key=key, value=f"n{n}")

    patient = frappe.enqueue(
        "tests.jobs.record",
        queue="reports",
        at_front_when_starved=True,
        key=key,
        value="patient",
    )

    assert patient.get_position() == 16
    start_worker("reports", concurrency=1)
    wait_for(lambda: r.llen(key) == 17, 60)
    assert recorded(r, key) == [f"n{n}" for n in range(16)] + ["patient"]


# -- 4. worker queue order ---------------------------------------------------------------------


def test_worker_takes_queues_in_strict_q_order_not_enqueue_order(r, start_worker):
    key = new_key()
    for n in range(3):
        frappe.enqueue("tests.jobs.record", queue="batch", key=key, value=f"batch{n}")
    for n in range(3):
        frappe.enqueue("tests.jobs.record", queue="reports", key=key, value=f"reports{n}")

    start_worker("reports,batch", concurrency=1)

    wait_for(lambda: r.llen(key) == 6, 60)
    assert recorded(r, key) == [f"reports{n}" for n in range(3)] + [f"batch{n}" for n in range(3)]


def test_at_front_job_on_a_later_q_queue_does_not_overtake_an_earlier_queue(r, start_worker):
    """RQ's strict -Q order: at_front puts a job at the front of ITS queue, nothing more."""
    key = new_key()
    frappe.enqueue("tests.jobs.record", queue="batch", key=key, value="batch0")
    frappe.enqueue("tests.jobs.record", queue="batch", at_front=True, key=key, value="batch-front")
    for n in range(3):
        frappe.enqueue("tests.jobs.record", queue="reports", key=key, value=f"reports{n}")

    start_worker("reports,batch", concurrency=1)

    wait_for(lambda: r.llen(key) == 5, 60)
    assert recorded(r, key) == [
        "reports0",
        "reports1",
        "reports2",
        "batch-front",
        "batch0",
    ]


# -- 5. now=True --------------------------------------------------------------------------------


@pytest.mark.parametrize("method", [jobs.add, "tests.jobs.add"], ids=["callable", "dotted_path"])
def test_now_runs_in_process_and_returns_the_value_writing_nothing(r, method):
    before = redis_state(r)

    result = frappe.enqueue(method, now=True, job_id="now-job", a=2, b=3)

    assert result == 5
    assert redis_state(r) == before
    assert frappe.get_job("now-job") is None


def test_now_drops_kwargs_the_function_does_not_accept(r):
    assert frappe.enqueue("tests.jobs.only_a", now=True, a=1, b=2) == 1


def test_now_passes_every_kwarg_to_a_function_taking_var_kwargs(r):
    result = frappe.enqueue("tests.jobs.echo_kwargs", now=True, a=1, b=2, c="three")

    assert result == {"a": 1, "b": 2, "c": "three"}


# -- 6. kwargs round trip ------------------------------------------------------------------------


def test_datetime_date_decimal_uuid_kwargs_arrive_in_the_worker_with_their_types(r, shared_worker):
    key = new_key()
    values = {
        "aware": datetime(2024, 3, 1, 9, 30, 15, 123456, tzinfo=timezone(timedelta(hours=5.5))),
        "aware_utc": datetime(2024, 3, 1, 4, 0, tzinfo=timezone.utc),
        "naive": datetime(2024, 3, 1, 9, 30, 15),
        "day": date(2024, 2, 29),
        "amount": Decimal("1234.50"),
        "ident": uuid.UUID("12345678-1234-5678-1234-567812345678"),
    }

    job = frappe.enqueue("tests.jobs.describe", key=key, **values)

    assert job.kwargs == {"key": key, **values}
    wait_for(lambda: r.llen(key) == 1, 20)
    seen = recorded(r, key)[0]
    assert seen == {name: [type(value).__name__, str(value)] for name, value in values.items()}
    assert seen["aware"] == ["datetime", "2024-03-01 09:30:15.123456+05:30"]
    assert seen["naive"] == ["datetime", "2024-03-01 09:30:15"]
    assert seen["amount"] == ["Decimal", "1234.50"]
    wait_for(lambda: finished(job), 20)
    assert job.return_value() == values


class Customer:
    def __init__(self, name: str) -> None:
        self.name = name


@pytest.mark.parametrize(
    "value",
    [object(), {1, 2}, Customer("CUST-0001")],
    ids=["object", "set", "class_instance"],
)
def test_non_json_kwarg_is_refused_naming_it_and_writes_nothing(r, value):
    before = redis_state(r)

    with pytest.raises(TypeError) as caught:
        frappe.enqueue(
            "tests.jobs.describe", queue="reports", job_id="non-json", key="k", customer=value
        )

    assert isinstance(caught.value, frappe.UnserializableArgumentError)
    assert caught.value.argument == "customer"
    message = str(caught.value)
    assert message.startswith("customer: got ")
    assert type(value).__name__ in message
    assert "Pass an id" in message
    assert redis_state(r) == before
    assert frappe.get_job("non-json") is None


def nested(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize(
    ("make_kwargs", "named", "allowed"),
    [
        (lambda: {"key": "k", "payload": "x" * (10 * 1024 * 1024)}, "payload",
         f"at most {MAX_MESSAGE_BYTES} bytes"),
        (lambda: {"key": "k", "tree": nested(5000)}, "tree", "recursion limit"),
        (lambda: {f"k{n}": n for n in range(10_000)}, "kwargs", f"at most {MAX_KWARGS}"),
    ],
    ids=["10-MB-argument", "nested-5000-deep", "10000-kwargs"],
)  # fmt: skip
def test_oversized_arguments_are_refused_naming_them_and_write_nothing(
    r, make_kwargs, named, allowed
):
    before = redis_state(r)
    with pytest.raises(frappe.InvalidArgumentError) as caught:
        frappe.enqueue("tests.jobs.describe", queue="reports", job_id="huge", **make_kwargs())
    assert caught.value.argument == named
    assert allowed in str(caught.value)
    assert len(str(caught.value)) < 1000  # the value itself is not echoed
    assert redis_state(r) == before
    assert frappe.get_job("huge") is None


def test_an_argument_just_under_the_size_limit_is_accepted(r):
    job = frappe.enqueue("tests.jobs.describe", queue="reports", key="k",
                         payload="x" * (MAX_MESSAGE_BYTES - 10_000))  # fmt: skip
    assert job.get_status() == "queued"


# -- 7. job_name and event ----------------------------------------------------------------------


def test_job_name_is_deprecated_but_kept_as_the_display_name(r):
    with pytest.warns(DeprecationWarning, match="job_name"):
        job = frappe.enqueue(
            "tests.jobs.add", queue="reports", job_name="Nightly totals", job_id="named", a=1, b=2
        )

    assert job.job_name == "Nightly totals"
    assert frappe.get_job("named").job_name == "Nightly totals"


def test_job_without_job_name_warns_nothing_and_is_named_by_its_method(r):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        job = frappe.enqueue("tests.jobs.add", queue="reports", job_id="unnamed", a=1, b=2)

    assert frappe.get_job("unnamed").job_name == "tests.jobs.add"
    assert job.job_name == "tests.jobs.add"


def test_event_is_stored_on_the_job(r):
    job = frappe.enqueue("tests.jobs.add", queue="reports", event="daily", job_id="ev", a=1, b=2)

    assert job.event == "daily"
    assert frappe.get_job("ev").event == "daily"


# -- 8. the job handle --------------------------------------------------------------------------


def test_job_id_is_site_namespaced_and_is_the_celery_task_id(r):
    job = frappe.enqueue("tests.jobs.add", queue="reports", job_id="inv:42", a=1, b=2)

    assert job.id == frappe.create_job_id("inv:42") == "test.site||inv|42"
    [stored] = queued_messages(r, "reports")
    assert stored["headers"]["id"] == job.id
    assert stored["headers"]["task"] == "frappe_celery.execute_job"


def test_a_record_keeps_a_copy_of_its_message_only_when_deduplicated(r):
    """The copy lets the next deduplicated enqueue find the message with one LPOS; without it a
    pending job's record stays in Redis's compact hash encoding (a ~1 KB field would make it a
    table of ~5 KB)."""
    plain = frappe.enqueue("tests.jobs.add", queue="reports", a=1, b=2)
    deduplicated = frappe.enqueue(
        "tests.jobs.add", queue="reports", job_id="copy", deduplicate=True, a=1, b=2
    )

    assert not r.hexists(keys.job(plain.id), "message")
    assert r.object("encoding", keys.job(plain.id)) in (b"listpack", b"ziplist")
    copy = json.loads(r.hget(keys.job(deduplicated.id), "message"))
    assert copy in queued_messages(r, "reports")
    assert plain.kwargs == deduplicated.kwargs == {"a": 1, "b": 2}  # found in the queue
    # Without searching the queue (a page of the Desk's list): only where the record knows.
    assert frappe.get_job(plain.id).known_kwargs() == {}
    assert frappe.get_job(deduplicated.id).known_kwargs() == {"a": 1, "b": 2}


def test_job_without_job_id_gets_a_unique_site_namespaced_id(r):
    first = frappe.enqueue("tests.jobs.add", queue="reports", a=1, b=2)
    second = frappe.enqueue("tests.jobs.add", queue="reports", a=1, b=2)

    assert first.id.startswith(SITE_PREFIX)
    assert second.id.startswith(SITE_PREFIX)
    assert first.id != second.id


def test_status_goes_queued_started_finished_with_ordered_timestamps(r, start_worker):
    key, release = new_key(), new_key()
    job = frappe.enqueue(
        "tests.jobs.wait_for_release", queue="reports", key=key, release_key=release
    )

    assert job.get_status() == frappe.JobStatus.QUEUED == "queued"
    assert (job.is_queued, job.is_started, job.is_finished, job.is_failed) == (
        True,
        False,
        False,
        False,
    )
    assert job.started_at is None
    assert job.ended_at is None

    start_worker("reports", concurrency=1)
    wait_for(lambda: job.get_status() == frappe.JobStatus.STARTED, 30)
    assert (job.is_queued, job.is_started, job.is_finished, job.is_failed) == (
        False,
        True,
        False,
        False,
    )
    assert job.ended_at is None

    r.set(release, 1)
    wait_for(lambda: finished(job), 30)
    assert job.get_status() == "finished"
    assert (job.is_queued, job.is_started, job.is_finished, job.is_failed) == (
        False,
        False,
        True,
        False,
    )
    stamps = [job.enqueued_at, job.started_at, job.ended_at]
    assert all(isinstance(stamp, datetime) and stamp.tzinfo for stamp in stamps)
    assert stamps[0] <= stamps[1] <= stamps[2]


def test_finished_job_exposes_its_return_value(r, shared_worker):
    job = frappe.enqueue("tests.jobs.add", a=40, b=2)

    wait_for(lambda: finished(job), 20)
    assert job.return_value() == 42
    assert job.result == 42
    assert job.exc_info is None


def test_failed_job_exposes_exc_info_and_no_return_value(r, shared_worker):
    job = frappe.enqueue("tests.jobs.fail", message="ledger out of balance")

    wait_for(lambda: job.get_status() == frappe.JobStatus.FAILED, 20)
    assert job.is_failed
    assert not job.is_finished
    assert "ValueError" in job.exc_info
    assert "ledger out of balance" in job.exc_info
    assert job.return_value() is None
    assert job.ended_at is not None


def test_kwargs_returns_the_method_kwargs(r):
    job = frappe.enqueue("tests.jobs.add", queue="reports", job_id="kw", a=7, b=8)

    assert job.kwargs == {"a": 7, "b": 8}
    assert frappe.get_job("kw").kwargs == {"a": 7, "b": 8}


def test_get_position_counts_from_zero_and_at_front_takes_zero(r):
    queued = [frappe.enqueue("tests.jobs.add", queue="reports", a=n, b=0) for n in range(3)]

    assert [job.get_position() for job in queued] == [0, 1, 2]

    front = frappe.enqueue("tests.jobs.add", queue="reports", at_front=True, a=9, b=0)

    assert front.get_position() == 0
    assert [job.get_position() for job in queued] == [1, 2, 3]


def test_cancel_takes_a_queued_job_off_its_queue_and_it_never_runs(r, start_worker):
    key = new_key()
    doomed = frappe.enqueue(
        "tests.jobs.record", queue="reports", job_id="doomed", key=key, value="doomed"
    )
    kept = frappe.enqueue("tests.jobs.record", queue="reports", key=key, value="kept")

    doomed.cancel()

    assert [m["headers"]["id"] for m in queued_messages(r, "reports")] == [kept.id]
    assert doomed.get_status() == frappe.JobStatus.CANCELED
    assert doomed.get_position() is None
    assert not frappe.is_job_enqueued("doomed")

    start_worker("reports", concurrency=1)
    wait_for(lambda: finished(kept), 30)
    assert recorded(r, key) == ["kept"]
    assert doomed.get_status() == frappe.JobStatus.CANCELED


def test_a_job_whose_record_says_canceled_as_its_message_is_taken_never_runs(r, start_worker):
    """A message still out when its job was canceled (held by a worker, then returned to its
    queue) is skipped by whichever worker takes it: reserve.lua does not vouch for it, so the
    pool child checks the record before running. A message claiming that check for itself
    (wire.START_CHECKED in its own properties) is not believed."""
    key = new_key()
    doomed = frappe.enqueue(
        "tests.jobs.record", queue="reports", job_id="doomed-out", key=key, value="doomed"
    )
    kept = frappe.enqueue("tests.jobs.record", queue="reports", key=key, value="kept")
    # The record as cancel.lua leaves it, with the message left where it is.
    r.hset(keys.job(doomed.id), "status", "canceled")
    for name in keys.queue_lists("reports"):
        for index, raw in enumerate(r.lrange(name, 0, -1)):
            message = json.loads(raw)
            message["properties"][START_CHECKED] = True
            r.lset(name, index, json.dumps(message))

    start_worker("reports", concurrency=1)
    wait_for(lambda: finished(kept), 30)
    doomed_tag = r.hget(keys.job(doomed.id), "delivery_tag")
    wait_for(lambda: not pending(r, "reports") and not r.hexists("unacked", doomed_tag), 10)
    assert recorded(r, key) == ["kept"]
    assert doomed.get_status() == frappe.JobStatus.CANCELED


def test_cancel_of_a_finished_job_raises_invalid_job_operation(r, shared_worker):
    job = frappe.enqueue("tests.jobs.add", a=1, b=1)
    wait_for(lambda: finished(job), 20)

    with pytest.raises(frappe.InvalidJobOperation, match="finished"):
        job.cancel()

    assert job.get_status() == frappe.JobStatus.FINISHED
    assert job.return_value() == 2


def test_lookups_accept_the_callers_id_and_the_namespaced_id(r, shared_worker):
    key, release = new_key(), new_key()
    job = frappe.enqueue(
        "tests.jobs.wait_for_release", job_id="lookup:1", key=key, release_key=release
    )
    ids = ["lookup:1", job.id]

    wait_for(lambda: job.get_status() == frappe.JobStatus.STARTED, 20)
    for given in ids:
        assert frappe.get_job(given).id == job.id
        assert frappe.get_job_status(given) == frappe.JobStatus.STARTED
        assert frappe.is_job_enqueued(given) is True

    r.set(release, 1)
    wait_for(lambda: finished(job), 20)
    for given in ids:
        assert frappe.get_job(given).return_value() == "released"
        assert frappe.get_job_status(given) == frappe.JobStatus.FINISHED
        assert frappe.is_job_enqueued(given) is False


def test_lookups_of_a_queued_job_find_it(r):
    job = frappe.enqueue("tests.jobs.add", queue="reports", job_id="waiting", a=1, b=2)

    for given in ("waiting", job.id):
        assert frappe.get_job(given).id == job.id
        assert frappe.get_job_status(given) == "queued"
        assert frappe.is_job_enqueued(given) is True


@pytest.mark.parametrize("given", ["never-enqueued", SITE_PREFIX + "never-enqueued"])
def test_lookups_of_an_unknown_id_return_none_none_false(r, given):
    assert frappe.get_job(given) is None
    assert frappe.get_job_status(given) is None
    assert frappe.is_job_enqueued(given) is False


# -- 9. retention -------------------------------------------------------------------------------


def test_finished_job_record_is_kept_for_rq_results_ttl(r, shared_worker):
    job = frappe.enqueue("tests.jobs.add", a=1, b=2)
    wait_for(lambda: finished(job), 20)

    assert 500 <= r.ttl(keys.job(job.id)) <= 600


def test_failed_job_record_is_kept_for_seven_days(r, shared_worker):
    job = frappe.enqueue("tests.jobs.fail", message="kept for a week")
    wait_for(lambda: job.get_status() == frappe.JobStatus.FAILED, 20)

    assert 604800 - 100 <= r.ttl(keys.job(job.id)) <= 604800


# -- 10. backpressure ---------------------------------------------------------------------------


def test_queue_overloaded_at_max_queued_jobs_counting_every_priority_list(r):
    for n in range(450):
        frappe.enqueue("tests.jobs.add", queue="reports", a=n, b=0)
    for n in range(50):
        frappe.enqueue("tests.jobs.add", queue="reports", at_front=True, a=n, b=0)
    assert pending(r, "reports") == 500
    before = redis_state(r)

    for at_front in (False, True):
        with pytest.raises(frappe.QueueOverloaded) as caught:
            frappe.enqueue(
                "tests.jobs.add", queue="reports", at_front=at_front, job_id="overflow", a=1, b=2
            )
        message = str(caught.value)
        assert "'reports'" in message
        assert "(500)" in message
        assert "max_queued_jobs is 500" in message
        assert (caught.value.queue, caught.value.pending, caught.value.limit) == (
            "reports",
            500,
            500,
        )

    assert redis_state(r) == before
    assert not r.exists(keys.job(frappe.create_job_id("overflow")))
    assert pending(r, "reports") == 500
    # What it did write: both refusals counted, for the metrics.
    counted = {k.decode(): int(v) for k, v in r.hgetall(keys.METRICS_OUTCOMES).items()}
    assert counted == {"reports\x1ftest.site\x1ftests.jobs.add\x1foverloaded": 2}
    # Other queues are not affected by a full one.
    assert frappe.enqueue("tests.jobs.add", queue="batch", a=1, b=2).is_queued


# -- 11. bad input ------------------------------------------------------------------------------


BAD_INPUT = [
    pytest.param({"queue": "nope"}, "queue", "'nope'", "short, default, long", id="queue"),
    pytest.param({"timeout": -5}, "timeout", "-5", "positive number", id="timeout_negative"),
    pytest.param({"timeout": "10x"}, "timeout", "'10x'", "'1h', '30m'", id="timeout_bad_unit"),
    pytest.param({"timeout": "1.5h"}, "timeout", "'1.5h'", "'1h', '30m'", id="timeout_frac_str"),
    pytest.param({"timeout": "-1"}, "timeout", "'-1'", "positive number", id="timeout_neg_str"),
    # A digit int() cannot read: refused as the others, not a bare ValueError from int().
    pytest.param({"timeout": "2²"}, "timeout", "'2²'", "'1h', '30m'", id="timeout_superscript"),
    pytest.param(
        {"method": "tests.jobs.__dict__"}, "method", "__dict__", "dunder names", id="dunder"
    ),
    pytest.param(
        {"method": "tests.jobs:Holder.__init__"}, "method", "__init__", "dunder", id="dunder_qual"
    ),
    pytest.param({"timeout": True}, "timeout", "True", "positive number", id="timeout_bool"),
    pytest.param({"method": "nodots"}, "method", "'nodots'", "dotted path", id="path_nodots"),
    pytest.param({"method": "a..b"}, "method", "'a..b'", "dotted path", id="path_empty_part"),
    pytest.param({"method": "a.b-c"}, "method", "'a.b-c'", "dotted path", id="path_dash"),
    pytest.param({"method": "1abc.def"}, "method", "'1abc.def'", "dotted path", id="path_digit"),
    pytest.param(
        {"method": "os.system"}, "method", "'os.system'", "standard-library", id="os_system"
    ),
    pytest.param(
        {"method": "subprocess.run"},
        "method",
        "'subprocess.run'",
        "standard-library",
        id="subprocess_run",
    ),
    pytest.param({"method": os.system}, "method", "system", "standard-library", id="os_callable"),
    pytest.param(
        {"method": "otherapp.tasks.run"},
        "method",
        "'otherapp.tasks.run'",
        "allowed module prefixes: tests",
        id="outside_allowed_modules",
    ),
    pytest.param(
        {"method": "testsuite.jobs.add"},
        "method",
        "'testsuite.jobs.add'",
        "allowed module prefixes: tests",
        id="prefix_is_not_a_package",
    ),
    pytest.param(
        {"deduplicate": True, "job_id": None}, "job_id", "None", "deduplicate", id="dedup_no_id"
    ),
    pytest.param({"job_id": ""}, "job_id", "''", "non-empty string", id="job_id_empty"),
    pytest.param({"job_id": 123}, "job_id", "123", "non-empty string", id="job_id_int"),
    pytest.param({"event": 5}, "event", "5", "must be str or None", id="event_int"),
    pytest.param({"job_name": ["x"]}, "job_name", "['x']", "must be str", id="job_name_list"),
]


@pytest.mark.parametrize(("overrides", "argument", "given", "allowed"), BAD_INPUT)
def test_bad_argument_is_refused_naming_it_what_was_given_and_allowed_writing_nothing(
    r, overrides, argument, given, allowed
):
    call = {"method": "tests.jobs.add", "queue": "reports", "job_id": "bad-input", **overrides}
    before = redis_state(r)

    with pytest.raises(frappe.InvalidArgumentError) as caught:
        frappe.enqueue(**call, a=1, b=2)

    message = str(caught.value)
    assert caught.value.argument == argument
    assert message.startswith(f"{argument}: got ")
    assert given in message
    assert allowed in message
    assert redis_state(r) == before
    assert not any(r.scan_iter(match=keys.job("*")))


# -- 12. broker unreachable ---------------------------------------------------------------------


@pytest.fixture
def unreachable_broker(redis_server):
    """Settings pointing at a closed port, with a password; restored afterwards."""
    saved = os.environ["FRAPPE_CELERY_BROKER_URL"]
    url = f"redis://:secret@127.0.0.1:{free_port()}/0"
    os.environ["FRAPPE_CELERY_BROKER_URL"] = url
    try:
        frappe.reload_settings()
        yield url
    finally:
        os.environ["FRAPPE_CELERY_BROKER_URL"] = saved
        frappe.reload_settings()


def test_unreachable_broker_raises_broker_unreachable_with_the_password_hidden(
    r, unreachable_broker
):
    started = time.monotonic()

    with pytest.raises(frappe.BrokerUnreachable) as caught:
        frappe.enqueue("tests.jobs.add", queue="reports", job_id="no-broker", a=1, b=2)

    assert time.monotonic() - started < 5
    message = str(caught.value)
    redacted = unreachable_broker.replace(":secret@", ":***@")
    assert redacted in message
    assert "secret" not in message
    assert "secret" not in repr(caught.value)
    assert isinstance(caught.value, ConnectionError)
    assert not r.exists(keys.job(frappe.create_job_id("no-broker")))


def test_two_handles_on_one_job_are_equal_as_rq_jobs_are(r):
    job = frappe.enqueue("tests.jobs.add", queue="batch", a=1, b=2)
    assert frappe.get_job(job.id.split("||", 1)[1]) == job
    assert len({job, frappe.Job(job.id)}) == 1
    assert job != frappe.enqueue("tests.jobs.add", queue="batch", a=1, b=2)
