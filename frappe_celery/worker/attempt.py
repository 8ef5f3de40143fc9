"""One attempt of a job, as every job runs it, in a worker or in the caller (``enqueue(...,
is_async=False)``). Nothing here imports Celery's worker: the Celery task around it is task.py.

One attempt is a fixed sequence of named steps, each written once::

    start (start_or_skip / task.run_while_starting)
    ─► run_attempt: context.setup(site, user) ─► before_job hooks ─► method(**kwargs)
                    ─► commit (rollback on error) ─► after_job hooks ─► context.teardown
    ─► decide: finished, failed, or retried (the retry rule, once)
    ─► conclude: the record (finished / failed / queued for the retry), then on_success or
                 on_failure

A job context that overrides :meth:`JobContext.run` (Frappe's) replaces run_attempt's order
with its own. The worker (task.py) and the caller (:func:`run_in_process`) differ only in what
they do after conclude: the worker has Celery republish a retry, the caller waits and runs it.
What ends an attempt from outside (a hard time limit, a lost pool child) is concluded by the
worker's main process (task.JobRequest) with the same :func:`conclude`.
"""

from __future__ import annotations

import logging
import socket
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from frappe_celery import records
from frappe_celery.broker.wire import JobPayload
from frappe_celery.caller.transaction import Transaction, enter_scope
from frappe_celery.config import MAX_RETRIES, get_settings
from frappe_celery.connection import get_redis
from frappe_celery.context import JobContext, get_job_context
from frappe_celery.errors import BrokerUnreachable, RetryBackgroundJobError
from frappe_celery.hooks import retry_policies, run_hooks
from frappe_celery.job import Job, _current_job_id
from frappe_celery.methods import import_trusted, resolve_job_callable
from frappe_celery.records import StartDecision
from frappe_celery.retries import RetryPolicy, policy_of

logger = logging.getLogger(__name__)


HOSTNAME = socket.gethostname()


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
    """One attempt, in the job context's own order if it has one (it overrides
    :meth:`JobContext.run`, as Frappe's does), else in the generic order
    (:func:`run_generic_attempt`). Returns the method's value."""
    context = get_job_context()
    if type(context).run is JobContext.run:
        return run_generic_attempt(context, job_id, payload)
    return context.run(job_id, payload, last_attempt=last_attempt)


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


@dataclass(frozen=True)
class Outcome:
    """What one attempt came to: decided once (:func:`decide`), recorded once (:func:`conclude`)."""

    status: Literal["finished", "failed", "retry"]
    result: Any = None  # the method's return value (finished)
    exc: BaseException | None = None  # what it raised (failed, retry)
    exc_type: str = ""  # the class name the record keeps (failed)
    traceback: str = ""
    retry_in: float = 0  # seconds until the next attempt (retry)

    @classmethod
    def failed(cls, exc: BaseException, exc_type: str = "", tb: str | None = None) -> Outcome:
        if tb is None:
            tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        return cls("failed", exc=exc, exc_type=exc_type or type(exc).__name__, traceback=tb)


def decide(
    attempt: int,
    *,
    result: Any = None,
    exc: BaseException | None = None,
    policy: RetryPolicy | None = None,
) -> Outcome:
    """The retry rules, in one place. Frappe's first: an attempt that raised
    RetryBackgroundJobError (or a configured ``retry_exceptions`` class) with attempts left is
    retried after ``attempt + 1`` seconds (1, 2, ... 5). Then the job function's own ``policy``
    (retries.py), if it has one and covers the exception: retried after its backoff while it
    has retries left. Any other exception fails the job; no exception finishes it. ``attempt``
    counts from 0."""
    if exc is None:
        return Outcome("finished", result=result)
    if isinstance(exc, retry_exception_classes()) and attempt < MAX_RETRIES:
        return Outcome("retry", exc=exc, retry_in=attempt + 1)
    if policy is not None and attempt < policy.max_retries and policy.covers(exc):
        return Outcome("retry", exc=exc, retry_in=policy.delay(attempt))
    return Outcome.failed(exc)


