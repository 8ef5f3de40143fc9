"""Exactly one job at a time per job_id: the atomic dedup gate, its release, and crashes."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import threading
import time

import pytest

import frappe_celery as frappe
from frappe_celery import records
from frappe_celery.broker import keys

from .jobs.tx import enqueue_same_id_many_times
from .support.processes import wait_for


def events(r, key: str) -> list[dict]:
    return [json.loads(item) for item in r.lrange(key, 0, -1)]


def test_concurrent_enqueues_of_one_job_id_run_exactly_once(r, start_worker):
    key = "test:dedup:runs"
    go_at = time.time() + 2.0
    # 4 processes x 10 threads, plus 50 threads here, all at the same moment.
    context = multiprocessing.get_context("spawn")
    with context.Pool(4) as pool:
        remote = pool.starmap_async(enqueue_same_id_many_times, [("nightly", key, 10, go_at)] * 4)
        local: list[bool] = []
        lock = threading.Lock()

        def attempt() -> None:
            job = frappe.enqueue(
                "tests.jobs.record", queue="reports", job_id="nightly", deduplicate=True, key=key
            )
            with lock:
                local.append(job is not None)

        threads = [threading.Thread(target=attempt) for _ in range(50)]
        time.sleep(max(0.0, go_at - time.time()))
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        outcomes = local + [ok for chunk in remote.get(60) for ok in chunk]

    assert len(outcomes) == 90
    assert outcomes.count(True) == 1
    assert sum(r.llen(k) for k in keys.queue_lists("reports")) == 1

    start_worker("reports")
    wait_for(lambda: frappe.get_job_status("nightly") == "finished", 30)
    time.sleep(1)  # a second copy, had there been one, would have run by now
    assert r.llen(key) == 1


@pytest.mark.parametrize(
    ("method", "kwargs", "final"),
    [
        # Each takes a moment, so the second enqueue surely finds it queued or running.
        ("tests.jobs.sleep_then_record", {"key": "test:dedup:ok", "seconds": 0.5}, "finished"),
        ("tests.jobs.fail_after", {"message": "nope", "seconds": 0.5}, "failed"),
        # Ignores its soft limit: killed at the hard limit (timeout 1 + grace 2).
        ("tests.jobs.ignore_soft_timeout", {"key": "test:dedup:kill", "seconds": 30}, "failed"),
    ],
)
def test_id_is_free_again_once_the_job_ends(r, shared_worker, method, kwargs, final):
    first = frappe.enqueue(
        method, queue="short", timeout=1, job_id="again", deduplicate=True, **kwargs
    )
    assert first is not None
    # While it is queued or running, the id is taken.
    assert frappe.enqueue(method, queue="short", job_id="again", deduplicate=True, **kwargs) is None
    wait_for(lambda: first.get_status() == final, 30)
    assert not frappe.is_job_enqueued("again")

    second = frappe.enqueue(
        "tests.jobs.add", queue="short", job_id="again", deduplicate=True, a=1, b=2
    )
    assert second is not None and second.id == first.id
    wait_for(lambda: second.get_status() == "finished", 30)
    assert second.return_value() == 3


def test_canceled_job_frees_its_id(r):
    job = frappe.enqueue("tests.jobs.add", queue="reports", job_id="c1", deduplicate=True, a=1, b=1)
    job.cancel()
    assert frappe.enqueue(
        "tests.jobs.add", queue="reports", job_id="c1", deduplicate=True, a=1, b=1
    )


def test_without_deduplicate_a_reused_id_replaces_the_record_and_both_run(r, start_worker):
    key = "test:dedup:both"
    first = frappe.enqueue("tests.jobs.record", queue="reports", job_id="twice", key=key, value=1)
    second = frappe.enqueue("tests.jobs.record", queue="reports", job_id="twice", key=key, value=2)
    assert first.id == second.id
    # One record, the second enqueue's.
    assert second.kwargs == {"key": key, "value": 2}
    assert frappe.get_job("twice").kwargs == {"key": key, "value": 2}

    start_worker("reports")
    wait_for(lambda: r.llen(key) == 2, 30)
    assert sorted(json.loads(v) for v in r.lrange(key, 0, -1)) == [1, 2]
    wait_for(lambda: frappe.get_job_status("twice") == "finished", 30)


def test_a_stale_run_never_changes_a_newer_enqueues_record(r):
    old = frappe.enqueue("tests.jobs.add", queue="reports", job_id="stale", a=1, b=1)
    old_token = old.record["token"]
    frappe.enqueue("tests.jobs.add", queue="reports", job_id="stale", a=2, b=2)
    # The old enqueue's worker finishing (or failing) must not touch the new record.
    assert records.finish(old.id, old_token, "reports", 2) is False
    assert records.fail(old.id, old_token, "reports", "ValueError", "x") is False
    assert frappe.get_job_status("stale") == "queued"


def reserve_as_kombu_does(r, queue: str) -> str:
    """What a worker's main process does with a message: pop it, keep it in kombu's unacked
    hash and its index until the ack. Returns its delivery tag."""
    raw = next(r.rpop(name) for name in keys.queue_lists(queue) if r.llen(name))
    tag = json.loads(raw)["properties"]["delivery_tag"]
    r.hset("unacked", tag, json.dumps([json.loads(raw), queue, queue]))
    r.zadd("unacked_index", {tag: time.time()})
    return tag


@pytest.mark.parametrize("stale", [False, True], ids=["current", "stale"])
def test_finishing_settles_the_message_in_the_same_script(r, stale):
    job = frappe.enqueue("tests.jobs.add", queue="reports", job_id="settle", a=1, b=1)
    token = job.record["token"]
    tag = reserve_as_kombu_does(r, "reports")
    assert records.start(job.id, job.job_kwargs, 60, "w@h") == records.StartDecision.RUN
    if stale:
        frappe.enqueue("tests.jobs.add", queue="reports", job_id="settle", a=2, b=2)
    assert records.finish(job.id, token, "reports", 2, tag) is (not stale)
    # The job ran either way: its message is settled, so no worker would run it again.
    assert not r.hexists("unacked", tag)
    assert r.zscore("unacked_index", tag) is None
    assert frappe.get_job_status("settle") == ("queued" if stale else "finished")


def test_a_lost_worker_never_reopens_a_job_already_recorded_final(r):
    """A worker that dies between its job's FINISH and the ack gets the job requeued by
    Celery's lost-worker path; the record must stay finished (nothing is running it)."""
    job = frappe.enqueue("tests.jobs.add", queue="reports", job_id="done-then-lost", a=1, b=1)
    token = job.record["token"]
    records.start(job.id, job.job_kwargs, 60, "w@h")
    assert records.finish(job.id, token, "reports", 2)
    assert records.requeue(job.id, token, "reports", worker="") is False
    assert frappe.get_job_status("done-then-lost") == "finished"
    assert frappe.get_job("done-then-lost").result == 2


