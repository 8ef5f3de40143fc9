"""``frappe.enqueue`` on a switched bench: frappe-celery's enqueue with Frappe's own errors and
fallbacks around it.

* A refused call raises a ``frappe.ValidationError`` subclass (a full queue:
  ``frappe.QueueOverloaded``, HTTP 503, with Frappe's message and title), which is also the
  frappe-celery exception it was (:class:`InvalidArgumentError`, :class:`QueueOverloaded`...),
  and shows in the Desk as Frappe's ``frappe.throw`` does.
* ``is_async=False`` outside tests is Frappe's ``frappe.call``: the method runs here, with no
  commit and no job hooks, and its value is returned (Frappe deprecates it for ``now=True``).
  In tests (``frappe.flags.in_test``) it runs the whole job path in this process, as RQ's
  synchronous queue does.
* During ``bench migrate`` with the queue's Redis unreachable, the job runs inline, as Frappe does.
"""

from __future__ import annotations

import inspect
from typing import Any

from frappe_celery.caller.enqueue import enqueue as core_enqueue
from frappe_celery.caller.enqueue import enqueue_doc as core_enqueue_doc
from frappe_celery.errors import (
    BrokerUnreachable,
    FrappeCeleryError,
    InvalidArgumentError,
    QueueOverloaded,
    UnserializableArgumentError,
)
from frappe_celery.job import Job
from frappe_celery.retention import site_retention

_ENQUEUE = inspect.signature(core_enqueue)
_REFUSALS = (InvalidArgumentError, UnserializableArgumentError, QueueOverloaded)


def _frappe() -> Any:
    import frappe

    return frappe


def enqueue(*args: Any, **kwargs: Any) -> Any:
    """``frappe.enqueue`` (the signature of :func:`frappe_celery.enqueue`), as Frappe behaves."""
    frappe = _frappe()
    arguments = _ENQUEUE.bind(*args, **kwargs).arguments
    method = arguments["method"]
    job_kwargs = {k: v for k, v in arguments.get("kwargs", {}).items() if k != "async"}
    is_async = arguments.get("kwargs", {}).get("async", arguments.get("is_async", True))
    if not arguments.get("now") and not is_async and not frappe.flags.in_test:
        return frappe.call(method, **job_kwargs)
    try:
        job = core_enqueue(*args, **kwargs)
    except BrokerUnreachable:
        if frappe.local.flags.in_migrate:
            print(f"Redis queue is unreachable: Executing {_name(method)} synchronously")
            return frappe.call(method, **job_kwargs)
        raise
    except _REFUSALS as exc:
        raise_as_frappe_error(exc)
        raise  # not reached: raise_as_frappe_error raises
    if isinstance(job, Job):
        keep_as_frappe_conf_says(frappe, job)
    return job


def keep_as_frappe_conf_says(frappe: Any, job: Job) -> None:
    """Frappe hands RQ ``frappe.conf``'s ``rq_results_ttl`` / ``rq_job_failure_ttl`` with each
    job. They are the site's files' (what a job's end reads anyway) unless this process changed
    them in memory: then the job keeps its own (``Job.keep_for``, right after the publish; a
    job that has ended by then gets it then)."""
    conf = frappe.conf or {}
    site = site_retention(getattr(frappe.local, "site", None))
    own = {
        name: value
        for name, key, default in (
            ("results_ttl", "rq_results_ttl", site.results_ttl),
            ("failure_ttl", "rq_job_failure_ttl", site.failure_ttl),
        )
        if type(value := conf.get(key)) is int and value > 0 and value != default
    }
    if own:
        job.keep_for(**own)


def enqueue_doc(*args: Any, **kwargs: Any) -> Any:
    """``frappe.enqueue_doc``, refusing with Frappe's errors as :func:`enqueue` does."""
    try:
        job = core_enqueue_doc(*args, **kwargs)
    except _REFUSALS as exc:
        raise_as_frappe_error(exc)
        raise
    if isinstance(job, Job):
        keep_as_frappe_conf_says(_frappe(), job)
    return job


def _name(method: Any) -> str:
    return method if isinstance(method, str) else f"{method.__module__}.{method.__qualname__}"


_flavoured: dict[tuple[type, type], type[Exception]] = {}


def _frappe_flavoured(ours: type[FrappeCeleryError], theirs: type[Exception]) -> type[Exception]:
    """``ours`` that is also Frappe's ``theirs`` (its HTTP status included), made once. It is
    built from the message alone, as ``frappe.msgprint(raise_exception=cls)`` builds it; the
    original's attributes (argument, given, allowed...) are copied on afterwards."""
    key = (ours, theirs)
    if key not in _flavoured:
        namespace = {"__module__": __name__, "__init__": Exception.__init__}
        _flavoured[key] = type(ours.__name__, (ours, theirs), namespace)
    return _flavoured[key]


def raise_as_frappe_error(exc: FrappeCeleryError) -> None:
    """Raise ``exc`` again as an instance of its own class and of Frappe's (ValidationError, or
    QueueOverloaded on the Frappe lines that have it), through ``frappe.msgprint`` as
    ``frappe.throw`` does, so the Desk shows it. A full queue gets Frappe's own message, title
    and System Health Report action."""
    frappe = _frappe()
    overloaded = isinstance(exc, QueueOverloaded)
    theirs = getattr(frappe, "QueueOverloaded", None) if overloaded else None
    cls = _frappe_flavoured(type(exc), theirs or frappe.ValidationError)
    options: dict[str, Any] = {}
    message = str(exc)
    if isinstance(exc, QueueOverloaded):
        _ = frappe._
        message = _("Too many queued background jobs ({0}). Please retry after some time.")
        message = message.format(exc.limit)
        action = {
            "label": "Monitor System Health",
            "client_action": "frappe.set_route",
            "args": ["Form", "System Health Report"],
        }
        options = {
            "title": _("Queue Overloaded"),
            "primary_action": action if _can_see_system_health(frappe) else None,
        }
    try:
        frappe.msgprint(message, raise_exception=cls, **options)
    except cls as raised:
        raised.__dict__.update(exc.__dict__)
        raise raised from None
    raise cls(message)  # msgprint always raises with raise_exception; kept plain for readers


def _can_see_system_health(frappe: Any) -> bool:
    """Frappe offers the System Health Report to those who may read it (Frappe 16 has it)."""
    if getattr(frappe.local, "db", None) is None:
        return False
    return bool(
        frappe.db.exists("DocType", "System Health Report")
        and frappe.has_permission("System Health Report")
    )
