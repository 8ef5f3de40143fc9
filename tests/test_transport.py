"""frappe-celery's kombu Redis channel (transport.py) on the test Redis, at any kombu version."""

from __future__ import annotations

import base64
import json
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
import redis
from kombu import Connection, Exchange, Queue

import frappe_celery as frappe
from frappe_celery.broker import keys, recovery, scripts
from frappe_celery.broker.transport import Channel
from frappe_celery.broker.wire import START_CHECKED

from .support.processes import wait_for

# More than a few names: a set of them coming out in this order by chance is unlikely.
QUEUES = ["long", "reports", "short", "batch", "q5", "default", "a", "zz"]


def test_channel_keeps_the_order_queues_were_added_in(redis_server):
    """The worker's -Q order reaches the BRPOP; kombu before 5.7 kept it in a set (hash order)."""
    with Connection(redis_server.url, transport="frappe_celery.broker.transport:Transport") as conn:
        channel = conn.channel()
        try:
            assert isinstance(channel, Channel)
            for queue in QUEUES:
                channel.basic_consume(queue, True, lambda message: None, f"tag-{queue}")
            assert channel.active_queues == QUEUES
            # What _brpop_start takes the queues from.
            assert channel._queue_cycle.consume(len(channel.active_queues)) == QUEUES
        finally:
            channel.close()


def test_an_ack_for_a_message_its_job_settled_leaves_redis_alone(redis_server, r):
    """The job's FINISH script removed the message from kombu's unacked hash already
    (lua/finish.lua); the main process's ack then only updates the channel's bookkeeping."""
    queue = "test-settled"
    with Connection(redis_server.url, transport="frappe_celery.broker.transport:Transport") as conn:
        channel = conn.channel()
        try:
            producer = conn.Producer(channel)
            declare = [Queue(queue, Exchange(queue), routing_key=queue)]
            for n in (1, 2):
                producer.publish({"n": n}, exchange=queue, routing_key=queue, declare=declare)
            settled = channel.basic_get(queue, no_ack=False)
            plain = channel.basic_get(queue, no_ack=False)
            tags = [settled.delivery_tag, plain.delivery_tag]
            assert all(r.hexists("unacked", tag) for tag in tags)

            channel.qos.mark_settled(settled.delivery_tag)
            settled.ack()
            plain.ack()
            # Had the settled ack called Redis, its entry (left here on purpose) would be gone.
            assert r.hexists("unacked", settled.delivery_tag)
            assert not r.hexists("unacked", plain.delivery_tag)
            assert r.zscore("unacked_index", plain.delivery_tag) is None
            channel.qos._flush()
            assert not channel.qos._delivered  # both acked as far as the channel knows
        finally:
            r.hdel("unacked", *tags)
            r.zrem("unacked_index", *tags)
            r.delete(queue)
            channel.close()


def test_an_ack_leaves_a_message_another_worker_holds_now(redis_server, r):
    """A worker given up for dead (cut off) acks late: the message went back to its queue and
    another worker holds it now (frappe_celery:holders), so the late ack must not drop it."""
    from frappe_celery.broker import keys

    queue = "test-settle"
    with Connection(redis_server.url, transport="frappe_celery.broker.transport:Transport") as conn:
        channel = conn.channel()
        try:
            producer = conn.Producer(channel)
            declare = [Queue(queue, Exchange(queue), routing_key=queue)]
            for n in (1, 2, 3):
                producer.publish({"n": n}, exchange=queue, routing_key=queue, declare=declare)
            taken_over, own, rejected = (channel.basic_get(queue, no_ack=False) for _ in range(3))
            tags = [m.delivery_tag for m in (taken_over, own, rejected)]
            # Held by this process, as the transport wrote it.
            assert all(r.hget(keys.HOLDERS, tag) for tag in tags)
            r.hset(keys.HOLDERS, taken_over.delivery_tag, "peer-host:1:abc")

            for message in (taken_over, own):
                message.ack()
            rejected.reject(requeue=False)
            assert r.hexists("unacked", taken_over.delivery_tag)
            assert r.hget(keys.HOLDERS, taken_over.delivery_tag) == b"peer-host:1:abc"
            for tag in tags[1:]:
                assert not r.hexists("unacked", tag) and not r.hexists(keys.HOLDERS, tag)
                assert r.zscore("unacked_index", tag) is None
        finally:
            r.hdel("unacked", *tags)
            r.zrem("unacked_index", *tags)
            r.delete(queue)
            channel.close()


def monitored(r: redis.Redis) -> tuple[list[dict[str, Any]], Callable[[], None]]:
    """Every command the test Redis runs from now on, until the returned stop() is called."""
    seen: list[dict[str, Any]] = []
    monitor = r.monitor()
    monitor.connection.send_command("MONITOR")
    assert monitor.connection.read_response() in (b"OK", "OK")

    def listen() -> None:
        while True:
            try:
                seen.append(monitor.next_command())
            except Exception:  # stop() closed the connection
                return

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()

    def stop() -> None:
        time.sleep(0.2)  # the last commands reach the monitor
        monitor.connection.disconnect()
        listener.join(5)

    return seen, stop


