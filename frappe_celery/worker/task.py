"""Worker side: the one generic Celery task every job runs through, around one attempt
(attempt.py), and what the worker's main process records for it.

"Record started" is one round trip (start.lua) that the pool child waits for, except for a
delivery reserve.lua already found startable as the worker took it (:func:`start_checked`): its
start is sent and the job begins at once; the reply is read when the job ends, before the
outcome is recorded (:func:`run_while_starting`).

The same path runs in-process for ``enqueue(..., is_async=False)``. Time limits travel with
each message (soft = the job's timeout, raising SoftTimeLimitExceeded inside the job; hard =
timeout + grace, killing the pool child); a hard kill and a lost worker are recorded by
:class:`JobRequest` in the worker's main process, since the child is gone by then.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

from billiard.einfo import ExceptionInfo
from billiard.exceptions import WorkerLostError
from celery import Task, signals
from celery.backends.base import DisabledBackend
from celery.exceptions import InvalidTaskError, Reject
from celery.worker.request import Request

from frappe_celery import records
from frappe_celery.broker.wire import (
    START_CHECKED,
    TASK_NAME,
    JobPayload,
    expand_payload,
    payload_problem,
)
from frappe_celery.celery_app import get_app
from frappe_celery.config import MAX_RETRIES
from frappe_celery.connection import checked_out, get_redis
from frappe_celery.errors import BrokerUnreachable
from frappe_celery.retries import RetryPolicy
from frappe_celery.worker.attempt import (
    HOSTNAME,
    Outcome,
    conclude,
    decide,
    hard_time_limit,
    max_attempts,
    retry_policy_for,
    run_attempt,
    start_or_skip,
)

logger = logging.getLogger(__name__)


class NotStarted(Exception):
    """Redis could not be reached as the job was about to start: its method never ran, so this
    is not the job's failure. execute_job records nothing and hands the message back."""


def hand_back(job_id: str, exc: Exception) -> Reject:
    """The rejection that returns a job that could not start to the front of its queue; with
    the connection lost, the transport leaves its message to recovery.py instead (QoS.reject),
    which returns it once Redis answers."""
    logger.warning("job %s: not started, Redis is unreachable (%s); its message goes back to "
                   "its queue", job_id, exc)  # fmt: skip
    return Reject(str(exc), requeue=True)


def run_while_starting(job_id: str, payload: JobPayload, worker: str, *, last_attempt: bool) -> Any:
    """run_attempt for a delivery reserve.lua already checked (``wire.START_CHECKED``): start.lua
    is sent first and its reply read when the job ends, so the job starts one round trip
    sooner. start.lua still decides what the record says; reserve.lua's check makes "skip"
    the rare reply of a job canceled (or ended by a duplicate delivery) in the instant between
    the two, and such a job has run: that is logged.

    The reply is read before anything else is written about the job (the outcome goes through
    another connection, and must reach Redis after the start)."""
    failure: BaseException | None = None
    with contextlib.ExitStack() as held:
        try:
            connection = held.enter_context(checked_out(get_redis()))
            started = records.SentStart(
                connection, job_id, payload, hard_time_limit(payload), worker
            )
        except BrokerUnreachable as exc:
            raise NotStarted(str(exc)) from exc
        try:
            result = run_attempt(job_id, payload, last_attempt=last_attempt)
        except BaseException as exc:  # re-raised below, once the connection is clean again
            failure = exc
        try:
            decision = started.decision()
        except BrokerUnreachable:
            decision = None
        if decision is None:
            logger.warning("job %s: the reply to its start was lost with Redis", job_id)
        elif decision.skips:
            logger.warning("job %s: its record said %s as it started; it ran",
                           job_id, decision.name.lower())  # fmt: skip
    if failure is not None:
        raise failure
    return result


def start_checked(request: Any) -> bool:
    """Whether reserve.lua found this delivery startable as it took it. A message with an ETA
    (a retry's countdown) waited in the worker since, so it is checked again at its start."""
    properties = getattr(request, "properties", None) or {}
    return properties.get(START_CHECKED) is True and not getattr(request, "eta", None)


# What execute_job returns when its FINISH script also settled the message (see finish.lua).
SETTLED = "frappe-celery:message-settled"


def was_settled(retval: Any) -> bool:
    """Whether a task's return value, as the pool hands it to the main process, is SETTLED.

    Celery's prefork pool sends the main process ``saferepr(retval)``, other pools the value.
    """
    return retval in (SETTLED, repr(SETTLED))


