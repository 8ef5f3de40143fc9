"""Job functions the benchmarks enqueue (trivial on purpose: the framework's cost is measured).

Every variant names the same functions: ``frappe_celery.enqueue`` by dotted path (allowed through
``FRAPPE_CELERY_ALLOWED_MODULES=benchmarks``), raw Celery by task name (``celery_raw`` registers
these functions under their dotted paths), RQ through :func:`execute_job`, the stand-in for
Frappe's ``frappe.utils.background_jobs.execute_job``.
"""

from __future__ import annotations

import importlib
import os
import time
from typing import Any

import redis

# The end-to-end benchmark counts finished jobs here (same cost for every variant).
DONE_KEY = "bench:done"
# bench_workers: every job appends "<sent> <start> <end>" (time.time() floats) here.
STAMPS_KEY = "bench:stamps"
REDIS_URL_ENV = "BENCH_REDIS_URL"

_client: redis.Redis | None = None


def _redis() -> redis.Redis:
    global _client
    if _client is None:  # created lazily, so each forked pool child gets its own connection
        _client = redis.Redis.from_url(os.environ[REDIS_URL_ENV])
    return _client


def noop(x: Any = None) -> None:
    """The job of the caller-side benchmark: does nothing."""


def count(x: Any = None) -> None:
    """The job of the end-to-end benchmark: one INCR, so the benchmark sees it finish."""
    _redis().incr(DONE_KEY)


def stamp(sent: float = 0.0) -> None:
    """The job of bench_workers: records when the caller sent it, when it started, when it ended.

    The start is taken first thing, so the worker's own cost before the call is on the
    latency side; the end is taken just before the one RPUSH every variant pays alike.
    """
    start = time.time()
    end = time.time()
    _redis().rpush(STAMPS_KEY, f"{sent!r} {start!r} {end!r}")


def execute_job(
    site: str,
    method: str,
    event: str | None,
    job_name: str,
    kwargs: dict[str, Any],
    user: str | None = None,
    is_async: bool = True,
    retry: int = 0,
) -> Any:
    """Stand-in for Frappe's execute_job (RQ variant): what it does with the job once the site is
    set up, import ``method`` by its dotted path and call it with ``kwargs`` (no site, database
    or hooks here). The caller-side benchmarks only enqueue it; bench_workers' RQ workers run it.
    """
    module, _, name = method.rpartition(".")
    return getattr(importlib.import_module(module), name)(**kwargs)


def truncate_failed_registry(job: Any, connection: Any, type: Any, value: Any, tb: Any) -> None:
    """Stand-in for Frappe's default on_failure callback (RQ variant)."""
