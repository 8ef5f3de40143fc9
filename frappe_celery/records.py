"""A job's status record: its fields (:data:`FIELDS`), its states (:data:`TRANSITIONS`) and the
changes to it after it was published (the worker's side).

The record is a Redis hash (``keys.job(id)``) written when the job is published, so the status
is known from that moment: Celery's PENDING means "unknown", never "queued". Every change
carries the token of the enqueue it belongs to; a record replaced by a newer enqueue of the same
id is never touched by the older run (see the Lua scripts in ``broker/lua/``). This module is
the one list of the fields: the Lua scripts and every Python reader use only these names
(``tests/test_record_schema.py`` checks them).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from enum import Enum, IntEnum
from typing import Any

import redis

from frappe_celery.broker import keys, scripts
from frappe_celery.broker.wire import JobPayload, encode_data
from frappe_celery.config import get_settings
from frappe_celery.connection import as_text, broker_errors, get_redis
from frappe_celery.job_ids import site_of_job_id
from frappe_celery.retention import Retention, retention_horizon, site_retention

logger = logging.getLogger(__name__)


class JobStatus(str, Enum):
    """RQ's status names, as Frappe's get_job_status returns them.

    A str whose str() and format() are its value, as Python 3.11's StrEnum (which 3.10 lacks)."""

    QUEUED = "queued"
    STARTED = "started"
    FINISHED = "finished"
    FAILED = "failed"
    CANCELED = "canceled"
    # A running job its worker was told to kill (RQ's send_stop_job_command, Frappe's "Stop"
    # button, ``frappe-celery stop``); a queued job taken off its queue is canceled instead.
    # As in RQ, a stopped job is kept in its queue's failed registry.
    STOPPED = "stopped"

    def __str__(self) -> str:
        return str.__str__(self)

    def __format__(self, format_spec: str) -> str:
        return str.__format__(self, format_spec)


# While a job is queued or started its id is taken (is_job_enqueued, deduplicate).
ACTIVE_STATUSES = frozenset({JobStatus.QUEUED, JobStatus.STARTED})
# The statuses a job ends in: its id is free again and its record waits for its TTL.
ENDED_STATUSES = frozenset(
    {JobStatus.FINISHED, JobStatus.FAILED, JobStatus.CANCELED, JobStatus.STOPPED}
)


FIELDS: dict[str, str] = {
    "token": "unique per enqueue; every later change checks it, so a stale worker or a stale "
    "release never touches a newer enqueue of the same id",
    "status": "one of JobStatus (job.py): queued, started, finished, failed, canceled, stopped",
    "queue": "the queue",
    "list": "the broker list its message was pushed onto",
    "delivery_tag": "kombu's id of its message, by which the message is found (held or waiting)",
    "message": "a copy of the broker message, for deduplicated jobs only (the next deduplicated "
    "enqueue finds it in its list with one LPOS; start.lua knows a deduplicated enqueue by it)",
    "missing_since": "when a deduplicated enqueue first found the message neither waiting nor "
    "held (lib_liveness.lua); the id is taken over after lost_message_grace",
    "payload": "JSON of the execute_job payload (its arguments), from its start on",
    "method": "dotted path of the function",
    "job_name": "display name, only when it is not the method",
    "site": "the job's site, captured at enqueue",
    "user": "the user who enqueued it, when given",
    "event": "the scheduler event or Frappe event, when given",
    "timeout": "soft time limit in seconds",
    "enqueued_at": "epoch seconds",
    "started_at": "epoch seconds",
    "ended_at": "epoch seconds",
    "worker": "the worker node that took it",
    "retries": "how many retries happened so far (none yet: absent)",
    "result": "JSON of the return value (finished jobs)",
    "exc_type": "exception class (failed jobs), the reason's kind (canceled, stopped)",
    "exc_info": "traceback (failed jobs), the reason (canceled, stopped)",
    "attempts": "JSON list of the attempts that failed and were retried, oldest first: "
    "attempt number, when, exception class and traceback (the last failure's is exc_info)",
    "progress": "percent done, as the job last set it",
    "progress_message": "the note that came with it",
    "meta": "JSON of the job's meta dict (RQ's), once save_meta wrote one",
    "results_ttl": "the job's own retention of a result (s), when its enqueuing process's "
    "config differed from its site's files (Frappe passes frappe.conf's to RQ per job)",
    "failure_ttl": "the same for a failure",
}
"""Every field of a job's record, and what it holds. A field at its default is left out."""

