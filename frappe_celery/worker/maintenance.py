"""What each worker's main process does besides running jobs: a heartbeat, dead-worker recovery
and the reaper; and the CPU priority of workers and beat.

The heartbeat (every HEARTBEAT_INTERVAL seconds, in ``keys.WORKERS``) is how `frappe-celery
status` and `doctor` see workers without a broadcast: a worker is online while its heartbeat is
younger than WORKER_TIMEOUT. With it goes the liveness key, and every heartbeat returns the
messages of workers that died to their queues (recovery.py). The reaper fails started jobs that
can never finish (records.reap_abandoned), and the heartbeats of workers long gone are pruned.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from typing import Any

from celery import signals

from frappe_celery import records
from frappe_celery.broker import keys, recovery
from frappe_celery.config import get_settings
from frappe_celery.connection import as_text, broker_errors, get_redis
from frappe_celery.version import installed_version

logger = logging.getLogger(__name__)

HEARTBEAT_INTERVAL = 5.0
# A worker whose heartbeat is older than this is considered gone.
WORKER_TIMEOUT = 30.0
REAP_INTERVAL = 30.0
# A worker killed without its shutdown (SIGKILL, OOM, a lost host) never removes its heartbeat,
# and one started under a new node name (a container's host name, a pid in the name) never
# overwrites it: such entries go after a day. Long enough to see in the hash which workers died
# overnight; short enough that a bench whose workers churn keeps a few days' worth at most.
GONE_WORKER_KEPT = 24 * 3600.0


def write_heartbeat(node: str, info: dict[str, Any]) -> None:
    with broker_errors():
        get_redis().hset(keys.WORKERS, node, json.dumps({**info, "last_heartbeat": time.time()}))


def read_workers(include_gone: bool = False) -> list[dict[str, Any]]:
    """Heartbeats of the workers (online only, unless ``include_gone``), oldest node first."""
    with broker_errors():
        raw = get_redis().hgetall(keys.WORKERS)
    now = time.time()
    workers = []
    for value in raw.values():
        info = json.loads(value)
        info["online"] = now - info["last_heartbeat"] < WORKER_TIMEOUT
        if info["online"] or include_gone:
            workers.append(info)
    return sorted(workers, key=lambda info: info["node"])


def prune_gone_workers() -> list[str]:
    """Remove the heartbeats older than GONE_WORKER_KEPT; returns their node names.

    Not atomic: a worker coming back under a pruned name between the read and the delete
    loses one heartbeat, and writes it again HEARTBEAT_INTERVAL later.
    """
    with broker_errors():
        client = get_redis()
        raw = client.hgetall(keys.WORKERS)
        oldest_kept = time.time() - GONE_WORKER_KEPT
        gone = [
            as_text(node)
            for node, value in raw.items()
            if json.loads(value)["last_heartbeat"] < oldest_kept
        ]
        if gone:
            client.hdel(keys.WORKERS, *gone)
    return gone


class Maintenance(threading.Thread):
    def __init__(self, node: str, info: dict[str, Any]) -> None:
        super().__init__(name="frappe-celery-maintenance", daemon=True)
        self.node, self.info = node, info
        self.stopping = threading.Event()

    def run(self) -> None:
        next_reap = time.monotonic() + REAP_INTERVAL
        next_prune = time.monotonic()
        while True:
            try:
                write_heartbeat(self.node, self.info)
                recovery.mark_alive()
                recovery.recover_dead_holders()
                if time.monotonic() >= next_prune:
                    next_prune = time.monotonic() + REAP_INTERVAL
                    prune_gone_workers()
                if time.monotonic() >= next_reap:
                    next_reap = time.monotonic() + REAP_INTERVAL
                    for job_id in records.reap_abandoned():
                        logger.warning(
                            "job %s: abandoned (worker gone, message lost): failed", job_id
                        )
            except Exception:
                logger.exception("worker maintenance failed; will try again")
            if self.stopping.wait(HEARTBEAT_INTERVAL):
                return

    def stop(self) -> None:
        self.stopping.set()
        self.join(HEARTBEAT_INTERVAL)
        try:
            with broker_errors():
                get_redis().hdel(keys.WORKERS, self.node)
        except Exception:
            logger.warning("could not remove the heartbeat of %s", self.node)


_running: list[Maintenance] = []


@signals.worker_init.connect  # the worker's main process, before it takes any message
def announce_alive(**_: Any) -> None:
    """The liveness key exists before the first message is held (recovery.py), not only from
    the first heartbeat on."""
    try:
        recovery.mark_alive()
    except Exception:
        logger.warning("could not write this worker's liveness key yet; the heartbeat will")


@signals.worker_init.connect  # the worker's main process, before the pool forks
@signals.beat_init.connect
def lower_cpu_priority(**_: Any) -> None:
    """Frappe's ``set_niceness``: background processes yield the CPU to web requests (in a
    bench by 10, or ``background_process_niceness``; not at all outside one)."""
    increment = get_settings().niceness
    if increment:
        os.nice(increment)


@signals.worker_ready.connect
def start_maintenance(sender: Any = None, **_: Any) -> None:
    controller = getattr(sender, "controller", None)
    node = getattr(controller, "hostname", None) or f"celery@{socket.gethostname()}"
    info = {
        "node": node,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "queues": list(sender.app.amqp.queues.consume_from) if sender is not None else [],
        "concurrency": getattr(controller, "concurrency", None),
        "started_at": time.time(),
        "version": installed_version(),
    }
    thread = Maintenance(node, info)
    _running.append(thread)
    thread.start()


@signals.worker_shutdown.connect
def stop_maintenance(**_: Any) -> None:
    while _running:
        _running.pop().stop()
