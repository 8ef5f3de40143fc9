"""Dead-worker recovery: the messages a vanished worker held go back to their queues in seconds.

kombu keeps every delivered, unacknowledged message in its unacked hash and restores it only
after the visibility timeout, which must outlast the longest hard time limit (over 30 minutes
with the long queue). A worker killed whole (OOM killer, a lost VM) would leave the jobs it had
taken waiting that long. So every held message also names its holder, the worker's channel
(``keys.HOLDERS``, written with the message by reserve.lua, removed with it by finish.lua or
kombu's ack), and every worker process keeps a liveness key (``keys.alive``) with a TTL that its
heartbeat refreshes. A holder whose process's key is gone, and stays gone for
missing_confirmation() seconds, is dead: any live worker then returns its messages to the front of
their queues, each exactly once (recover.lua), as kombu's own restore would. A channel lost with
its connection is dead at once to its own process (holder_lost), which returns what it held
once Redis answers again: the jobs it delivered (Celery cancelled them) and a message a
reserve.lua held whose reply the connection lost.

A live worker busy with a long job keeps its key (the heartbeat runs in the main process's
maintenance thread, not in the pool), so its messages are never taken. The confirmation wait
covers a Redis outage longer than the key's TTL: once Redis is back, a live worker writes its
key again within one heartbeat, before anyone may declare it dead.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from collections import defaultdict
from typing import Any

from frappe_celery.broker import keys, scripts
from frappe_celery.config import get_settings
from frappe_celery.connection import as_text, broker_errors, get_redis

logger = logging.getLogger(__name__)

# A holder is alive while its key exists; every heartbeat (the heartbeat_interval setting, 5 s by
# default) refreshes it, so it lives this many heartbeats: it survives three missed beats.
ALIVE_TTL_BEATS = 4
# How long a holder must stay without its key before its messages are taken, in heartbeats: two,
# so that a worker that only lost Redis for a while has written its key again.
MISSING_CONFIRMATION_BEATS = 2


def alive_ttl() -> int:
    """Seconds a liveness key lives (20 with the default heartbeat)."""
    return ALIVE_TTL_BEATS * get_settings().heartbeat_interval


def missing_confirmation() -> float:
    """Seconds a holder must stay without its key before its messages go back (10 by default)."""
    return float(MISSING_CONFIRMATION_BEATS * get_settings().heartbeat_interval)


# How long a lost channel's name is still looked for once it holds nothing: a reserve.lua the
# lost connection had sent may reach Redis late (a healed network cut), and hold a message then.
LOST_HOLDER_WATCH = 300.0

_process: tuple[int, str] | None = None
# Holder name -> when it was lost: channels of this process whose connection was lost. Nothing
# of this process runs what they hold any more, so it goes back without the confirmation wait.
_lost_holders: dict[str, float] = {}
_lost_holders_lock = threading.Lock()


def process_name() -> str:
    """This process's name: host, pid and a random part (a restarted worker reusing a pid, or two
    hosts of the same name, are different processes). Its liveness key bears it."""
    global _process
    pid = os.getpid()
    if _process is None or _process[0] != pid:
        _process = (pid, f"{socket.gethostname()}:{pid}:{uuid.uuid4().hex[:8]}")
    return _process[1]


# Between a holder's process and its channel number.
_CHANNEL_SEPARATOR = "/"


def channel_holder(channel_number: int) -> str:
    """The holder name of one broker channel of this process. Each channel (a new one after every
    reconnect) holds under its own name: an ack that the channel lost with its connection sends
    once the worker has reconnected must not settle the message if it was returned and taken
    again meanwhile, by a new channel of the same process (settle.lua compares names)."""
    return f"{process_name()}{_CHANNEL_SEPARATOR}{channel_number}"


def process_of(holder: str) -> str:
    """The process whose liveness key tells whether ``holder`` (a channel_holder) is alive."""
    return holder.split(_CHANNEL_SEPARATOR, 1)[0]


def mark_alive() -> None:
    """Refresh this worker's liveness key (its heartbeat)."""
    with broker_errors():
        get_redis().set(keys.alive(process_name()), int(time.time()), ex=alive_ttl())


