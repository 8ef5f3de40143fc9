"""One attempt of a job, as every job runs it, in a worker or in the caller (``enqueue(...,
is_async=False)``). Nothing here imports Celery's worker: the Celery task around it is task.py.

Order of one attempt, as in Frappe's ``execute_job``::

    record started ─► context.setup(site, user) ─► before_job hooks ─► method(**kwargs)
    ─► commit (rollback on error) ─► after_job hooks ─► context.teardown
    ─► record finished / failed (or queued again for a retry) ─► on_success / on_failure

A job context that overrides :meth:`JobContext.run` (Frappe's) replaces the middle part, from
setup to teardown, with its own order.
"""

from __future__ import annotations

import logging
import socket
import time
import traceback
from collections.abc import Callable
from typing import Any, TypeVar

from frappe_celery import records
from frappe_celery.broker.wire import JobPayload
from frappe_celery.caller.transaction import Transaction, enter_scope
from frappe_celery.config import MAX_RETRIES, get_settings
from frappe_celery.connection import get_redis
from frappe_celery.context import JobContext, get_job_context
from frappe_celery.errors import BrokerUnreachable, RetryBackgroundJobError
from frappe_celery.hooks import run_hooks
from frappe_celery.job import Job, _current_job_id
from frappe_celery.methods import import_trusted, resolve_job_callable
from frappe_celery.records import StartDecision

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
    start_or_skip(job_id, payload, f"in-process@{HOSTNAME}")
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
            start_or_skip(job_id, payload, f"in-process@{HOSTNAME}")
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


__all__ = ["run_attempt", "run_in_process"]
