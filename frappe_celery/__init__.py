"""frappe-celery: Frappe's background jobs (``frappe.enqueue``, ``scheduler_events``) on Celery.

``import frappe_celery as frappe`` and keep calling ``frappe.enqueue(...)``; run the jobs with
``celery -A frappe_celery worker -Q short,default,long``.
"""

from __future__ import annotations

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
from frappe_celery.celery_app import app
from frappe_celery.config import get_settings, reload_settings
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
from frappe_celery.job import Job, JobStatus, get_current_job, publish_progress

# Imported for their effects in the worker: the heartbeat and reaper, the stop command, the
# garbage collector frozen at each pool fork.
from frappe_celery.worker import control, maintenance, memory  # noqa: F401
from frappe_celery.worker.task import execute_job

# `celery -A frappe_celery` looks for `app` (or `celery`) in this module.
celery = app

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
    "set_document_loader",
    "set_job_context",
    "transaction_scope",
    "validate_queue",
]