class JobRequest(Request):  # type: ignore[misc]
    """Records what the pool child cannot: a hard time-limit kill and a lost worker.

    Runs in the worker's main process. Released Celery versions have not always called
    ``Task.on_failure`` after a hard kill, so status and callbacks must not depend on it.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # A job's body is ([], payload, embed): anything else never reaches the pool, where the
        # call would fail before execute_job could record why (Celery's consumer drops it, and
        # worker/process.py's Consumer fails the job's record).
        if not isinstance(self.kwargs, dict) or self.args not in ((), []):
            raise InvalidTaskError("its body is not [[], {job payload}, {embed}]")
        # Celery's worker subclasses this class per task with its own on_success, which does not
        # call ours; the pool is handed ``self.on_success`` at dispatch, so it is wrapped here.
        request: Any = self  # Celery's Request is untyped
        succeed = type(request).on_success

        def settle_then_succeed(failed__retval__runtime: Any, **kw: Any) -> None:
            failed, retval, _runtime = failed__retval__runtime
            if not failed and was_settled(retval):
                # The job's FINISH script removed the message from kombu's unacked hash: the
                # ack that follows only updates the channel's own bookkeeping.
                mark_settled = getattr(self.message.channel.qos, "mark_settled", None)
                if mark_settled is not None:
                    mark_settled(self.message.delivery_tag)
            succeed(self, failed__retval__runtime, **kw)

        request.on_success = settle_then_succeed

    def cancel(self, pool: Any, signal: Any = None, **kwargs: Any) -> None:
        """Celery's cancel of a running job when the broker connection is lost. Celery marks the
        job cancelled only if its child already reported the start; otherwise the child's
        termination is taken for a revoke, and a revoke acks the message (once the worker has
        reconnected): the job would be neither run again nor finished. Marked here whatever
        the timing, so the message is left to the transport, which returns it (orphan_held)."""
        self._already_cancelled = True
        super().cancel(pool, signal=signal, **kwargs)  # emit_retry: Celery >= 5.5 only

    def on_timeout(self, soft: bool, timeout: float) -> None:
        super().on_timeout(soft, timeout)
        if soft:
            return
        payload: JobPayload = expand_payload(self.kwargs)  # type: ignore[assignment]
        message = f"hard time limit ({timeout:g} s) exceeded: the job was killed"
        killed = Outcome.failed(TimeoutError(message), "TimeLimitExceeded", message)
        conclude(self.id, payload, killed, worker=self.hostname, patient=False)

    def on_failure(
        self, exc_info: ExceptionInfo, send_failed_event: bool = True, return_ok: bool = False
    ) -> None:
        exc = getattr(exc_info.exception, "exc", exc_info.exception)
        if (
            isinstance(exc, WorkerLostError)
            and self.task.acks_late
            and (self.task.reject_on_worker_lost)
        ):
            # The broker gets the message back and another child runs it again.
            payload = expand_payload(self.kwargs)
            records.requeue(self.id, payload["token"], payload["queue"], worker="")
        super().on_failure(exc_info, send_failed_event=send_failed_event, return_ok=return_ok)


def refuse_malformed(job_id: str, payload: dict[str, Any], problem: str) -> None:
    """A message whose payload is not a JobPayload never runs: logged, and its record (if the
    message names one, with its token) failed with the reason."""
    reason = f"malformed job message: {problem}; it was not run"
    logger.error("job %s: %s", job_id, reason)
    token, queue = payload.get("token"), payload.get("queue")
    if isinstance(token, str) and isinstance(queue, str):
        records.fail(job_id, token, queue, "MalformedMessage", reason)


# The task is registered on the app as this module is imported: by the worker and beat, which
# import it at start (celery_app.WORKER_MODULES), and by frappe_celery.execute_job.
app = get_app()


# No result backend: statuses and results live in our own records. Celery still writes to a
# task's backend when it cancels a running job on a lost connection (worker_cancel_long_running_
# tasks_on_connection_loss); with Redis down that write raised and stopped the whole worker.
@app.task(
    bind=True, name=TASK_NAME, Request=JobRequest, ignore_result=True,
    backend=DisabledBackend(app),
)  # fmt: skip
def execute_job(self: Task, **payload: Any) -> str | None:
    """The generic task every job runs through (the method travels as a dotted path)."""
    carried = expand_payload(payload)
    job_id: str = self.request.id
    problem = payload_problem(carried)
    if problem is not None:
        refuse_malformed(job_id, carried, problem[1])
        return None
    job: JobPayload = carried  # type: ignore[assignment]
    # This run's worker: its end is recorded only while the record still names it (finish.lua).
    worker = self.request.hostname or HOSTNAME
    checked = start_checked(self.request)
    if not checked:
        try:
            decision = start_or_skip(job_id, job, worker)
        except BrokerUnreachable as exc:
            raise hand_back(job_id, exc) from exc
        if decision.skips:
            return None
    attempt = self.request.retries
    # The retry policy is looked up only when it matters: past Frappe's 5 retries, or on failure.
    policy: RetryPolicy | None = None
    last_attempt = attempt >= MAX_RETRIES and attempt >= max_attempts(retry_policy_for(job))
    try:
        if checked:
            result = run_while_starting(job_id, job, worker, last_attempt=last_attempt)
        else:
            result = run_attempt(job_id, job, last_attempt=last_attempt)
    except NotStarted as exc:
        raise hand_back(job_id, exc) from exc
    except Exception as exc:
        policy = retry_policy_for(job)
        outcome = decide(attempt, exc=exc, policy=policy)
    else:
        outcome = decide(attempt, result=result)
    # A finished job's FINISH script also settles its message (one round trip less per job);
    # the main process learns it from the return value (JobRequest.on_success).
    properties = getattr(self.request, "properties", None) or {}
    delivery_tag = (properties.get("delivery_tag") or "") if outcome.status == "finished" else ""
    conclude(job_id, job, outcome, attempt=attempt, worker=worker, delivery_tag=delivery_tag)
    if outcome.status == "retry":
        # Celery's retry republishes with a countdown: the worker never sleeps.
        raise self.retry(
            exc=outcome.exc,
            countdown=outcome.retry_in,
            max_retries=max_attempts(policy),
            queue=job["queue"],
            priority=(self.request.delivery_info or {}).get("priority"),
        ) from outcome.exc
    if outcome.exc is not None:  # failed: Celery logs it and acks the message
        raise outcome.exc
    return SETTLED if delivery_tag else None


@signals.task_revoked.connect
def record_revoked(sender: Any = None, request: Any = None, **info: Any) -> None:
    """A revoked job never runs: record it canceled, which frees its id."""
    if getattr(sender, "name", None) != TASK_NAME or request is None:
        return
    payload = expand_payload(request.kwargs)
    how = (
        "terminated" if info.get("terminated") else "expired" if info.get("expired") else "revoked"
    )
    records.cancel(request.id, payload["token"], payload["queue"], f"{how} by Celery")


__all__ = ["JobRequest", "execute_job"]