def holder_lost(holder: str) -> None:
    """``holder`` (a channel of this process) lost its connection and holds under a new name from
    now on: every message still held under this one goes back (recover_dead_holders)."""
    with _lost_holders_lock:
        _lost_holders.setdefault(holder, time.time())


def restored_message(held: str) -> tuple[str, str, str]:
    """The queue a held message goes back to, its list there, and the message as kombu restores
    it (marked redelivered). ``held`` is kombu's unacked value: the JSON of [message, exchange,
    queue]."""
    message, _exchange, routing_key = json.loads(held)
    # Every queue of ours is bound by its own name (celery_app.py, wire.py).
    queue = routing_key
    properties = message.get("properties") or {}
    message.setdefault("headers", {})["redelivered"] = True
    properties.setdefault("delivery_info", {})["redelivered"] = True
    try:
        priority = int(properties.get("priority") or 0)
    except (TypeError, ValueError):
        priority = 0
    return queue, keys.queue_list(queue, priority), json.dumps(message)


def recover_dead_holders(now: float | None = None) -> int:
    """Return the messages of every dead holder to their queues; how many were returned."""
    now = time.time() if now is None else now
    client = get_redis()
    with broker_errors():
        holders = client.hgetall(keys.HOLDERS)
        missing_since = {
            as_text(name): float(since)
            for name, since in client.hgetall(keys.HOLDERS_MISSING_SINCE).items()
        }
    tags_of: dict[str, list[str]] = defaultdict(list)
    for tag, holder in holders.items():
        tags_of[as_text(holder)].append(as_text(tag))
    names = list(tags_of)
    with _lost_holders_lock:
        for name, lost_at in list(_lost_holders.items()):
            if name not in tags_of and now - lost_at > LOST_HOLDER_WATCH:
                del _lost_holders[name]
        lost = set(_lost_holders)
    with broker_errors():
        pipe = client.pipeline(transaction=False)
        for name in names:
            pipe.exists(keys.alive(process_of(name)))
        alive = dict(zip(names, pipe.execute(), strict=True))
    dead: list[str] = []
    with broker_errors():
        pipe = client.pipeline(transaction=False)
        for name in names:
            if name in lost:
                dead.append(name)
            elif alive[name]:
                if name in missing_since:
                    pipe.hdel(keys.HOLDERS_MISSING_SINCE, name)
            elif name not in missing_since:
                pipe.hset(keys.HOLDERS_MISSING_SINCE, name, now)
            elif now - missing_since[name] >= missing_confirmation():
                dead.append(name)
        # Holders that hold nothing any more are forgotten.
        for name in set(missing_since) - set(names):
            pipe.hdel(keys.HOLDERS_MISSING_SINCE, name)
        pipe.execute()
    returned = 0
    for name in dead:
        for tag in tags_of[name]:
            returned += _return_message(client, tag, name)
        if name in lost:
            logger.warning("channel %s lost its connection: the messages it held are back on "
                           "their queues", name)  # fmt: skip
        else:
            logger.warning("worker %s is gone: its messages are back on their queues", name)
    return returned


def _return_message(client: Any, tag: str, holder: str) -> int:
    with broker_errors():
        held = client.hget(keys.KOMBU_UNACKED, tag)
    if held is None:
        # Settled: recover.lua only tidies up (these two keys are not written).
        target, doorbell, message, held_text = keys.HOLDERS, keys.HOLDERS, "", ""
    else:
        held_text = as_text(held)
        try:
            queue, target, message = restored_message(held_text)
            doorbell = keys.doorbell(queue)
        except (ValueError, TypeError, AttributeError):
            # Not kombu's [message, exchange, routing_key]: left for kombu's visibility timeout.
            logger.error("held message %s of %s is unreadable; left to kombu", tag, holder)
            return 0
    with broker_errors():
        done = scripts.RECOVER(
            client,
            [keys.KOMBU_UNACKED, keys.KOMBU_UNACKED_INDEX, keys.HOLDERS, target, doorbell],
            [tag, holder, held_text, message, keys.DOORBELL_DEPTH],
        )
    return int(done)
