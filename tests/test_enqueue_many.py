"""enqueue_many: many enqueue calls in one pipelined round trip, with enqueue's own validation
(all of it before anything is written), dedup, backpressure and after-commit rules."""

from __future__ import annotations

import json

import pytest

import frappe_celery as frappe
from frappe_celery.broker import keys
from frappe_celery.caller.transaction import transaction_scope
from frappe_celery.config import NORMAL_PRIORITY

from .support.broker_state import redis_state
from .support.processes import wait_for


def test_every_call_becomes_a_job_in_order_and_runs(r, shared_worker):
    jobs = frappe.enqueue_many(
        [
            {"method": "tests.jobs.add", "queue": "short", "a": 1, "b": 2},
            ("tests.jobs.record", "default"),  # enqueue's positional arguments
            {"method": "tests.jobs.add", "a": 3, "b": 4, "job_id": "many-3", "at_front": True},
        ]
    )
    assert [job.queue if job else None for job in jobs] == ["short", "default", "default"]
    first, recorded, third = jobs
    assert third.id == frappe.create_job_id("many-3")
    wait_for(lambda: first.get_status() == "finished" and third.get_status() == "finished", 30)
    assert (first.return_value(), third.return_value()) == (3, 7)
    # tests.jobs.record needs a key: the tuple gave none, so that job failed in the worker,
    # as `enqueue("tests.jobs.record", "default")` would.
    wait_for(lambda: recorded.get_status() == "failed", 30)


def test_an_invalid_call_names_its_index_and_nothing_is_written(r):
    before = redis_state(r)  # every key but what running workers write on their own
    calls = [
        {"method": "tests.jobs.add", "queue": "short", "a": 1, "b": 2},
        {"method": "tests.jobs.add", "queue": "nowhere", "a": 1, "b": 2},
    ]
    with pytest.raises(frappe.InvalidArgumentError, match=r"calls\[1\]\.queue: got 'nowhere'"):
        frappe.enqueue_many(calls)
    with pytest.raises(frappe.UnserializableArgumentError, match=r"calls\[2\]\.value"):
        unserializable = {"method": "tests.jobs.record", "key": "k", "value": object()}
        frappe.enqueue_many([*calls[:1], ("tests.jobs.add",), unserializable])
    for bad, named in [
        ({"queue": "short"}, r"calls\[0\]\.method"),
        ("tests.jobs.add", r"calls\[0\]: got 'tests.jobs.add'; a dict"),
        (tuple(["tests.jobs.add"] * 9), r"calls\[0\]: got .*a tuple of at most 8"),
        ({"method": "tests.jobs.add", "now": True}, r"calls\[0\]\.now"),
        ({"method": "tests.jobs.add", "is_async": False}, r"calls\[0\]\.is_async"),
        ({"method": "os.system", "command": "true"}, r"calls\[0\]\.method"),
    ]:
        with pytest.raises(frappe.InvalidArgumentError, match=named):
            frappe.enqueue_many([bad, *calls[:1]])
    with pytest.raises(frappe.InvalidArgumentError, match="calls: got"):
        frappe.enqueue_many({"method": "tests.jobs.add"})  # type: ignore[arg-type]
    assert redis_state(r) == before
    assert sum(r.llen(name) for name in keys.queue_lists("short")) == 0


def test_dedup_applies_within_the_batch_and_against_queued_jobs(r):
    queued = frappe.enqueue(
        "tests.jobs.add", queue="reports", job_id="taken", deduplicate=True, a=0, b=0
    )
    assert queued is not None
    call = {"method": "tests.jobs.add", "queue": "reports", "deduplicate": True, "a": 1, "b": 1}
    jobs = frappe.enqueue_many(
        [{**call, "job_id": "fresh"}, {**call, "job_id": "fresh"}, {**call, "job_id": "taken"}]
    )
    assert jobs[0] is not None and jobs[1] is None and jobs[2] is None
    assert sum(r.llen(name) for name in keys.queue_lists("reports")) == 2


def test_after_commit_calls_wait_for_the_commit_and_the_others_do_not(r):
    with transaction_scope():
        jobs = frappe.enqueue_many(
            [
                {"method": "tests.jobs.add", "queue": "reports", "a": 1, "b": 1},
                {"method": "tests.jobs.add", "queue": "reports", "enqueue_after_commit": True,
                 "job_id": "after", "a": 2, "b": 2},
            ]
        )  # fmt: skip
        assert jobs[0] is not None and jobs[1] is None
        assert sum(r.llen(name) for name in keys.queue_lists("reports")) == 1
    assert frappe.get_job("after") is not None
    assert sum(r.llen(name) for name in keys.queue_lists("reports")) == 2


def test_a_full_queue_refuses_its_jobs_and_publishes_the_others(r, tmp_path):
    from .support.settings import settings_env

    config = tmp_path / "small.json"
    config.write_text(json.dumps({"max_queued_jobs": 1, "workers": {"reports": {}}}))
    with settings_env(FRAPPE_CELERY_CONFIG=str(config), FRAPPE_CELERY_SITE=""):
        limit = frappe.get_settings().max_queued_jobs
        calls = [{"method": "tests.jobs.add", "queue": "reports", "a": i, "b": i}
                 for i in range(limit + 2)]  # fmt: skip
        with pytest.raises(frappe.PublishError) as raised:
            frappe.enqueue_many(calls)
    published = [job for job in raised.value.results if job is not None]
    assert len(published) == limit
    assert len(raised.value.failures) == 2
    assert all(isinstance(exc, frappe.QueueOverloaded) for _, exc in raised.value.failures)


