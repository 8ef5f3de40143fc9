"""frappe-celery: Frappe's background jobs (``frappe.enqueue``, ``scheduler_events``) on Celery.

``import frappe_celery as frappe`` and keep calling ``frappe.enqueue(...)``; run the jobs with
``celery -A frappe_celery worker -Q short,default,long``.

The public names below are loaded when first used (PEP 562), so that importing one module of
the package (``frappe_celery.broker.keys``, say) loads only what that module needs, and a web
process that enqueues never loads the worker's code. ``celery -A frappe_celery`` asks for
``app`` (or ``celery``): the Celery app, built then (celery_app.get_app); the worker and beat
import the worker's modules as they start (celery_app.WORKER_MODULES).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from celery import Celery

    from frappe_celery.broker.lock import LockHeld, job_lock
    from frappe_celery.caller.enqueue import (
        create_job_id,
        enqueue,
        enqueue_doc,
        enqueue_many,
        get_job,
        get_job_status,
        get_queue_list,
        get_queues_timeout,
        is_job_enqueued,
        validate_queue,
    )
    from frappe_celery.caller.transaction import transaction_scope
    from frappe_celery.celery_app import reload_settings
    from frappe_celery.config import get_settings
    from frappe_celery.context import JobContext, set_document_loader, set_job_context
    from frappe_celery.errors import (
        BrokerUnreachable,
        ConfigError,
        DocumentLoaderNotConfigured,
        FrappeCeleryError,
        InvalidArgumentError,
        InvalidJobOperation,
        MethodNotAllowed,
        NotReplicated,
        PublishError,
        QueueOverloaded,
        RetryBackgroundJobError,
        UnserializableArgumentError,
    )
    from frappe_celery.job import Job, JobStatus, get_current_job, publish_progress, set_progress
    from frappe_celery.retries import retry_policy
    from frappe_celery.worker.task import execute_job

    app: Celery
    celery: Celery

# Each public name -> the module that defines it.
_PUBLIC = {
    **dict.fromkeys(("LockHeld", "job_lock"), "frappe_celery.broker.lock"),
    **dict.fromkeys(
        (
            "create_job_id",
            "enqueue",
            "enqueue_doc",
            "enqueue_many",
            "get_job",
            "get_job_status",
            "get_queue_list",
            "get_queues_timeout",
            "is_job_enqueued",
            "validate_queue",
        ),
        "frappe_celery.caller.enqueue",
    ),
    "transaction_scope": "frappe_celery.caller.transaction",
    "reload_settings": "frappe_celery.celery_app",
    "get_settings": "frappe_celery.config",
    **dict.fromkeys(
        ("JobContext", "set_document_loader", "set_job_context"), "frappe_celery.context"
    ),
    **dict.fromkeys(
        (
            "BrokerUnreachable",
            "ConfigError",
            "DocumentLoaderNotConfigured",
            "FrappeCeleryError",
            "InvalidArgumentError",
            "InvalidJobOperation",
            "MethodNotAllowed",
            "NotReplicated",
            "PublishError",
            "QueueOverloaded",
            "RetryBackgroundJobError",
            "UnserializableArgumentError",
        ),
        "frappe_celery.errors",
    ),
    **dict.fromkeys(
        ("Job", "JobStatus", "get_current_job", "publish_progress", "set_progress"),
        "frappe_celery.job",
    ),
    "retry_policy": "frappe_celery.retries",
    # The task: importing it builds the app and registers the task (as a worker does).
    "execute_job": "frappe_celery.worker.task",
}


def __getattr__(name: str) -> Any:
    if name in ("app", "celery"):  # `celery -A frappe_celery` looks for either
        from frappe_celery.celery_app import get_app

        return get_app()
    module = _PUBLIC.get(name)
    if module is None:
        # A module of the package (`frappe_celery.connection`), as after `import` of it.
        if not name.startswith("_"):
            try:
                return importlib.import_module(f"{__name__}.{name}")
            except ModuleNotFoundError as exc:
                if exc.name != f"{__name__}.{name}":
                    raise
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


__all__ = [
    "BrokerUnreachable",
    "ConfigError",
    "DocumentLoaderNotConfigured",
    "FrappeCeleryError",
    "InvalidArgumentError",
    "InvalidJobOperation",
    "Job",
    "JobContext",
    "JobStatus",
    "LockHeld",
    "MethodNotAllowed",
    "NotReplicated",
    "PublishError",
    "QueueOverloaded",
    "RetryBackgroundJobError",
    "UnserializableArgumentError",
    "app",
    "create_job_id",
    "enqueue",
    "enqueue_doc",
    "enqueue_many",
    "execute_job",
    "get_current_job",
    "get_job",
    "get_job_status",
    "get_queue_list",
    "get_queues_timeout",
    "get_settings",
    "is_job_enqueued",
    "job_lock",
    "publish_progress",
    "reload_settings",
    "retry_policy",
    "set_document_loader",
    "set_job_context",
    "set_progress",
    "transaction_scope",
    "validate_queue",
]
