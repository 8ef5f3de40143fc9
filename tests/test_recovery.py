"""Dead-worker recovery (recovery.py), with real workers killed whole.

A worker killed with SIGKILL (main process and pool) leaves the messages it held in kombu's
unacked hash. Its liveness key expires, and a live worker returns them to their queues within a
minute, each once; a live worker busy with a long job keeps its message.
"""

from __future__ import annotations

import json
import os
import signal
import time

import frappe_celery as frappe
from frappe_celery.broker import keys, recovery

from .support.processes import wait_for

JOBS = 200


def runs(r, key: str) -> list[dict]:
    return [json.loads(item) for item in r.lrange(key, 0, -1)]


def held_by(r, pid: int) -> dict[str, str]:
    """Delivery tag -> holder, for the messages held by the worker whose main process is
    ``pid`` (a holder name is host:pid:nonce)."""
    return {
        tag.decode(): holder.decode()
        for tag, holder in r.hgetall(keys.HOLDERS).items()
        if holder.decode().split(":")[1] == str(pid)
    }


def test_a_killed_worker_s_jobs_run_again_within_60_s_and_a_busy_live_worker_keeps_its_job(
    r, start_worker
):
    # A live worker busy for 30 s with one job, on its own queue: it must never run twice,
    # while the recovery below runs every heartbeat in every live worker (with the suite's 2-s
    # heartbeat the victim's jobs come back about 14 s after the kill, inside those 30 s; with
    # the default 5 s, about 31 s).
    busy = start_worker("reports", concurrency=1)
    long_job = frappe.enqueue(
        "tests.jobs.tx.run_once", queue="reports", timeout=120, key="test:recover:long", seconds=30
    )
    wait_for(lambda: r.llen("test:recover:long") >= 1, 20)

    # 200 jobs in flight on a -c 2 worker, killed whole while it runs them.
    victim = start_worker("batch", concurrency=2)
    jobs = [
        frappe.enqueue(
            "tests.jobs.tx.run_once", queue="batch", key=f"test:recover:{i}", seconds=0.05
        )
        for i in range(JOBS)
    ]
    wait_for(lambda: sum(r.llen(f"test:recover:{i}") for i in range(JOBS)) >= 20, 30)
    os.killpg(victim.process.pid, signal.SIGKILL)
    killed_at = time.time()
    victim.process.wait(10)
    held = held_by(r, victim.process.pid)
    assert held, "the killed worker held no message: nothing to recover"
    (victim_holder,) = set(held.values())
    held_ids = [
        job.id for job in jobs if job.refresh().get("delivery_tag") in held
    ]  # the jobs it held, running or reserved

    # A fresh worker takes the queue at once; the held jobs come back when the victim's
    # liveness key has expired and its absence is confirmed.
    start_worker("batch", concurrency=2)
    wait_for(lambda: all(job.get_status() == "finished" for job in jobs), 90, interval=0.5)

    returned_at = []
    for job_id in held_ids:
        job = next(j for j in jobs if j.id == job_id)
        starts = [e for e in runs(r, job.kwargs["key"]) if e["event"] == "start"]
        after_kill = [e["at"] for e in starts if e["at"] > killed_at]
        assert after_kill, f"held job {job_id} did not run again after the kill"
        returned_at.append(min(after_kill) - killed_at)
    print(f"held jobs: {len(held_ids)}; kill to running again: {max(returned_at):.1f} s")
    assert max(returned_at) < 60

    for i in range(JOBS):
        events = runs(r, f"test:recover:{i}")
        starts = [e for e in events if e["event"] == "start"]
        ends = [e for e in events if e["event"] == "end"]
        assert len(ends) == 1, f"job {i} finished {len(ends)} times"
        # Never twice at the same time: a second run starts only after the first one's worker
        # died (it never recorded its end) or ended.
        assert len(starts) <= 2
        if len(starts) == 2:
            assert starts[0]["at"] < killed_at <= starts[1]["at"]

    # Held by the victim, returned, taken again: nothing of it is left, and it is forgotten.
    assert not held_by(r, victim.process.pid)
    wait_for(lambda: not r.hexists(keys.HOLDERS_MISSING_SINCE, victim_holder), 15)

    wait_for(lambda: long_job.get_status() == "finished", 60, interval=0.5)
    long_runs = runs(r, "test:recover:long")
    assert [e["event"] for e in long_runs] == ["start", "end"]
    # It was busy all through the recovery above, which is what it shows.
    assert long_runs[1]["at"] > killed_at + max(returned_at)
    assert busy.process.poll() is None


def test_holder_names_are_per_channel_and_the_process_liveness_key_expires(r):
    name = recovery.process_name()
    assert name == recovery.process_name()
    _host, pid, _nonce = name.split(":")
    assert pid == str(os.getpid())
    first, second = recovery.channel_holder(1), recovery.channel_holder(2)
    assert first != second
    assert recovery.process_of(first) == recovery.process_of(second) == name
    recovery.mark_alive()
    ttl = r.ttl(keys.alive(name))
    assert 0 < ttl <= recovery.alive_ttl()