def test_is_job_enqueued_exactly_while_queued_or_started(r, shared_worker):
    assert not frappe.is_job_enqueued("watch")
    job = frappe.enqueue(
        "tests.jobs.sleep_then_record", queue="default", job_id="watch", key="test:w", seconds=2
    )
    assert frappe.is_job_enqueued("watch")
    wait_for(lambda: job.get_status() == "started", 20)
    assert frappe.is_job_enqueued("watch")
    wait_for(lambda: job.get_status() == "finished", 20)
    assert not frappe.is_job_enqueued("watch")


def test_a_lost_message_frees_the_id_after_the_grace_period(r):
    # The test config sets lost_message_grace to 1 s.
    job = frappe.enqueue(
        "tests.jobs.add", queue="reports", job_id="lost", deduplicate=True, a=1, b=1
    )
    assert job is not None
    r.delete(*keys.queue_lists("reports"))  # `celery purge`, or Redis lost the list

    # First look: the message is missing, but a worker may just have popped it.
    assert (
        frappe.enqueue("tests.jobs.add", queue="reports", job_id="lost", deduplicate=True, a=1, b=1)
        is None
    )
    time.sleep(1.2)
    again = frappe.enqueue(
        "tests.jobs.add", queue="reports", job_id="lost", deduplicate=True, a=1, b=1
    )
    assert again is not None
    assert sum(r.llen(k) for k in keys.queue_lists("reports")) == 1