ENQUEUE_FIELDS = ("token", "status", "queue", "method", "site", "timeout", "enqueued_at",
                  "delivery_tag", "job_name", "user", "event")  # fmt: skip
"""The fields a record starts with (caller/publish.py), in the order enqueue.lua gets their
values; enqueue.lua adds ``list`` and, for a deduplicated job, ``message``."""

SUMMARY_FIELDS = ("status", "queue", "method", "site", "event", "enqueued_at", "started_at",
                  "ended_at", "worker", "progress", "progress_message", "retries", "exc_type",
                  "exc_info", "job_name")  # fmt: skip
"""What the listings (ops/monitor.py: jobs, failed, workers) read of each record."""

TRANSITIONS: dict[str, dict[str, str]] = {
    "": {"queued": "enqueue.lua (records.create for is_async=False)"},
    "queued": {
        "started": "start.lua (a worker takes it)",
        "canceled": "cancel.lua, or a Celery revoke (records.cancel)",
        "failed": "a refused message (malformed, unsigned): never run",
    },
    "started": {
        "finished": "finish.lua (the method returned)",
        "failed": "finish.lua (raised, time limit), reap.lua (lost for good)",
        "stopped": "finish.lua (stop: the running job killed)",
        "queued": "requeue.lua (a retry; a lost pool child)",
        "started": "start.lua again (a redelivery after its worker died)",
    },
}
"""The record's state machine: status -> the statuses it may go to, and what moves it there.
Ended records (finished, failed, canceled, stopped) change no more; a newer enqueue of the id
replaces the record whole. A delivery whose record says canceled, stopped, finished or failed,
or whose id a newer deduplicated enqueue has taken, is skipped (start.lua)."""


# -- retention, per site: retention.py ------------------------------------------------------


def job_retention(job_id: str) -> Retention:
    """The retention of the site a (site-namespaced) job id names."""
    return site_retention(site_of_job_id(job_id))


class StartDecision(IntEnum):
    """What start.lua decided about a delivery."""

    RUN = 1
    # The record belongs to a newer enqueue of the same id: run, but leave the record alone.
    RUN_UNTRACKED = 0
    CANCELED = -1
    ALREADY_DONE = -2
    # A deduplicated enqueue took the id after this delivery's message was given up as lost.
    SUPERSEDED = -3

    @property
    def skips(self) -> bool:
        """Whether the delivery is not run."""
        return self in (
            StartDecision.CANCELED,
            StartDecision.ALREADY_DONE,
            StartDecision.SUPERSEDED,
        )


def create(job_id: str, token: str, fields: dict[str, Any]) -> None:
    """Write a queued record for a job run in-process (``is_async=False``): nothing is pushed."""
    key = keys.job(job_id)
    with broker_errors():
        pipe = get_redis().pipeline(transaction=True)
        pipe.delete(key)
        record = {**fields, "token": token, "status": JobStatus.QUEUED}
        pipe.hset(key, items=[part for item in record.items() for part in item])
        pipe.expire(key, site_retention(fields.get("site")).failure_ttl)
        pipe.execute()


def start(job_id: str, payload: JobPayload, hard_limit: float, worker: str) -> StartDecision:
    """Mark the job started by ``worker`` (start.lua); the record keeps its payload from now on."""
    script_keys, args = _start_call(job_id, payload, hard_limit, worker)
    with broker_errors():
        return StartDecision(int(scripts.START(get_redis(), script_keys, args)))


def _start_call(
    job_id: str, payload: JobPayload, hard_limit: float, worker: str
) -> tuple[list[str], list[Any]]:
    now, queue = time.time(), payload["queue"]
    return (
        [keys.job(job_id), keys.started_registry(queue), keys.scheduled_registry(queue)],
        [payload["token"], now, now + hard_limit, worker, job_id,
         site_retention(payload["site"]).failure_ttl, encode_data(payload)],
    )  # fmt: skip


