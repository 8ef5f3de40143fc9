"""Job functions the benchmarks enqueue (trivial on purpose: the framework's cost is measured).

Every variant names the same functions: ``frappe_celery.enqueue`` by dotted path (allowed through
``FRAPPE_CELERY_ALLOWED_MODULES=benchmarks``), raw Celery by task name (``celery_raw`` registers
these functions under their dotted paths), RQ through :func:`execute_job`, the stand-in for
Frappe's ``frappe.utils.background_jobs.execute_job``.
"""

from __future__ import annotations

import os
from typing import Any

import redis

# The end-to-end benchmark counts finished jobs here (same cost for every variant).
DONE_KEY = "bench:done"
REDIS_URL_ENV = "BENCH_REDIS_URL"

_client: redis.Redis | None = None


def noop(x: Any = None) -> None:
    """The job of the caller-side benchmark: does nothing."""


def count(x: Any = None) -> None:
    """The job of the end-to-end benchmark: one INCR, so the benchmark sees it finish."""
    global _client
    if _client is None:  # created lazily, so each forked pool child gets its own connection
        _client = redis.Redis.from_url(os.environ[REDIS_URL_ENV])
    _client.incr(DONE_KEY)


def execute_job(
    site: str,
    method: str,
    event: str | None,
    job_name: str,
    kwargs: dict[str, Any],
    user: str | None = None,
    is_async: bool = True,
    retry: int = 0,
) -> None:
    """Stand-in for Frappe's execute_job (RQ variant; never run by the caller-side benchmark)."""


def truncate_failed_registry(job: Any, connection: Any, type: Any, value: Any, tb: Any) -> None:
    """Stand-in for Frappe's default on_failure callback (RQ variant)."""