def test_a_deduplicated_enqueue_taken_over_never_runs_beside_the_one_that_took_its_id(
    r, start_worker
):
    """The id of a deduplicated job whose message was out of sight for the grace is taken over
    by a newer enqueue. If the old message shows up again, it is superseded: skipped, never run
    beside (or after) the newer job. (A 1-hour soak saw the old one run beside the new one.)"""
    key = "test:dedup:superseded"
    old = frappe.enqueue("tests.jobs.record", queue="reports", job_id="taken", deduplicate=True,
                         key=key, value="old")  # fmt: skip
    assert old is not None
    (lst,) = [k for k in keys.queue_lists("reports") if r.llen(k)]
    message = r.rpop(lst)  # out of sight: in no list and held by no worker
    assert frappe.enqueue("tests.jobs.record", queue="reports", job_id="taken",
                          deduplicate=True, key=key, value="new") is None  # fmt: skip
    time.sleep(1.2)  # the test config's lost_message_grace is 1 s
    new = frappe.enqueue("tests.jobs.record", queue="reports", job_id="taken", deduplicate=True,
                         key=key, value="new")  # fmt: skip
    assert new is not None
    r.rpush(lst, message)  # back at the head of the queue: the worker takes it first

    start_worker("reports", concurrency=1)
    wait_for(lambda: new.get_status() == "finished", 30)
    wait_for(lambda: not any(r.llen(k) for k in keys.queue_lists("reports"))
             and not r.hlen(keys.KOMBU_UNACKED), 30)  # fmt: skip
    assert [json.loads(v) for v in r.lrange(key, 0, -1)] == ["new"]


def test_a_redelivered_message_keeps_its_id_taken_from_an_enqueue_to_another_queue(r):
    """A deduplicated job's message put back on its queue by a redelivery (kombu's restore after
    a lost pool child, or recovery) is rewritten (``redelivered``), so the gate finds it by its
    delivery tag. It must look in the job's own queue, whichever queue the new enqueue names: a
    1-hour soak enqueued the same id to another queue, the gate searched that one, took the id
    over after the grace, and both ran at once."""
    old = frappe.enqueue("tests.jobs.add", queue="reports", job_id="requeued", deduplicate=True,
                         a=1, b=1)  # fmt: skip
    assert old is not None
    (lst,) = [k for k in keys.queue_lists("reports") if r.llen(k)]
    message = json.loads(r.lindex(lst, 0))
    # What kombu's _do_restore_message (and recover.lua's caller) does to a message it restores.
    message["headers"]["redelivered"] = True
    message["properties"]["delivery_info"]["redelivered"] = True
    r.lset(lst, 0, json.dumps(message))

    for _ in range(2):  # the second after the grace (1 s in the test config)
        again = frappe.enqueue("tests.jobs.add", queue="batch", job_id="requeued",
                               deduplicate=True, a=1, b=1)  # fmt: skip
        assert again is None
        time.sleep(1.2)
    assert frappe.get_job(old.id).record["token"] == old.record["token"]


def test_killing_the_pool_child_runs_the_job_again_at_once(r, start_worker):
    key = "test:dedup:child"
    worker = start_worker("reports", concurrency=1)
    job = frappe.enqueue(
        "tests.jobs.tx.run_once",
        queue="reports",
        job_id="crashy",
        deduplicate=True,
        key=key,
        seconds=4,
    )
    wait_for(lambda: r.llen(key) >= 1, 20)
    victim = events(r, key)[0]["pid"]
    os.kill(victim, signal.SIGKILL)

    # reject_on_worker_lost: the message goes back to the queue and a new child runs it.
    wait_for(lambda: job.get_status() == "finished", 30)
    runs = events(r, key)
    starts = [e for e in runs if e["event"] == "start"]
    ends = [e for e in runs if e["event"] == "end"]
    assert len(starts) == 2 and len(ends) == 1
    assert starts[0]["pid"] == victim and starts[1]["pid"] != victim
    # While it was coming back, the id stayed taken.
    assert worker.process.poll() is None


def short_visibility_timeout(tmp_path) -> dict[str, str]:
    """Worker settings whose queues' timeouts are 5 s: the broker's visibility timeout, derived
    from them, is 5 + grace 2 + margin 3 = 10 s."""
    config = tmp_path / "short_timeouts.json"
    config.write_text(
        json.dumps(
            {
                "workers": {
                    name: {"timeout": 5}
                    for name in ("short", "default", "long", "reports", "batch")
                },
                "frappe_celery": {"time_limit_grace": 2, "visibility_margin": 3},
            }
        )
    )
    return {"FRAPPE_CELERY_CONFIG": str(config)}