class SentStart:
    """start.lua sent on ``connection`` without waiting for its reply, which :meth:`decision`
    reads later: the job runs in between (worker/task.py, run_while_starting). The caller holds the
    connection (no other command may use it) until then."""

    def __init__(
        self, connection: Any, job_id: str, payload: JobPayload, hard_limit: float, worker: str
    ) -> None:
        self._connection = connection
        script_keys, args = _start_call(job_id, payload, hard_limit, worker)
        # EVAL, not EVALSHA: a NOSCRIPT reply (Redis restarted and lost its scripts) would be
        # read only once the job ended, leaving it recorded as queued while it runs. Redis
        # finds the script in its cache by the source's hash: 1.5 KB more on the wire.
        with broker_errors():
            connection.send_command(
                "EVAL", scripts.START.source, len(script_keys), *script_keys, *args
            )

    def decision(self) -> StartDecision | None:
        """start.lua's decision; None when its reply was lost with the connection (it may or
        may not have run: the FINISH script records the end either way, see finish.lua)."""
        try:
            return StartDecision(int(self._connection.read_response()))
        except (redis.ConnectionError, redis.TimeoutError):
            self._connection.disconnect()
            return None


def encode_result(result: Any) -> str:
    """JSON of a return value; a value JSON cannot hold is kept as its repr()."""
    try:
        return encode_data(result)
    except (TypeError, ValueError):
        return encode_data(repr(result))


# The bytes an ended job's record keeps of its traceback (or reason). Real tracebacks, a
# Frappe job's deepest included, are a few KB to some tens of KB and fit whole; what exceeds
# this is an exception carrying a document or a response in its message, cut in the middle.
# With the failed registry's count limit (rq_failed_jobs_limit, 1000 by default) a queue's
# failed records then hold at most about 64 MB of tracebacks.
MAX_EXC_INFO_BYTES = 64 * 1024
# Room kept for the marker that says how much was cut.
_CUT_MARKER_ROOM = 64