def retry_policy_for(payload: JobPayload) -> RetryPolicy | None:
    """The job function's retry policy (retries.py): its decorator's, else job_retries'."""
    method = payload["method"]
    try:
        function = resolve_job_callable(method)
    except Exception:  # it failed to import: that failure is the job's, and is not retried
        return None
    return policy_of(method, function, retry_policies())


def max_attempts(policy: RetryPolicy | None) -> int:
    """How many retries the worker may publish for a job: Frappe's 5, or more by its policy."""
    return max(MAX_RETRIES, policy.max_retries if policy else 0)


def conclude(
    job_id: str,
    payload: JobPayload,
    outcome: Outcome,
    *,
    attempt: int = 0,
    worker: str = "",
    delivery_tag: str = "",
    patient: bool = True,
) -> None:
    """The outcome onto the job's record, then its callback, each once. ``patient``: the record
    write is retried while Redis restarts (:func:`patiently`), as a worker must; the caller's
    in-process run fails at once instead. ``delivery_tag``: the finished job's FINISH script
    also settles its message."""
    write = patiently if patient else _at_once
    token, queue = payload["token"], payload["queue"]
    if outcome.status == "retry":
        assert outcome.exc is not None
        failed = Outcome.failed(outcome.exc)
        attempts = write(records.attempts_with, job_id, attempt, failed.exc_type, failed.traceback)
        write(records.requeue, job_id, token, queue, time.time() + outcome.retry_in,
              retries=attempt + 1, attempts=attempts)  # fmt: skip
    elif outcome.status == "failed":
        assert outcome.exc is not None
        write(records.fail, job_id, token, queue, outcome.exc_type, outcome.traceback, worker)
        exc = outcome.exc
        run_callback(job_id, payload["on_failure"], type(exc), exc, exc.__traceback__)
    else:
        write(records.finish, job_id, token, queue, outcome.result, delivery_tag, worker)
        run_callback(job_id, payload["on_success"], outcome.result)


def _at_once(write: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    return write(*args, **kwargs)


def run_callback(job_id: str, path: str | None, *args: Any) -> None:
    """Call an on_success / on_failure callback with RQ's signature; never let it raise."""
    if not path:
        return
    try:
        callback: Callable[..., Any] = resolve_job_callable(path)
        callback(Job(job_id), get_redis(), *args)
    except Exception:
        logger.exception("job %s: callback %s raised; the job's outcome is unchanged", job_id, path)


def start_or_skip(job_id: str, payload: JobPayload, worker: str) -> StartDecision:
    decision = records.start(job_id, payload, hard_time_limit(payload), worker)
    if decision.skips:
        logger.info("job %s: skipped, its record says %s", job_id, decision.name.lower())
    return decision


def run_in_process(job_id: str, payload: JobPayload) -> Job:
    """``is_async=False``: the worker's path, run here and now; returns the finished handle.

    As RQ's synchronous mode does, a failure is recorded and then re-raised, unless an
    on_failure callback was given (it has handled it; the failed handle is returned). Retries
    wait here (Frappe's 1, 2, ... 5 s), since no worker is involved.
    """
    attempt = 0
    while True:
        start_or_skip(job_id, payload, f"in-process@{HOSTNAME}")
        last_attempt = attempt >= MAX_RETRIES and attempt >= max_attempts(retry_policy_for(payload))
        try:
            result = run_attempt(job_id, payload, last_attempt=last_attempt)
        except Exception as exc:
            outcome = decide(attempt, exc=exc, policy=retry_policy_for(payload))
        else:
            outcome = decide(attempt, result=result)
        conclude(job_id, payload, outcome, attempt=attempt, patient=False)
        if outcome.status != "retry":
            break
        time.sleep(outcome.retry_in)
        attempt += 1
    if outcome.status == "failed" and not payload["on_failure"]:
        assert outcome.exc is not None
        raise outcome.exc
    return Job(job_id)


__all__ = [
    "Outcome",
    "conclude",
    "decide",
    "max_attempts",
    "retry_policy_for",
    "run_attempt",
    "run_in_process",
]