def test_a_generator_s_jobs_are_published_a_script_call_at_a_time_as_they_come(r):
    """publish_batch sends each SCRIPT_BATCH of a generator's jobs before asking it for the
    next ones, so Redis runs a call while the caller encodes the next (the scheduler's all-due
    tick); every job is published once, in order."""
    from frappe_celery.caller.enqueue import _prepare_call
    from frappe_celery.caller.publish import SCRIPT_BATCH, publish_batch

    total = SCRIPT_BATCH + 5
    seen_when_asked: dict[int, int] = {}

    def publications():
        for i in range(total):
            if i == SCRIPT_BATCH:
                # The first call was sent before this job was asked for: Redis runs it now.
                wait_for(lambda: waiting_in_batch(r) == SCRIPT_BATCH, 5, interval=0.01)
                seen_when_asked[i] = waiting_in_batch(r)
            build, _ = _prepare_call({"method": "tests.jobs.add", "queue": "batch", "a": i, "b": 0})
            yield build()

    jobs = publish_batch(publications())
    assert seen_when_asked == {SCRIPT_BATCH: SCRIPT_BATCH}
    assert waiting_in_batch(r) == total
    assert len({job.id for job in jobs}) == total
    # In order: the queue's list holds them oldest at the right (kombu pops from the right).
    messages = r.lrange(keys.queue_list("batch", NORMAL_PRIORITY), 0, -1)
    tags = [json.loads(message)["properties"]["delivery_tag"] for message in reversed(messages)]
    assert tags == [job.refresh()["delivery_tag"] for job in jobs]


def test_an_empty_batch_writes_nothing(r):
    from frappe_celery.caller.publish import publish_batch

    before = redis_state(r)
    assert publish_batch(iter([])) == []
    assert frappe.enqueue_many([]) == []
    assert redis_state(r) == before


def waiting_in_batch(r) -> int:
    """Messages waiting in the batch queue (no worker consumes it in these tests)."""
    return sum(int(r.llen(name)) for name in keys.queue_lists("batch"))


@pytest.mark.filterwarnings("ignore:enqueue\\(job_name:DeprecationWarning")
def test_a_batch_job_s_record_and_message_are_those_a_single_enqueue_writes(r):
    """One script call carries each queue's keys and the record's field names once: every job
    still gets the record, list and message a single enqueue gives it, across queues,
    priorities and optional fields."""
    from frappe_celery.records import ENQUEUE_FIELDS

    calls = [
        {"method": "tests.jobs.add", "queue": queue, "a": 1, "b": 2, "at_front": at_front,
         **({"job_name": "named", "event": "daily"} if at_front else {})}
        for queue in ("batch", "reports") for at_front in (False, True)
    ]  # fmt: skip
    singles = [frappe.enqueue(**call) for call in calls]
    batch = frappe.enqueue_many(calls)
    own = {"token", "enqueued_at", "delivery_tag"}  # differ per enqueue
    for single, many in zip(singles, batch, strict=True):
        assert many is not None and single is not None
        records = [
            {k.decode(): v.decode() for k, v in r.hgetall(keys.job(job.id)).items()}
            for job in (single, many)
        ]
        assert {k: v for k, v in records[0].items() if k not in own} == {
            k: v for k, v in records[1].items() if k not in own
        }
        assert set(records[1]) - {"list"} <= set(ENQUEUE_FIELDS)
        assert own <= set(records[1])
        assert many.record == {k: v for k, v in records[1].items() if k != "list"}
        # The message waits on the list the record names, found by its delivery tag.
        tags = [
            json.loads(m)["properties"]["delivery_tag"] for m in r.lrange(records[1]["list"], 0, -1)
        ]
        assert records[1]["delivery_tag"] in tags
    assert {rec_list for rec_list in (r.hget(keys.job(j.id), "list") for j in batch)} == {
        keys.queue_list(q, p).encode() for q in ("batch", "reports") for p in (NORMAL_PRIORITY, 0)
    }


@pytest.mark.parametrize("deduplicate", [False, True], ids=["plain", "deduplicated"])
def test_an_enqueue_script_call_sent_twice_publishes_its_job_once(r, deduplicate):
    """redis-py re-sends a command whose reply a broken connection lost (the client's one
    retry), though Redis may have run it: the second run finds the job's own token in its
    record and writes nothing, and the caller still gets its job, not a dedup's None."""
    from frappe_celery.caller.enqueue import _prepare_call
    from frappe_celery.caller.publish import publish

    call = {"method": "tests.jobs.add", "queue": "batch", "a": 1, "b": 2}
    if deduplicate:
        call |= {"job_id": "sent-twice", "deduplicate": True}
    build, _ = _prepare_call(call)
    publication = build()
    first = publish(publication)
    doorbell = r.llen(keys.doorbell("batch"))
    record = r.hgetall(keys.job(publication.job_id))
    again = publish(publication)
    assert first is not None and again is not None and again.id == first.id
    assert waiting_in_batch(r) == 1
    assert r.hgetall(keys.job(publication.job_id)) == record
    assert r.llen(keys.doorbell("batch")) == doorbell
    # The same call enqueued again is a new job (its own id and token): published.
    if not deduplicate:
        frappe.enqueue_many([call])
        assert waiting_in_batch(r) == 2
