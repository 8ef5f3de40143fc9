"""Running inside a Frappe bench: Frappe's own site context, documents and transactions.

In a bench (a process whose current folder is the bench's ``sites/``, see ``bench_files.py``) the
settings select :class:`FrappeJobContext` and :func:`get_doc` by themselves; the switch
(``switch.py``) sends Frappe's own enqueue call sites here. What this module provides:

* every job runs as Frappe's ``execute_job`` runs it, in that order (:meth:`FrappeJobContext.run`);
* the enqueue side captures ``frappe.local.site`` and ``frappe.session.user``, and turns
  Documents, ``frappe._dict`` and callables in kwargs into JSON (``arguments.py``);
* ``enqueue_doc`` loads documents with ``frappe.get_doc``;
* ``enqueue_after_commit`` registers on ``frappe.db.after_commit`` whenever a database
  connection is open (Frappe discards those callbacks on rollback).
"""

from __future__ import annotations

import contextvars
import os
from pathlib import Path
from typing import Any, ClassVar

from frappe_celery.bench_files import Bench
from frappe_celery.broker.wire import JobPayload
from frappe_celery.caller.publish import Publication, publish
from frappe_celery.caller.transaction import register_scope_finder
from frappe_celery.config import get_settings
from frappe_celery.context import (
    JobContext,
    doc_method_call_refusal,
    set_document_loader,
    set_job_context,
)
from frappe_celery.errors import MethodNotAllowed, RetryBackgroundJobError, SiteNotFound
from frappe_celery.integrations.frappe import arguments, doc_methods
from frappe_celery.job import _current_job_id
from frappe_celery.methods import resolve_job_callable


def _frappe() -> Any:
    import frappe  # the one place that imports Frappe

    return frappe


# The payload of the job running in this context, for rq.get_current_job() (see rq_compat.py).
running_job: contextvars.ContextVar[tuple[str, JobPayload] | None] = contextvars.ContextVar(
    "frappe_celery_running_frappe_job", default=None
)