def capped(text: str, limit: int = MAX_EXC_INFO_BYTES) -> str:
    """``text`` if its UTF-8 fits in ``limit`` bytes; else its start and its end around a
    marker saying how many bytes were cut. The start keeps the frames of a traceback, the end
    its exception's last words (a traceback's final line is the one that names the error)."""
    data = text.encode("utf-8", "replace")
    if len(data) <= limit:
        return text
    kept = limit - _CUT_MARKER_ROOM
    head, tail = data[: kept // 2], data[len(data) - (kept - kept // 2) :]
    marker = f"\n\n[... {len(data) - len(head) - len(tail)} bytes cut ...]\n\n"
    # A character split at either cut is dropped.
    return head.decode("utf-8", "ignore") + marker + tail.decode("utf-8", "ignore")


def _end(
    job_id: str,
    token: str,
    queue: str,
    status: JobStatus,
    registry: str,
    ttl: int,
    limit: int,
    horizon: int,
    delivery_tag: str = "",
    run_by: str = "",
    if_running: tuple[JobStatus, str] | None = None,
    **fields: str,
) -> bool:
    """Record a final state (finish.lua): the id is free again. False if the record is stale
    (another enqueue's) or, with ``run_by`` (the worker whose run ends), if another worker has
    started this enqueue again since.

    ``horizon``: the registry drops entries older than this (the longest TTL of any site).
    ``if_running``: the status and registry recorded instead when the record says started.
    With ``delivery_tag``, the message that ran is settled in the same round trip (removed from
    kombu's unacked hash, as its ack would); see ``transport.QoS``.
    """
    running_status, running_registry = if_running or ("", registry)
    if "exc_info" in fields:
        fields["exc_info"] = capped(fields["exc_info"])
    args: list[Any] = [token, job_id, status, time.time(), ttl, limit, keys.JOB_PREFIX,
                       delivery_tag, run_by, horizon, running_status]  # fmt: skip
    for name, value in fields.items():
        args += [name, value]
    script_keys = [keys.job(job_id), keys.started_registry(queue), registry,
                   keys.KOMBU_UNACKED, keys.KOMBU_UNACKED_INDEX, keys.HOLDERS,
                   running_registry]  # fmt: skip
    with broker_errors():
        done = scripts.FINISH(get_redis(), script_keys, args)
    return int(done) == 1


def finish(
    job_id: str, token: str, queue: str, result: Any, delivery_tag: str = "", run_by: str = ""
) -> bool:
    """Finished: the result is kept for the job's site's rq_results_ttl."""
    ttl = job_retention(job_id).results_ttl
    return _end(job_id, token, queue, JobStatus.FINISHED, keys.finished_registry(queue), ttl, 0,
                max(ttl, retention_horizon().results_ttl), delivery_tag, run_by,
                result=encode_result(result))  # fmt: skip


def fail(
    job_id: str, token: str, queue: str, exc_type: str, exc_info: str, run_by: str = ""
) -> bool:
    """Failed: kept with its traceback for the job's site's rq_job_failure_ttl; its queue keeps
    the newest rq_failed_jobs_limit (the failing job's site's, as Frappe trims the registry)."""
    retention = job_retention(job_id)
    return _end(job_id, token, queue, JobStatus.FAILED, keys.failed_registry(queue),
                retention.failure_ttl, retention.failed_jobs_limit,
                max(retention.failure_ttl, retention_horizon().failure_ttl), run_by=run_by,
                exc_type=exc_type, exc_info=exc_info)  # fmt: skip


def cancel(job_id: str, token: str, queue: str, reason: str) -> bool:
    """Ended without finishing (revoked, purged, stopped): canceled while it was queued;
    stopped, in the failed registry as RQ keeps it, when its run was killed (a worker
    terminating the running job, as ``frappe-celery stop`` and the Desk's Stop ask)."""
    retention = job_retention(job_id)
    return _end(job_id, token, queue, JobStatus.CANCELED, keys.canceled_registry(queue),
                retention.failure_ttl, retention.failed_jobs_limit,
                max(retention.failure_ttl, retention_horizon().failure_ttl),
                if_running=(JobStatus.STOPPED, keys.failed_registry(queue)),
                exc_info=reason)  # fmt: skip


# -- stuck jobs ----------------------------------------------------------------------------------


def stuck_margin() -> float:
    """How long past its hard deadline (the started registry's score) a job that is still
    started is stuck: its worker should have killed it and recorded the end by then (it does
    within a second), so it hangs where the kill does not reach (a worker's main process frozen
    or gone, a child in an uninterruptible wait). The time_limit_grace, once more."""
    return float(get_settings().time_limit_grace)


@dataclass(frozen=True)
class StuckJob:
    job_id: str
    queue: str
    overdue: float  # seconds past its hard deadline


def stuck_jobs(now: float | None = None) -> list[StuckJob]:
    """Every started job past its hard deadline plus stuck_margin(), most overdue first."""
    now = time.time() if now is None else now
    cutoff = now - stuck_margin()
    found = []
    with broker_errors():
        pipe = get_redis().pipeline(transaction=False)
        queues = list(get_settings().queues)
        for queue in queues:
            pipe.zrangebyscore(keys.started_registry(queue), "-inf", cutoff, withscores=True)
        for queue, rows in zip(queues, pipe.execute(), strict=True):
            found += [StuckJob(as_text(job_id), queue, now - float(deadline))
                      for job_id, deadline in rows]  # fmt: skip
    return sorted(found, key=lambda job: -job.overdue)


STUCK_EXC_TYPE = "StuckJobError"


def fail_stuck(job: StuckJob) -> bool:
    """Record a stuck job failed, freeing its id (a Scheduled Job Type it blocked runs again
    at its next due time); False if it ended or was enqueued again meanwhile. A late end of the
    stuck run, should it ever come, changes nothing (finish.lua)."""
    with broker_errors():
        token = get_redis().hget(keys.job(job.job_id), "token")
    if token is None:
        return False
    reason = (
        f"stuck: still started {job.overdue:.0f} s past its hard time limit (its worker frozen, "
        "gone, or the job in a wait no signal ends); failed and its id freed by "
        "`frappe-celery stop --stuck`"
    )
    retention = job_retention(job.job_id)
    return _end(job.job_id, as_text(token), job.queue, JobStatus.FAILED,
                keys.failed_registry(job.queue), retention.failure_ttl,
                retention.failed_jobs_limit,
                max(retention.failure_ttl, retention_horizon().failure_ttl),
                exc_type=STUCK_EXC_TYPE, exc_info=reason)  # fmt: skip


ABANDONED_REASON = (
    "abandoned: its hard time limit passed, no worker holds its message and the message is no "
    "longer in its queue (the worker died and the message was lost)"
)


def reap_abandoned() -> list[str]:
    """Fail every started job that can never finish; returns their ids (see lua/reap.lua)."""
    settings = get_settings()
    # The reaped jobs may be any site's: their queue's failed registry is trimmed to the
    # longest any site keeps, never below what a site's own limit keeps.
    horizon = retention_horizon()
    reaped: list[str] = []
    for queue in settings.queues:
        with broker_errors():
            ids = scripts.REAP(
                get_redis(),
                [keys.started_registry(queue), keys.failed_registry(queue),
                 *keys.queue_lists(queue)],
                [time.time(), keys.KOMBU_UNACKED, settings.lost_message_grace, keys.JOB_PREFIX,
                 settings.failure_ttl, ABANDONED_REASON, horizon.failure_ttl,
                 horizon.failed_jobs_limit],
            )  # fmt: skip
        reaped += [as_text(i) for i in ids]
    return reaped


# The bytes each retried attempt's traceback keeps in ``attempts`` (the last failure keeps
# MAX_EXC_INFO_BYTES in exc_info): with at most 50 retries a record stays under 1 MB.
MAX_ATTEMPT_TRACEBACK_BYTES = 16 * 1024


def attempts_with(job_id: str, attempt: int, exc_type: str, traceback: str) -> str:
    """The record's ``attempts`` JSON with this failed attempt added (for :func:`requeue`)."""
    with broker_errors():
        raw = get_redis().hget(keys.job(job_id), "attempts")
    try:
        attempts = json.loads(raw) if raw else []
    except ValueError:
        attempts = []
    attempts.append({"attempt": attempt, "at": time.time(), "exc_type": exc_type,
                     "traceback": capped(traceback, MAX_ATTEMPT_TRACEBACK_BYTES)})  # fmt: skip
    return json.dumps(attempts)


def requeue(job_id: str, token: str, queue: str, retry_at: float = 0.0, **fields: Any) -> bool:
    """Back to queued: a retry is due at ``retry_at``, or (0) the broker will redeliver it."""
    args: list[Any] = [token, job_id, retry_at]
    for name, value in fields.items():
        args += [name, value]
    registries = [keys.started_registry(queue), keys.scheduled_registry(queue)]
    with broker_errors():
        done = scripts.REQUEUE(get_redis(), [keys.job(job_id), *registries], args)
    return bool(done)


# -- the handle's and the tools' writes ---------------------------------------------------------

# Write fields only while the record exists (a vanished job is not recreated).
_UPDATE_RECORD = scripts.LuaScript("update_record")
_KEEP_FOR = scripts.LuaScript("keep_for")

# Every registry a job of a queue may be listed in once it ended.
ENDED_REGISTRIES = (keys.finished_registry, keys.failed_registry, keys.canceled_registry)


def update_fields(job_id: str, **fields: str) -> bool:
    """Write ``fields`` while the record exists (update_record.lua); False once it is gone."""
    args = [part for item in fields.items() for part in item]
    with broker_errors():
        return bool(_UPDATE_RECORD(get_redis(), [keys.job(job_id)], args))


def keep_for(job_id: str, **ttls: int) -> bool:
    """The job's own retention (``results_ttl`` / ``failure_ttl``), applied at once to a record
    that has ended (keep_for.lua); False once it is gone."""
    args = [part for item in ttls.items() for part in item]
    with broker_errors():
        return bool(_KEEP_FOR(get_redis(), [keys.job(job_id)], args))


def cancel_queued(job_id: str, record: dict[str, str]) -> str | None:
    """Take a queued job off its list and record it canceled (cancel.lua); returns the status
    the record had (``queued`` when it was canceled now)."""
    retention = site_retention(record.get("site"))
    failure_ttl = int(record.get("failure_ttl") or retention.failure_ttl)
    # The canceled registry is bounded as cancel() bounds it.
    horizon = max(failure_ttl, retention_horizon().failure_ttl)
    with broker_errors():
        previous = scripts.CANCEL(
            get_redis(),
            [keys.job(job_id), record["list"], keys.canceled_registry(record["queue"])],
            [record["token"], time.time(), failure_ttl, job_id, horizon,
             retention.failed_jobs_limit, keys.JOB_PREFIX],
        )  # fmt: skip
    return as_text(previous) if previous else None


def forget(registries: list[str], job_ids: list[str]) -> int:
    """Delete the records of these ended jobs and drop them from ``registries``
    (forget.lua); how many were forgotten (a job not ended is left alone)."""
    with broker_errors():
        return int(scripts.FORGET(get_redis(), registries, [keys.JOB_PREFIX, *job_ids]))