def test_every_message_is_popped_and_held_unacked_in_one_script_idle_or_not(redis_server, r):
    """reserve.lua pops a message and writes it into kombu's unacked hash in the same step, for
    messages waiting and for one published while the consumer is idle: the idle consumer's
    BRPOP waits on the queue's doorbell only, never pops a message (one popped that way in the
    instant Redis died was lost)."""
    queue = "test-reserve"
    declare = [Queue(queue, Exchange(queue), routing_key=queue)]
    held_at_delivery: dict[str, bool] = {}
    with Connection(redis_server.url, transport="frappe_celery.broker.transport:Transport") as conn:
        channel = conn.channel()

        def on_message(body: Any, message: Any) -> None:
            held_at_delivery[body["n"]] = bool(r.hexists("unacked", message.delivery_tag))
            message.ack()

        try:
            producer = conn.Producer(channel)
            r.script_load(scripts.RESERVE.source)
            for n in ("waiting-1", "waiting-2"):
                producer.publish({"n": n}, exchange=queue, routing_key=queue, declare=declare)
            seen, stop = monitored(r)
            with conn.Consumer(declare, channel=channel, callbacks=[on_message]):
                conn.drain_events(timeout=5)
                conn.drain_events(timeout=5)
                # Nothing waits now: the worker blocks in BRPOP on the doorbell; a message
                # published then rings it.
                later = threading.Timer(
                    0.5,
                    lambda: (
                        conn.clone()
                        .Producer()
                        .publish({"n": "later"}, exchange=queue, routing_key=queue, declare=declare)
                    ),
                )
                later.start()
                conn.drain_events(timeout=5)
                later.join()
            stop()
        finally:
            r.delete(queue)
            channel.close()
    assert held_at_delivery == {"waiting-1": True, "waiting-2": True, "later": True}
    writes = [e for e in seen if e["command"].startswith("HSET unacked ")]
    assert [e["client_type"] for e in writes] == ["lua", "lua", "lua"], writes
    # Every BRPOP (this consumer's, and the session's workers' on the same Redis) names
    # doorbells only.
    waits = [e["command"].split()[1:-1] for e in seen if e["command"].startswith("BRPOP ")]
    assert [keys.doorbell(queue)] in waits, "the idle consumer never waited"
    assert all(name.startswith(keys.doorbell("")) for names in waits for name in names), waits
    assert not r.hlen("unacked")  # all three acked


def test_after_redis_lost_its_scripts_the_worker_waits_with_brpop_and_reloads(redis_server, r):
    """A restarted Redis answers NOSCRIPT: the consumer loads the script again, waiting on the
    doorbell meanwhile, and every message is still taken by the script: none lost or delivered
    twice."""
    queue = "test-reserve-noscript"
    declare = [Queue(queue, Exchange(queue), routing_key=queue)]
    got: list[str] = []
    with Connection(redis_server.url, transport="frappe_celery.broker.transport:Transport") as conn:
        channel = conn.channel()

        def on_message(body: Any, message: Any) -> None:
            got.append(body["n"])
            message.ack()

        try:
            producer = conn.Producer(channel)
            for n in ("a", "b", "c"):
                producer.publish({"n": n}, exchange=queue, routing_key=queue, declare=declare)
            r.script_flush()
            seen, stop = monitored(r)
            with conn.Consumer(declare, channel=channel, callbacks=[on_message]):
                for _ in range(3):
                    conn.drain_events(timeout=5)
            stop()
            reloaded = r.script_exists(scripts.RESERVE.sha) == [True]
        finally:
            # Every script this test process uses, back in Redis (pipelines expect them).
            for script in vars(scripts).values():
                if isinstance(script, scripts.LuaScript):
                    r.script_load(script.source)
            r.delete(queue)
            channel.close()
    assert got == ["a", "b", "c"]
    writes = [e for e in seen if e["command"].startswith("HSET unacked ")]
    assert [e["client_type"] for e in writes] == ["lua", "lua", "lua"], writes
    assert reloaded
    assert not r.hlen("unacked")


def test_a_delivery_says_the_start_was_checked_only_when_its_own_record_lets_it_start(
    redis_server, r
):
    """reserve.lua vouches (wire.START_CHECKED) for a message whose job record names its
    delivery tag and lets it start; not for one whose record is canceled or names another
    message (a retry's, another enqueue's), nor for one with no record, whatever it says."""
    queue = "batch"  # a configured queue no session worker consumes
    for name in keys.queue_lists(queue):
        r.delete(name)
    fresh = frappe.enqueue("tests.jobs.add", queue=queue, a=1, b=1)
    canceled = frappe.enqueue("tests.jobs.add", queue=queue, a=1, b=2)
    r.hset(keys.job(canceled.id), "status", "canceled")
    superseded = frappe.enqueue("tests.jobs.add", queue=queue, a=1, b=3)
    r.hset(keys.job(superseded.id), "delivery_tag", "the-tag-of-a-later-message")
    declare = [Queue(queue, Exchange(queue), routing_key=queue)]
    checked: dict[str, Any] = {}
    with Connection(redis_server.url, transport="frappe_celery.broker.transport:Transport") as conn:
        channel = conn.channel()

        def on_message(body: Any, message: Any) -> None:
            name = message.headers.get("id") or body["n"]
            checked[name] = message.properties.get(START_CHECKED)
            message.ack()

        try:
            conn.Producer(channel).publish(
                {"n": "no-record"}, exchange=queue, routing_key=queue, declare=declare,
                **{START_CHECKED: True},
            )  # fmt: skip
            r.script_load(scripts.RESERVE.source)
            with conn.Consumer(declare, channel=channel, callbacks=[on_message]):
                for _ in range(4):
                    conn.drain_events(timeout=5)
        finally:
            for name in keys.queue_lists(queue):
                r.delete(name)
            channel.close()
    assert checked == {
        fresh.id: True, canceled.id: False, superseded.id: False, "no-record": False
    }  # fmt: skip