class FrappeJobContext(JobContext):
    """Frappe's site context around every job, in the order of Frappe's ``execute_job``."""

    def __init__(self) -> None:
        # A bench's settings select this class by path: its after-commit scope comes with it.
        register_scope_finder(find_frappe_scope)

    # Frappe's own document-method jobs (enqueue_doc's, queue_action's) get the same check.
    doc_method_jobs: ClassVar[dict[str, tuple[str, str]]] = {
        **JobContext.doc_method_jobs,
        **doc_methods.DOC_METHOD_JOBS,
    }

    def doc_method_refusal(self, doctype: Any, method: Any) -> str | None:
        return doc_methods.refusal(_frappe(), doctype, method)

    def current_site(self) -> str | None:
        return getattr(_frappe().local, "site", None)

    def current_user(self) -> str | None:
        session = getattr(_frappe().local, "session", None)
        return getattr(session, "user", None)

    def encode_kwargs(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        return arguments.encode_kwargs(kwargs)

    def encode_call(
        self, method: Any, kwargs: dict[str, Any], job_name: str | None
    ) -> tuple[Any, dict[str, Any], str | None]:
        return arguments.encode_call(method, kwargs, job_name)

    def run(self, job_id: str, payload: Any, *, last_attempt: bool) -> Any:
        """One attempt, as Frappe's ``execute_job(site, method, event, job_name, kwargs, user,
        is_async)`` does it: ``frappe.init(site, force=True)``, ``connect``, ``set_user``,
        ``frappe.local.job``, ``before_job`` hooks, the method, commit (rollback and an Error
        Log on failure), ``after_job`` hooks and ``frappe.local.job.after_job`` callbacks,
        ``frappe.destroy()``.

        Where Frappe sleeps and calls itself again on a deadlock, a lock wait timeout or
        ``frappe.RetryBackgroundJobError``, this raises :class:`RetryBackgroundJobError` and
        the worker retries through Celery (1, 2, ... 5 s later, 5 times, as Frappe) without
        holding a pool process meanwhile. The Error Log is written, and committed, when no
        retry is left.
        """
        frappe = _frappe()
        job: JobPayload = payload
        site, method_name, user = job["site"], job["method"], job["user"]
        is_async = job["is_async"]
        if is_async:
            _check_site(site)
            frappe.init(site, force=True)
        try:
            if is_async:
                frappe.connect()
                if os.environ.get("CI"):
                    frappe.flags.in_test = True  # as Frappe's execute_job does
                if user:
                    frappe.set_user(user)
            # Resolved under frappe-celery's allowlist (the bench's apps), never frappe.get_attr:
            # the method comes from a message.
            try:
                method = resolve_job_callable(method_name)
                kwargs = arguments.decode_kwargs(job["kwargs"])
                self._check_doc_method(method_name, kwargs)
            except Exception as exc:
                if is_async:  # a refused or missing method leaves Frappe's Error Log too
                    _record_failure(frappe, method_name, exc)
                raise
            return self._call(frappe, job_id, job, method, kwargs, last_attempt=last_attempt)
        finally:
            if is_async:
                frappe.destroy()

    def _check_doc_method(self, method_name: str, kwargs: dict[str, Any]) -> None:
        """Refuse a job that would call a document method Frappe's rule refuses
        (doc_methods.py): a forged message's run_doc_method, execute_action or bound method."""
        refused = doc_method_call_refusal(self, method_name, kwargs)
        from frappe.model.document import Document

        bound_self = kwargs.get("bound_self")
        bound = method_name == arguments.RUN_BOUND_METHOD and isinstance(bound_self, Document)
        if refused is None and bound:
            method = kwargs.get("bound_method")
            reason = self.doc_method_refusal(getattr(bound_self, "doctype", None), method)
            refused = None if reason is None else ("bound_method", method, reason)
        if refused is not None:
            argument, given, reason = refused
            raise MethodNotAllowed(f"{method_name}: {argument}: got {given!r}; {reason}")

    @staticmethod
    def _call(
        frappe: Any,
        job_id: str,
        job: JobPayload,
        method: Any,
        kwargs: dict[str, Any],
        *,
        last_attempt: bool,
    ) -> Any:
        method_name, hook_kwargs = job["method"], kwargs
        if method_name == arguments.RUN_BOUND_METHOD:
            # Frappe's name for a bound method's job (module.Class.method) and its own kwargs.
            method_name, hook_kwargs = job["job_name"], kwargs["bound_kwargs"]
        frappe.local.job = frappe._dict(
            site=job["site"],
            method=method_name,
            job_name=job["job_name"],
            kwargs=hook_kwargs,
            user=job["user"],
            after_job=frappe.utils.CallbackManager(),
        )
        # Imported here: rq (and Frappe) exist only in a bench, while this package is imported
        # by the CLI anywhere.
        from frappe_celery.integrations.frappe.timeouts import install_job_timeout

        install_job_timeout()
        retval = None
        # The current job (rq.get_current_job, frappe_celery.get_current_job) is known to the
        # before_job hooks (frappe.monitor.start reads its id and wait time, Sentry's context
        # its kwargs) and until the after_job hooks have run, as in an RQ worker.
        current = _current_job_id.set(job_id)
        running = running_job.set((job_id, job))
        try:
            for before_job_task in frappe.get_hooks("before_job"):
                frappe.call(
                    before_job_task, method=method_name, kwargs=hook_kwargs,
                    transaction_type="job",
                )  # fmt: skip
            try:
                retval = method(**kwargs)
            except (frappe.db.InternalError, *_retryable_errors(frappe)) as exc:
                frappe.db.rollback()
                retry = isinstance(exc, _retryable_errors(frappe)) or (
                    frappe.db.is_deadlocked(exc) or frappe.db.is_timedout(exc)
                )
                if not retry or last_attempt:
                    _record_failure(frappe, method_name, exc)
                    raise
                after_job = frappe.local.job.after_job
                if hasattr(after_job, "reset"):  # Frappe 16 drops the attempt's callbacks
                    after_job.reset()
                raise RetryBackgroundJobError(f"{method_name}: {exc!r}") from exc
            except Exception as exc:
                frappe.db.rollback()
                _record_failure(frappe, method_name, exc)
                raise
            else:
                frappe.db.commit()
                return retval
            finally:
                for after_job_task in frappe.get_hooks("after_job"):
                    frappe.call(
                        after_job_task, method=method_name, kwargs=hook_kwargs, result=retval
                    )
                frappe.local.job.after_job.run()
        finally:
            _current_job_id.reset(current)
            running_job.reset(running)


def _retryable_errors(frappe: Any) -> tuple[type[BaseException], ...]:
    """What Frappe's execute_job means to retry: deadlocks, lock wait timeouts and
    ``frappe.RetryBackgroundJobError``. ``frappe.db.sql`` raises deadlocks and timeouts as
    ``QueryDeadlockError`` / ``QueryTimeoutError``, which Frappe's own retry branch (catching
    ``frappe.db.InternalError``) never sees; they are retried here."""
    return (frappe.RetryBackgroundJobError, frappe.QueryDeadlockError, frappe.QueryTimeoutError)


def _record_failure(frappe: Any, method_name: str, exc: BaseException) -> None:
    """Frappe's Error Log for a failed job (titled with the method), committed."""
    frappe.log_error(title=method_name)
    add_to_monitor = getattr(frappe.monitor, "add_data_to_monitor", None)
    if add_to_monitor is not None:  # Frappe 16
        add_to_monitor(exception=exc.__class__.__name__)
    frappe.db.commit()


def _check_site(site: str) -> None:
    """Refuse a job for a site this bench does not have (Frappe would fail obscurely)."""
    sites_path = get_settings().sites_path
    if sites_path is None:
        return
    bench = Bench(Path(sites_path))
    if not bench.has_site(site):
        raise SiteNotFound(site, bench.sites(), sites_path)


class FrappeAfterCommitScope:
    def __init__(self, db: Any) -> None:
        self.db = db

    def defer(self, publication: Publication) -> None:
        self.db.after_commit.add(lambda: publish(publication))


def find_frappe_scope() -> FrappeAfterCommitScope | None:
    """The open Frappe transaction, if this process has a database connection."""
    db = getattr(_frappe().local, "db", None)
    return FrappeAfterCommitScope(db) if db is not None else None


def get_doc(doctype: str, name: str | None) -> Any:
    return _frappe().get_doc(doctype, name)


def install() -> None:
    """Use Frappe's context, documents and transactions in this process."""
    set_job_context(FrappeJobContext())
    set_document_loader(get_doc)
