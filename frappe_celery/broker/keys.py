"""Every Redis key name frappe-celery reads or writes, and nowhere else.

Two families:

* our own records, under the ``frappe_celery:`` prefix;
* the broker's queue lists, named by kombu's Redis transport: a queue ``q`` is one Redis list per
  priority bucket, ``q`` for bucket 0 and ``q\\x06\\x16<n>`` for bucket n (kombu's default
  separator). Counting a queue means summing every bucket.
"""

from __future__ import annotations

import functools
from bisect import bisect

from frappe_celery.config import PRIORITY_STEPS

PREFIX = "frappe_celery:"
# kombu.transport.redis.Channel.sep: joins a queue name and its priority bucket.
KOMBU_PRIORITY_SEPARATOR = "\x06\x16"

JOB_PREFIX = PREFIX + "job:"
# kombu's Redis transport keeps every delivered, not yet acknowledged message in this hash
# (delivery tag -> message); it restores them to their queue after the visibility timeout.
KOMBU_UNACKED = "unacked"
# ... and this sorted set (delivery tag -> when delivered) indexes it by age.
KOMBU_UNACKED_INDEX = "unacked_index"
# Hash: delivery tag -> the worker channel holding that message in kombu's unacked hash
# (recovery.channel_holder); a dead holder's messages go back to their queues (recovery.py).
HOLDERS = PREFIX + "holders"
# Hash: holder -> when it was first seen without a liveness key (recovery.py).
HOLDERS_MISSING_SINCE = PREFIX + "holders:missing_since"


# Messages a worker dropped because they were not signed with an accepted key (signing.py):
# queue -> how many, and REFUSED_LAST_FIELD -> the JSON of the last one (queue, job id, why,
# when). Shown by `status` and `doctor`.
REFUSED_MESSAGES = PREFIX + "refused_messages"
REFUSED_LAST_FIELD = "_last"

# What alive() puts before a process's name (restore_visible.lua builds the key itself).
ALIVE_PREFIX = PREFIX + "alive:"


def alive(process: str) -> str:
    """String with a TTL, refreshed by a worker's heartbeat: present while that process is alive
    (``recovery.process_of`` a holder name)."""
    return f"{ALIVE_PREFIX}{process}"


# How many wake-up tokens a queue's doorbell keeps: each can wake one idle worker at once; more
# idle workers than this wake at their BRPOP timeout (1 s) instead.
DOORBELL_DEPTH = 64


def doorbell(queue: str) -> str:
    """List of wake-up tokens for ``queue``: every push onto the queue also pushes one (trimmed
    to DOORBELL_DEPTH), and an idle worker waits with BRPOP on these, never on the queue itself,
    then takes the message with reserve.lua, which pops and holds it in one step (transport.py).
    Losing a token costs nothing; a message popped by BRPOP as Redis died was lost."""
    return f"{PREFIX}doorbell:{queue}"


def job(job_id: str) -> str:
    """Hash holding one job's status record (see job.py for its fields)."""
    return JOB_PREFIX + job_id


def started_registry(queue: str) -> str:
    """Sorted set of job ids running from ``queue``, scored by their hard deadline."""
    return f"{PREFIX}started:{queue}"


def finished_registry(queue: str) -> str:
    """Sorted set of job ids finished from ``queue``, scored by end time."""
    return f"{PREFIX}finished:{queue}"


def canceled_registry(queue: str) -> str:
    """Sorted set of canceled or revoked job ids of ``queue``, scored by cancel time."""
    return f"{PREFIX}canceled:{queue}"


def scheduled_registry(queue: str) -> str:
    """Sorted set of job ids of ``queue`` waiting for a retry countdown, scored by due time."""
    return f"{PREFIX}scheduled:{queue}"


WORKERS = PREFIX + "workers"
"""Hash: worker node name -> JSON heartbeat (queues, concurrency, pid, last heartbeat); a
dead worker's entry is pruned after workers.GONE_WORKER_KEPT."""


def failed_registry(queue: str) -> str:
    """Sorted set of failed job ids of ``queue``, scored by end time, newest kept."""
    return f"{PREFIX}failed:{queue}"


def lock(name: str) -> str:
    """String holding the token of whoever holds the job lock ``name`` (lock.py)."""
    return f"{PREFIX}lock:{name}"


# -- metrics: counters and histograms the Lua scripts keep (broker/counters.py) --

METRICS_OUTCOMES = PREFIX + "metrics:outcomes"
"""Hash: "{queue}\x1f{site}\x1f{method}\x1f{outcome}" -> how many jobs came to that outcome."""

METRICS_LATENCY = PREFIX + "metrics:latency"
"""Hash: "{queue}\x1f{site}\x1f{bucket}" -> how many jobs waited from enqueue to their first
start within that bucket (counters.BUCKETS; one past the last is +Inf), and "...\x1fsum" ->
their total wait in seconds."""

METRICS_RUN_TIME = PREFIX + "metrics:run_time"
"""Hash: "{queue}\x1f{method}\x1f{bucket}" -> how many runs ended within that bucket of run
time, and "...\x1fsum" -> their total in seconds."""

METRICS_METHODS = PREFIX + "metrics:methods"
"""Set: the methods that have a label of their own (at most counters.METHOD_LABELS)."""


# -- scheduler --

SCHEDULER_LEADER = PREFIX + "scheduler:leader"
"""String: the token of the beat process that fires ticks (expires unless renewed)."""

SCHEDULER_LAST_RUNS = PREFIX + "scheduler:last_run"
"""Hash: "{site}||{entry name}" -> epoch of the scheduled time last fired."""

SCHEDULER_PASSES = PREFIX + "scheduler:passes"
"""Hash: site -> JSON of the leading beat's last pass over it (scheduler/state.py SitePass):
when, the site's state, and the lag of each job type that was due."""

SCHEDULER_SWITCHES = PREFIX + "scheduler:switches"
"""Hash: "{site}||{switch}" -> "1" for switch in paused/disabled/maintenance; site "*" is every
site."""


def priority_bucket(priority: int) -> int:
    """The kombu bucket a message priority falls into (kombu clamps to 0..9)."""
    clamped = min(max(priority, 0), 9)
    return PRIORITY_STEPS[bisect(PRIORITY_STEPS, clamped) - 1]


# Pure functions of their arguments, asked for on every enqueue: remembered.
@functools.lru_cache(maxsize=1024)
def queue_list(queue: str, priority: int) -> str:
    """The broker list a message of ``priority`` sent to ``queue`` is pushed onto."""
    bucket = priority_bucket(priority)
    return f"{queue}{KOMBU_PRIORITY_SEPARATOR}{bucket}" if bucket else queue


def queue_lists(queue: str) -> list[str]:
    """Every priority list of ``queue``, highest priority (consumed first) first."""
    return list(_queue_lists(queue))


@functools.lru_cache(maxsize=1024)
def _queue_lists(queue: str) -> tuple[str, ...]:
    return tuple(queue_list(queue, step) for step in PRIORITY_STEPS)
