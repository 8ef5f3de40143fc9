"""Pluggable pieces a framework provides: the job context and the document loader.

Outside Frappe both are trivial; the Frappe integration supplies real ones (init, connect,
set_user, commit, rollback, destroy; ``frappe.get_doc``). Configure them by dotted path
(``FRAPPE_CELERY_JOB_CONTEXT`` / ``FRAPPE_CELERY_DOCUMENT_LOADER`` or the ``frappe_celery``
block of the config file) so that workers load the same ones, or at run time with
:func:`set_job_context` / :func:`set_document_loader` in code every worker imports.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, ClassVar

from frappe_celery.config import get_settings
from frappe_celery.errors import DocumentLoaderNotConfigured
from frappe_celery.methods import import_trusted


class JobContext:
    """What a framework does around every job. The default does nothing.

    The enqueue side asks :meth:`current_site` and :meth:`current_user` to capture who
    enqueued, and :meth:`encode_kwargs` to turn the framework's own argument types into JSON;
    the worker side runs one attempt with :meth:`run`, whose default calls :meth:`setup` before
    the before_job hooks, :meth:`commit` after a successful call or :meth:`rollback` after a
    failed one, and :meth:`teardown` last. A framework with its own execution order (Frappe's
    ``execute_job``) overrides :meth:`run` instead.
    """

    def run(self, job_id: str, payload: Any, *, last_attempt: bool) -> Any:
        """Run one attempt of the job in the framework's own order and return the method's
        value; override it to replace the generic order (Frappe's ``execute_job`` order).

        Not overridden, the worker runs the generic order itself (``worker/attempt.py``:
        :meth:`setup`, the before_job hooks, the call, :meth:`commit` or :meth:`rollback`, the
        after_job hooks, :meth:`teardown`), so that this shared module needs nothing of the
        worker. Raise :class:`RetryBackgroundJobError` (or a configured retry exception) to be
        retried; ``last_attempt`` says no retry is left.
        """
        raise NotImplementedError(
            "JobContext.run is the hook a framework overrides; the generic order is "
            "frappe_celery.worker.attempt.run_attempt"
        )

    def encode_call(
        self, method: Any, kwargs: dict[str, Any], job_name: str | None
    ) -> tuple[Any, dict[str, Any], str | None]:
        """The job's method, keyword arguments and display name as they travel. The default
        encodes the kwargs (:meth:`encode_kwargs`); a framework may turn a method it can carry
        (Frappe: a Document's bound method) into a function and its arguments.
        """
        return method, self.encode_kwargs(kwargs), job_name

    def encode_kwargs(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        """The job's keyword arguments as they travel (JSON types, plus kombu's tagged ones).

        Raise :class:`UnserializableArgumentError` naming an argument that cannot travel.
        """
        return kwargs

    # Job functions that call a document's method named by their arguments, with the names of
    # the doctype and method arguments: enqueue and the worker ask doc_method_refusal about them.
    doc_method_jobs: ClassVar[dict[str, tuple[str, str]]] = {
        "frappe_celery.jobs.run_doc_method": ("doctype", "doc_method")
    }

    def doc_method_refusal(self, doctype: Any, method: Any) -> str | None:
        """Why a job may not call ``method`` of a ``doctype`` document, or None if it may.
        The default allows any non-dunder name (a document loader's objects are the user's);
        Frappe allows whitelisted methods and the controller's own."""
        return None

    def current_site(self) -> str | None:
        return None

    def current_user(self) -> str | None:
        return None

    def setup(self, site: str, user: str | None) -> None:
        """Enter the job's site as its user (Frappe: init, connect, set_user)."""

    def commit(self) -> None:
        """Persist the job's work (Frappe: frappe.db.commit)."""

    def rollback(self) -> None:
        """Undo the job's work after a failure (Frappe: frappe.db.rollback)."""

    def teardown(self) -> None:
        """Leave the site (Frappe: frappe.destroy)."""


def doc_method_call_refusal(
    context: JobContext, method_path: str, kwargs: dict[str, Any]
) -> tuple[str, Any, str] | None:
    """(argument, given, reason) when ``method_path(**kwargs)`` would call a document method
    the context refuses (``run_doc_method``, Frappe's ``execute_action``), else None."""
    names = context.doc_method_jobs.get(method_path)
    if names is None:
        return None
    doctype_arg, method_arg = names
    reason = context.doc_method_refusal(kwargs.get(doctype_arg), kwargs.get(method_arg))
    return None if reason is None else (method_arg, kwargs.get(method_arg), reason)


DocumentLoader = Callable[[str, str | None], Any]

_lock = threading.Lock()
_context: JobContext | None = None
_loader: DocumentLoader | None = None


def set_job_context(context: JobContext | None) -> None:
    """Install a JobContext for this process (None: back to the configured one)."""
    global _context
    with _lock:
        _context = context


def get_job_context() -> JobContext:
    global _context
    if _context is None:
        with _lock:
            if _context is None:
                path = get_settings().job_context
                _context = import_trusted(path)() if path else JobContext()
    return _context


def set_document_loader(loader: DocumentLoader | None) -> None:
    """Install ``loader(doctype, name) -> document`` for enqueue_doc in this process."""
    global _loader
    with _lock:
        _loader = loader


def get_document_loader() -> DocumentLoader:
    """The document loader; raises :class:`DocumentLoaderNotConfigured` when there is none."""
    if _loader is not None:
        return _loader
    path = get_settings().document_loader
    if not path:
        raise DocumentLoaderNotConfigured(
            "enqueue_doc needs a document loader: set FRAPPE_CELERY_DOCUMENT_LOADER (or "
            "'document_loader' in the frappe_celery block of the config file) to the dotted path "
            "of a function (doctype, name) -> document, or call "
            "frappe_celery.set_document_loader() in a module the worker imports"
        )
    loader: DocumentLoader = import_trusted(path)
    return loader
