"""Alias of :mod:`frappe_celery.builtin_jobs`, kept because its dotted paths travel inside queued
job messages: ``frappe_celery.jobs.run_doc_method`` (enqueue_doc) and
``frappe_celery.jobs.run_bound_method`` (a bound method enqueued in a bench). A message queued
by an earlier version names them, and this version still writes these paths, so that a worker
of the previous version runs what a caller of this one enqueues while a fleet is upgraded.
"""

from __future__ import annotations

from frappe_celery.builtin_jobs import run_bound_method, run_doc_method

__all__ = ["run_bound_method", "run_doc_method"]
