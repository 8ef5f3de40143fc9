"""Worker side: the one generic Celery task and the execution path every job takes.

Order of one attempt, as in Frappe's ``execute_job``::

    record started ─► context.setup(site, user) ─► before_job hooks ─► method(**kwargs)
    ─► commit (rollback on error) ─► after_job hooks ─► context.teardown
    ─► record finished / failed (or queued again for a retry) ─► on_success / on_failure

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
import socket
import time
import traceback
from collections.abc import Callable
from typing import Any, TypeVar

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
from frappe_celery.caller.transaction import Transaction, enter_scope
from frappe_celery.celery_app import app
from frappe_celery.config import MAX_RETRIES, get_settings
from frappe_celery.connection import checked_out, get_redis
from frappe_celery.context import JobContext, get_job_context
from frappe_celery.errors import BrokerUnreachable, RetryBackgroundJobError
from frappe_celery.hooks import run_hooks
from frappe_celery.job import Job, _current_job_id
from frappe_celery.methods import import_trusted, resolve_job_callable
from frappe_celery.records import StartDecision

logger = logging.getLogger(__name__)

_HOSTNAME = socket.gethostname()

T = TypeVar("T")


# A job that ends while Redis restarts still records its outcome: a pool child retries its final
# record write this long (a restart takes seconds) before giving up; the job's message is then
# still held, and runs again once Redis is back (at-least-once).
FINAL_WRITE_PATIENCE = 15.0


def patiently(write: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``write(*args, **kwargs)``, retried while Redis cannot be reached, for at most
    FINAL_WRITE_PATIENCE seconds."""
    deadline = time.monotonic() + FINAL_WRITE_PATIENCE
    while True:
        try:
            return write(*args, **kwargs)
        except BrokerUnreachable:
            if time.monotonic() >= deadline:
                raise
            logger.warning("Redis unreachable while recording a job's outcome; retrying")
            time.sleep(0.5)


def retry_exception_classes() -> tuple[type[BaseException], ...]:
    """RetryBackgroundJobError plus the configured ``retry_exceptions``."""
    configured = tuple(import_trusted(path) for path in get_settings().retry_exceptions)
    return (RetryBackgroundJobError, *configured)


def hard_time_limit(payload: JobPayload) -> float:
    return float(payload["timeout"]) + get_settings().time_limit_grace


def run_attempt(job_id: str, payload: JobPayload, *, last_attempt: bool) -> Any:
    """One attempt, as the job context runs it. Returns the method's value."""
    return get_job_context().run(job_id, payload, last_attempt=last_attempt)


def run_generic_attempt(context: JobContext, job_id: str, payload: JobPayload) -> Any:
    """One attempt: context, hooks, the call, commit or rollback. Returns the method's value."""
    method_path, kwargs = payload["method"], payload["kwargs"]
    result = None
    # The job is the transaction: what it enqueues with enqueue_after_commit is published once
    # its work is committed, and dropped if it fails.
    after_commit = Transaction()
    context.setup(payload["site"], payload["user"])
    try:
        try:
            with enter_scope(after_commit):
                run_hooks("before_job", method=method_path, kwargs=kwargs, transaction_type="job")
                method = resolve_job_callable(method_path)
                current = _current_job_id.set(job_id)
                try:
                    result = method(**kwargs)
                finally:
                    _current_job_id.reset(current)
            context.commit()
            after_commit.commit()
        except BaseException:
            after_commit.rollback()
            context.rollback()
            raise
        finally:
            run_hooks("after_job", method=method_path, kwargs=kwargs, result=result)
    finally:
        context.teardown()
    return result


def run_callback(job_id: str, path: str | None, *args: Any) -> None:
    """Call an on_success / on_failure callback with RQ's signature; never let it raise."""
    if not path:
        return
    try:
        callback: Callable[..., Any] = resolve_job_callable(path)
        callback(Job(job_id), get_redis(), *args)
    except Exception:
        logger.exception("job %s: callback %s raised; the job's outcome is unchanged", job_id, path)


def record_failure(
    job_id: str, payload: JobPayload, exc: BaseException, tb: str, run_by: str = ""
) -> None:
    exc_type = type(exc).__name__
    records.fail(job_id, payload["token"], payload["queue"], exc_type, tb, run_by)
    run_callback(job_id, payload["on_failure"], type(exc), exc, exc.__traceback__)


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