def test_a_job_running_past_the_visibility_timeout_is_not_delivered_again(
    r, start_worker, tmp_path
):
    # Frappe's Data Import passes timeout=10000, rename_doc 36000: a job's own timeout may far
    # outlast the broker's visibility timeout (10 s here). kombu's restore of visible messages,
    # which a worker runs as it starts and every 100 s after, put the running job's message back
    # on its queue, and the other worker started it while the first still ran it.
    env = short_visibility_timeout(tmp_path)
    key = "test:dedup:long"
    first = start_worker("reports", concurrency=1, **env)
    job = frappe.enqueue(
        "tests.jobs.tx.run_once",
        queue="reports",
        timeout=300,
        job_id="long-import",
        deduplicate=True,
        key=key,
        seconds=30,
    )
    wait_for(lambda: r.llen(key) >= 1, 20)
    started_at = events(r, key)[0]["at"]
    (tag,) = r.hkeys(keys.KOMBU_UNACKED)
    time.sleep(max(0.0, started_at + 11 - time.time()))
    # Held past the visibility timeout: a worker starting now restores it, unless it is renewed.
    second = start_worker("reports", concurrency=1, **env)
    # The second worker's restore pass runs as it starts (and every 100 s after).
    time.sleep(5)
    assert [e["event"] for e in events(r, key)] == ["start"]
    # It renewed the running job's hold instead of restoring it.
    assert (r.zscore(keys.KOMBU_UNACKED_INDEX, tag) or 0) > started_at + 10
    assert frappe.is_job_enqueued("long-import")
    assert job.get_status() == "started"
    assert (
        frappe.enqueue(
            "tests.jobs.add", queue="reports", job_id="long-import", deduplicate=True, a=1, b=1
        )
        is None
    )
    wait_for(lambda: job.get_status() == "finished", 40)
    time.sleep(2)  # a second delivery, had there been one, would have started by now
    runs = events(r, key)
    assert [e["event"] for e in runs] == ["start", "end"]
    assert not r.hlen(keys.KOMBU_UNACKED)
    assert first.process.poll() is None and second.process.poll() is None


def test_killing_the_whole_worker_brings_the_job_back_after_the_visibility_timeout(
    r, start_worker, tmp_path
):
    # Short queue timeouts make the visibility timeout short: 5 + grace 2 + margin 3 = 10 s.
    env = short_visibility_timeout(tmp_path)
    key = "test:dedup:worker"
    first = start_worker("reports", concurrency=1, **env)
    job = frappe.enqueue(
        "tests.jobs.tx.run_once",
        queue="reports",
        job_id="orphan",
        deduplicate=True,
        key=key,
        seconds=3,
    )
    wait_for(lambda: r.llen(key) >= 1, 20)
    killed_at = time.time()
    os.killpg(first.process.pid, signal.SIGKILL)
    first.process.wait(10)

    # The job's message is held as unacked: the id stays taken, nothing runs it meanwhile.
    assert (
        frappe.enqueue(
            "tests.jobs.add", queue="reports", job_id="orphan", deduplicate=True, a=1, b=1
        )
        is None
    )
    assert r.hlen(keys.KOMBU_UNACKED) >= 1
    time.sleep(max(0.0, killed_at + 11 - time.time()))
    assert len(events(r, key)) == 1

    # A worker starting after the visibility timeout restores it, and it runs again.
    start_worker("reports", concurrency=1, **env)
    wait_for(lambda: job.get_status() == "finished", 40)
    starts = [e for e in events(r, key) if e["event"] == "start"]
    assert len(starts) == 2
    assert starts[1]["at"] >= killed_at + 10


def test_a_job_stuck_in_started_after_its_worker_vanished_is_failed_and_its_id_freed(
    r, start_worker
):
    key = "test:dedup:stuck"
    worker = start_worker("reports", concurrency=1)
    job = frappe.enqueue(
        "tests.jobs.tx.run_once",
        queue="reports",
        timeout=1,
        job_id="stuck",
        deduplicate=True,
        key=key,
        seconds=30,
    )
    wait_for(lambda: job.get_status() == "started", 20)
    os.killpg(worker.process.pid, signal.SIGKILL)
    worker.process.wait(10)
    # The broker lost the message too (flushed, failed over): nothing will ever run it again.
    r.delete(keys.KOMBU_UNACKED)
    # Its hard deadline (timeout 1 + grace 2) passes; the first look notes the message missing,
    # one after the grace period (1 s here) fails the job.
    time.sleep(3.5)
    assert records.reap_abandoned() == []
    time.sleep(1.2)
    # Every live worker reaps too (every 30 s): one may have done it in the last 1.2 s.
    assert records.reap_abandoned() in ([job.id], [])

    assert job.get_status() == "failed"
    assert job.refresh()["exc_type"] == "AbandonedJobError"
    assert "abandoned" in job.exc_info
    assert not frappe.is_job_enqueued("stuck")
    assert frappe.enqueue(
        "tests.jobs.add", queue="reports", job_id="stuck", deduplicate=True, a=1, b=1
    )
