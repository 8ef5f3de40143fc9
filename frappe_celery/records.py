"""Changes to a job's status record after it was published (the worker's side).

Every change carries the token of the enqueue it belongs to; a record replaced by a newer enqueue
of the same id is never touched by the older run (see the Lua scripts in ``lua/``).
"""

from __future__ import annotations

import time
from enum import IntEnum
from typing import Any

import redis
from kombu.utils.json import dumps as kombu_dumps

from . import keys, scripts
from .config import get_settings
from .connection import as_text, broker_errors, get_redis
from .job import JobStatus
from .wire import JobPayload


class StartDecision(IntEnum):
    """What start.lua decided about a delivery."""

    RUN = 1
    # The record belongs to a newer enqueue of the same id: run, but leave the record alone.
    RUN_UNTRACKED = 0
    CANCELED = -1
    ALREADY_DONE = -2


def create(job_id: str, token: str, fields: dict[str, Any]) -> None:
    """Write a queued record for a job run in-process (``is_async=False``): nothing is pushed."""
    key = keys.job(job_id)
    with broker_errors():
        pipe = get_redis().pipeline(transaction=True)
        pipe.delete(key)
        record = {**fields, "token": token, "status": JobStatus.QUEUED}
        pipe.hset(key, items=[part for item in record.items() for part in item])
        pipe.expire(key, get_settings().failure_ttl)
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
        [payload["token"], now, now + hard_limit, worker, job_id, get_settings().failure_ttl,
         kombu_dumps(payload)],
    )  # fmt: skip


class SentStart:
    """start.lua sent on ``connection`` without waiting for its reply, which :meth:`decision`
    reads later: the job runs in between (execute.run_while_starting). The caller holds the
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
        return str(kombu_dumps(result))
    except (TypeError, ValueError):
        return str(kombu_dumps(repr(result)))


def _end(
    job_id: str,
    token: str,
    queue: str,
    status: JobStatus,
    registry: str,
    ttl: int,
    limit: int,
    delivery_tag: str = "",
    run_by: str = "",
    **fields: str,
) -> bool:
    """Record a final state (finish.lua): the id is free again. False if the record is stale
    (another enqueue's) or, with ``run_by`` (the worker whose run ends), if another worker has
    started this enqueue again since.

    With ``delivery_tag``, the message that ran is settled in the same round trip (removed from
    kombu's unacked hash, as its ack would); see ``transport.QoS``.
    """
    args: list[Any] = [token, job_id, status, time.time(), ttl, limit, keys.JOB_PREFIX,
                       delivery_tag, run_by]  # fmt: skip
    for name, value in fields.items():
        args += [name, value]
    script_keys = [keys.job(job_id), keys.started_registry(queue), registry,
                   keys.KOMBU_UNACKED, keys.KOMBU_UNACKED_INDEX, keys.HOLDERS]  # fmt: skip
    with broker_errors():
        done = scripts.FINISH(get_redis(), script_keys, args)
    return int(done) == 1


def finish(
    job_id: str, token: str, queue: str, result: Any, delivery_tag: str = "", run_by: str = ""
) -> bool:
    """Finished: the result is kept for rq_results_ttl."""
    settings = get_settings()
    return _end(job_id, token, queue, JobStatus.FINISHED, keys.finished_registry(queue),
                settings.results_ttl, 0, delivery_tag, run_by,
                result=encode_result(result))  # fmt: skip


def fail(
    job_id: str, token: str, queue: str, exc_type: str, exc_info: str, run_by: str = ""
) -> bool:
    """Failed: kept with its traceback for rq_job_failure_ttl, newest rq_failed_jobs_limit."""
    settings = get_settings()
    return _end(job_id, token, queue, JobStatus.FAILED, keys.failed_registry(queue),
                settings.failure_ttl, settings.failed_jobs_limit, run_by=run_by,
                exc_type=exc_type, exc_info=exc_info)  # fmt: skip


def cancel(job_id: str, token: str, queue: str, reason: str) -> bool:
    """Canceled without finishing (revoked, stopped, purged)."""
    settings = get_settings()
    return _end(job_id, token, queue, JobStatus.CANCELED, keys.canceled_registry(queue),
                settings.failure_ttl, settings.failed_jobs_limit, exc_info=reason)  # fmt: skip


ABANDONED_REASON = (
    "abandoned: its hard time limit passed, no worker holds its message and the message is no "
    "longer in its queue (the worker died and the message was lost)"
)


def reap_abandoned() -> list[str]:
    """Fail every started job that can never finish; returns their ids (see lua/reap.lua)."""
    settings = get_settings()
    reaped: list[str] = []
    for queue in settings.queues:
        with broker_errors():
            ids = scripts.REAP(
                get_redis(),
                [keys.started_registry(queue), keys.failed_registry(queue),
                 *keys.queue_lists(queue)],
                [time.time(), keys.KOMBU_UNACKED, settings.lost_message_grace, keys.JOB_PREFIX,
                 settings.failure_ttl, ABANDONED_REASON],
            )  # fmt: skip
        reaped += [as_text(i) for i in ids]
    return reaped


def requeue(job_id: str, token: str, queue: str, retry_at: float = 0.0, **fields: Any) -> bool:
    """Back to queued: a retry is due at ``retry_at``, or (0) the broker will redeliver it."""
    args: list[Any] = [token, job_id, retry_at]
    for name, value in fields.items():
        args += [name, value]
    registries = [keys.started_registry(queue), keys.scheduled_registry(queue)]
    with broker_errors():
        done = scripts.REQUEUE(get_redis(), [keys.job(job_id), *registries], args)
    return bool(done)
