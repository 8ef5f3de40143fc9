"""The workers as the broker shows them, for the worker that writes and the tools that read.

Each worker's main process writes its heartbeat into ``keys.WORKERS`` every
heartbeat_interval seconds (worker/maintenance.py); `frappe-celery status`, `doctor` and the
Desk read it here (ops/) without a broadcast and without importing the worker's code. A worker
is online while its heartbeat is younger than worker_timeout(). The remote control command that
stops one running job is named here too: ops/admin.py sends it, worker/control.py answers it.
"""

from __future__ import annotations

import json
import time
from typing import Any

from frappe_celery.broker import keys
from frappe_celery.config import get_settings
from frappe_celery.connection import as_text, broker_errors, get_redis

# The remote control command that stops one running job (worker/control.py), and its signal.
STOP_COMMAND = "frappe_celery_stop"
STOP_SIGNAL = "SIGTERM"

# A worker whose heartbeat is older than this many heartbeats is considered gone (30 s with the
# default 5-s heartbeat_interval).
WORKER_TIMEOUT_BEATS = 6


def worker_timeout() -> float:
    return float(WORKER_TIMEOUT_BEATS * get_settings().heartbeat_interval)


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
    now, timeout = time.time(), worker_timeout()
    workers = []
    for value in raw.values():
        info = json.loads(value)
        info["online"] = now - info["last_heartbeat"] < timeout
        if info["online"] or include_gone:
            workers.append(info)
    return sorted(workers, key=lambda info: info["node"])


def prune_gone_workers() -> list[str]:
    """Remove the heartbeats older than GONE_WORKER_KEPT; returns their node names.

    Not atomic: a worker coming back under a pruned name between the read and the delete
    loses one heartbeat, and writes it again one heartbeat_interval later.
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