def start_or_skip(job_id: str, payload: JobPayload, worker: str) -> StartDecision:
    decision = records.start(job_id, payload, hard_time_limit(payload), worker)
    if decision in (StartDecision.CANCELED, StartDecision.ALREADY_DONE):
        logger.info("job %s: skipped, its record says %s", job_id, decision.name.lower())
    return decision


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
        elif decision in (StartDecision.CANCELED, StartDecision.ALREADY_DONE):
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


def run_in_process(job_id: str, payload: JobPayload) -> Job:
    """``is_async=False``: the worker's path, run here and now; returns the finished handle.

    As RQ's synchronous mode does, a failure is recorded and then re-raised, unless an
    on_failure callback was given (it has handled it; the failed handle is returned). Retries
    wait here (Frappe's 1, 2, ... 5 s), since no worker is involved.
    """
    start_or_skip(job_id, payload, f"in-process@{_HOSTNAME}")
    retryable = retry_exception_classes()
    attempt = 0
    while True:
        try:
            result = run_attempt(job_id, payload, last_attempt=attempt >= MAX_RETRIES)
        except retryable as exc:
            if attempt >= MAX_RETRIES:
                return _fail_in_process(job_id, payload, exc)
            attempt += 1
            records.requeue(
                job_id, payload["token"], payload["queue"], time.time() + attempt, retries=attempt
            )
            time.sleep(attempt)
            start_or_skip(job_id, payload, f"in-process@{_HOSTNAME}")
            continue
        except Exception as exc:
            return _fail_in_process(job_id, payload, exc)
        records.finish(job_id, payload["token"], payload["queue"], result)
        run_callback(job_id, payload["on_success"], result)
        return Job(job_id)


def _fail_in_process(job_id: str, payload: JobPayload, exc: BaseException) -> Job:
    record_failure(job_id, payload, exc, traceback.format_exc())
    if payload["on_failure"]:
        return Job(job_id)
    raise exc


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
        # celery_app.Consumer fails the job's record).
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
        payload = expand_payload(self.kwargs)
        message = f"hard time limit ({timeout:g} s) exceeded: the job was killed"
        exc = TimeoutError(message)
        records.fail(self.id, payload["token"], payload["queue"], "TimeLimitExceeded", message,
                     run_by=self.hostname)  # fmt: skip
        run_callback(self.id, payload["on_failure"], type(exc), exc, None)

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
    worker = self.request.hostname or _HOSTNAME
    checked = start_checked(self.request)
    if not checked:
        try:
            decision = start_or_skip(job_id, job, worker)
        except BrokerUnreachable as exc:
            raise hand_back(job_id, exc) from exc
        if decision in (StartDecision.CANCELED, StartDecision.ALREADY_DONE):
            return None
    attempt = self.request.retries
    last_attempt = attempt >= MAX_RETRIES
    try:
        if checked:
            result = run_while_starting(job_id, job, worker, last_attempt=last_attempt)
        else:
            result = run_attempt(job_id, job, last_attempt=last_attempt)
    except NotStarted as exc:
        raise hand_back(job_id, exc) from exc
    except retry_exception_classes() as exc:
        if attempt < MAX_RETRIES:
            countdown = attempt + 1
            patiently(
                records.requeue, job_id, job["token"], job["queue"], time.time() + countdown,
                retries=attempt + 1,
            )  # fmt: skip
            # Celery's retry republishes with a countdown: the worker never sleeps.
            raise self.retry(
                exc=exc,
                countdown=countdown,
                max_retries=MAX_RETRIES,
                queue=job["queue"],
                priority=(self.request.delivery_info or {}).get("priority"),
            ) from exc
        patiently(record_failure, job_id, job, exc, traceback.format_exc(), worker)
        raise
    except Exception as exc:
        patiently(record_failure, job_id, job, exc, traceback.format_exc(), worker)
        raise
    # The message is settled by the FINISH script itself (one round trip less per job); the
    # main process learns it from the return value (JobRequest.on_success).
    delivery_tag = (getattr(self.request, "properties", None) or {}).get("delivery_tag") or ""
    patiently(records.finish, job_id, job["token"], job["queue"], result, delivery_tag, worker)
    run_callback(job_id, job["on_success"], result)
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


__all__ = ["JobRequest", "execute_job", "run_in_process"]