@pytest.mark.parametrize(
    "job_id",
    ["test.site||plain", 'quote"and\\backslash', "ünïcode-ïd ✓", "frappe-celery-template-body"],
)
def test_a_message_from_the_cached_template_is_the_one_celerys_builder_gives(job_id):
    """wire.build_message fills a cached template; it must equal a fresh build, byte for byte."""
    from frappe_celery.broker.wire import build_message, build_message_uncached

    body_json = json.dumps([[], {"kwargs": {"x": "é"}}, {}])
    common = {"queue": "short", "priority": 3, "soft_time_limit": 300.0, "time_limit": 330.0,
              "display": "tests.jobs.add", "delivery_tag": str(uuid.uuid4()),
              "signing_key": "k" * 32}  # fmt: skip
    for _ in range(2):  # the second call comes from the cache
        cached = build_message(frappe.app, job_id=job_id, body_json=body_json, **common)
        fresh = build_message_uncached(
            frappe.app, job_id=job_id, **common,
            body_b64=base64.b64encode(body_json.encode()).decode("ascii"),
        )  # fmt: skip
        assert cached == fresh


def test_a_message_held_by_a_reserve_whose_reply_the_lost_connection_swallowed_goes_back(
    redis_server, r
):
    """reserve.lua held a message, and the connection died before its reply was read: the
    channel never knew of the message. Once the channel reads the connection error, it holds
    under a new name, and the next recovery pass returns the message to its queue, not kombu's
    visibility timeout (half an hour with the long queue)."""
    queue = "batch"  # a configured queue no session worker consumes
    for name in keys.queue_lists(queue):
        r.delete(name)
    job = frappe.enqueue("tests.jobs.add", queue=queue, a=1, b=1)
    tag = job.refresh()["delivery_tag"]
    with Connection(redis_server.url, transport="frappe_celery.broker.transport:Transport") as conn:
        channel = conn.channel()
        try:
            r.script_load(scripts.RESERVE.source)
            channel.basic_consume(queue, False, lambda message: None, "lost-reply")
            # What the worker's event loop does: kombu's poller sends reserve.lua on the
            # channel's own connection, and the channel reads its reply once it is readable.
            lost = channel.holder
            conn.transport.cycle._register_BRPOP(channel)
            wait_for(lambda: r.hget(keys.HOLDERS, tag) == lost.encode(), 5)
            # The connection dies with the reply unread: Redis closes it, and the reply's bytes
            # never reach the reader (taken off the socket here).
            sock = channel.client.connection._sock
            r.client_kill(f"127.0.0.1:{sock.getsockname()[1]}")
            sock.settimeout(5)
            while sock.recv(65536):
                pass
            with pytest.raises(channel.connection_errors):
                channel._brpop_read()
            assert channel.holder != lost
            assert r.hexists(keys.KOMBU_UNACKED, tag)  # held, by a channel that is gone
            assert recovery.recover_dead_holders() == 1
        finally:
            channel.close()
    back = [json.loads(m) for name in keys.queue_lists(queue) for m in r.lrange(name, 0, -1)]
    try:
        assert [m["properties"]["delivery_tag"] for m in back] == [tag]
        assert not r.hexists(keys.KOMBU_UNACKED, tag)
        assert not r.hexists(keys.HOLDERS, tag)
        # Returned once: another pass finds nothing of that channel.
        assert recovery.recover_dead_holders() == 0
    finally:
        for name in keys.queue_lists(queue):
            r.delete(name)


def test_a_control_reply_is_not_left_held_for_the_visibility_timeout(
    redis_server, r, shared_worker
):
    """Celery consumes control replies (ping, the stop command's) without acks: kombu never acks
    them, so a reply reserve.lua held stayed in the unacked hash until the visibility timeout
    put it back on a reply queue nobody reads."""
    from frappe_celery.celery_app import app

    def held_replies() -> set[bytes]:
        return {tag for tag, held in r.hgetall("unacked").items() if b"reply.celery.pidbox" in held}

    before = held_replies()
    replies = app.control.ping(timeout=2.0)

    node = shared_worker.name.split("@")[0]
    assert any(name.startswith(node) for reply in replies for name in reply), replies
    assert held_replies() - before == set()
