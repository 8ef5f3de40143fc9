"""enqueue is called inside web requests: it must cost one Redis command and no new connection,
with or without the dedup gate."""

from __future__ import annotations

import threading

import pytest
import redis

import frappe_celery as frappe
from frappe_celery.broker import keys

STOP = "hot-path-monitor-stop"


def watch_commands(url: str, seen: list[dict], ready: threading.Event) -> None:
    """Collect every command the server executes (MONITOR) until the STOP echo."""
    client = redis.Redis.from_url(url, socket_timeout=10)
    with client.monitor() as monitor:
        ready.set()
        for command in monitor.listen():
            if STOP in command["command"]:
                return
            seen.append(command)


@pytest.mark.parametrize("deduplicate", [False, True])
def test_enqueue_is_one_redis_command_with_no_new_connection(r, redis_server, deduplicate):
    # A fresh client with one pooled connection (tests before this one may have left several
    # in the pool, from threads), warmed up: connection + script.
    frappe.connection.reset()
    frappe.enqueue("tests.jobs.add", queue="reports", a=0, b=0)
    connections_before = r.info("stats")["total_connections_received"]
    enqueuer_address = frappe.connection.get_redis().client_info()["addr"]
    seen: list[dict] = []
    ready = threading.Event()
    watcher = threading.Thread(target=watch_commands, args=(redis_server.url, seen, ready))
    watcher.start()
    assert ready.wait(10)

    enqueuer = frappe.connection.get_redis().connection_pool
    for i in range(20):
        frappe.enqueue(
            "tests.jobs.add", queue="reports", a=i, b=i, job_id=f"hot-{i}", deduplicate=deduplicate
        )
    r.echo(STOP)
    watcher.join(15)
    assert not watcher.is_alive()

    # What the enqueuing side's connection sent (workers of other tests may be talking too).
    sent = [
        c["command"].split()[0].lower()
        for c in seen
        if f"{c.get('client_address')}:{c.get('client_port')}" == enqueuer_address
    ]
    assert sent == ["evalsha"] * 20, sent
    # Nothing of Celery's publish path (binding lookup, result-channel subscription) ran at all.
    inner = {c["command"].split()[0].lower() for c in seen if c.get("client_type") == "lua"}
    assert "smembers" not in inner and "subscribe" not in inner
    # The pooled connection was reused: no connection set-up per call (the MONITOR one aside).
    assert r.info("stats")["total_connections_received"] - connections_before == 1
    assert len(enqueuer._available_connections) + len(enqueuer._in_use_connections) == 1
    assert sum(r.llen(key) for key in keys.queue_lists("reports")) == 21