def test_a_message_held_by_a_dead_holder_goes_back_once_and_only_after_confirmation(r):
    """recover_dead_holders on a message held by a holder that never had a liveness key."""
    job = frappe.enqueue("tests.jobs.add", queue="batch", a=1, b=2)
    lists = keys.queue_lists("batch")
    (source, message) = next((name, r.rpop(name)) for name in lists if r.llen(name))
    tag = job.refresh()["delivery_tag"]
    held = json.dumps([json.loads(message), "", "batch"])
    r.hset(keys.KOMBU_UNACKED, tag, held)
    r.zadd(keys.KOMBU_UNACKED_INDEX, {tag: time.time()})
    r.hset(keys.HOLDERS, tag, "gone-host:1:dead/1")
    r.delete(keys.doorbell("batch"))  # rung by the enqueue
    now = time.time()

    # First seen missing: noted, nothing moved.
    assert recovery.recover_dead_holders(now) == 0
    assert r.hexists(keys.KOMBU_UNACKED, tag)
    # Still within the confirmation wait.
    assert recovery.recover_dead_holders(now + recovery.missing_confirmation() - 1) == 0
    # Confirmed: back at the front of its list, marked redelivered, and no longer held.
    assert recovery.recover_dead_holders(now + recovery.missing_confirmation()) == 1
    assert not r.hexists(keys.KOMBU_UNACKED, tag)
    assert not r.zscore(keys.KOMBU_UNACKED_INDEX, tag)
    assert not r.hexists(keys.HOLDERS, tag)
    restored = json.loads(r.lindex(source, -1))
    assert restored["properties"]["delivery_tag"] == tag
    # ... and an idle worker of its queue is woken for it.
    assert r.llen(keys.doorbell("batch")) == 1
    assert restored["properties"]["delivery_info"]["redelivered"] is True
    assert sum(r.llen(name) for name in lists) == 1
    # Exactly once: another pass finds nothing to return, and forgets the holder.
    assert recovery.recover_dead_holders(now + 60) == 0
    assert sum(r.llen(name) for name in lists) == 1
    assert not r.hexists(keys.HOLDERS_MISSING_SINCE, "gone-host:1:dead/1")


def test_a_live_holder_s_message_is_never_taken(r):
    job = frappe.enqueue("tests.jobs.add", queue="batch", a=1, b=2)
    lists = keys.queue_lists("batch")
    message = next(r.rpop(name) for name in lists if r.llen(name))
    tag = job.refresh()["delivery_tag"]
    r.hset(keys.KOMBU_UNACKED, tag, json.dumps([json.loads(message), "", "batch"]))
    # A channel of a live process: the process's liveness key covers every channel of it.
    r.hset(keys.HOLDERS, tag, "live-host:1:alive/3")
    r.set(keys.alive("live-host:1:alive"), 1, ex=60)
    now = time.time()
    try:
        for later in (0, 30, 600):
            assert recovery.recover_dead_holders(now + later) == 0
        assert r.hexists(keys.KOMBU_UNACKED, tag)
        assert sum(r.llen(name) for name in lists) == 0
    finally:  # kombu's hash is not ours: the r fixture leaves it to the tests that write it
        r.hdel(keys.KOMBU_UNACKED, tag)


def test_the_late_end_of_a_run_given_up_for_dead_leaves_the_re_run_s_record_and_message(r):
    """A worker cut off from Redis was given up for dead and its job runs again elsewhere; its
    own end arrives late (finish.lua): the re-run keeps the record and its hold on the message."""
    from frappe_celery import records

    def enqueue_deduplicated() -> frappe.Job | None:
        return frappe.enqueue(
            "tests.jobs.add", queue="batch", job_id="stale-end", deduplicate=True, a=1, b=2
        )

    job = enqueue_deduplicated()
    assert job is not None
    token, tag = job.refresh()["token"], job.refresh()["delivery_tag"]
    assert records.start(job.id, job.job_kwargs, 60, "cut-off@host") == records.StartDecision.RUN
    # Recovery returned the message; the other worker took it and started the same enqueue.
    assert records.start(job.id, job.job_kwargs, 60, "peer@host") == records.StartDecision.RUN
    r.hset(keys.KOMBU_UNACKED, tag, "held by the peer")
    r.hset(keys.HOLDERS, tag, "peer-holder")
    try:
        assert not records.finish(job.id, token, "batch", "stale", tag, run_by="cut-off@host")
        assert not records.fail(job.id, token, "batch", "X", "stale", run_by="cut-off@host")
        assert job.get_status() == "started" and job.refresh()["worker"] == "peer@host"
        # The id stays taken while the re-run goes on: a deduplicated enqueue is refused.
        assert enqueue_deduplicated() is None
        assert r.hget(keys.KOMBU_UNACKED, tag) == b"held by the peer"
        assert r.hget(keys.HOLDERS, tag) == b"peer-holder"
        # The re-run's own end is recorded, and settles the message.
        assert records.finish(job.id, token, "batch", 3, tag, run_by="peer@host")
        assert job.get_status() == "finished" and job.return_value() == 3
        assert not r.hexists(keys.KOMBU_UNACKED, tag) and not r.hexists(keys.HOLDERS, tag)
    finally:
        r.hdel(keys.KOMBU_UNACKED, tag)
