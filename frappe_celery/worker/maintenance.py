"""What each worker's main process does besides running jobs: a heartbeat, dead-worker recovery
and the reaper; and the CPU priority of workers and beat.

The heartbeat (every ``heartbeat_interval`` seconds, in ``keys.WORKERS``) is how `frappe-celery
status` and `doctor` see workers without a broadcast: a worker is online while its heartbeat is
younger than six heartbeats (broker/workers.py, where ops/ reads it). With it goes the
liveness key, and every heartbeat returns the messages of workers that died to their queues
(recovery.py). The reaper fails started jobs that can never finish (records.reap_abandoned),
and the heartbeats of workers long gone are pruned.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from typing import Any

from celery import signals

from frappe_celery import records
from frappe_celery.broker import keys, recovery
from frappe_celery.broker.workers import prune_gone_workers, write_heartbeat
from frappe_celery.config import get_settings
from frappe_celery.connection import broker_errors, get_redis
from frappe_celery.version import installed_version

logger = logging.getLogger(__name__)

REAP_INTERVAL = 30.0


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
            if self.stopping.wait(get_settings().heartbeat_interval):
                return

    def stop(self) -> None:
        self.stopping.set()
        self.join(get_settings().heartbeat_interval)
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
