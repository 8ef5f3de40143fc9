"""A plain Celery app for the raw-Celery comparison (``celery -A benchmarks.celery_raw worker``).

The broker comes from ``BENCH_BROKER_URL``. ``BENCH_RAW_PROFILE`` picks the worker settings:
``default`` keeps Celery's defaults (early ack, prefetch multiplier 4); ``reliable`` uses the
reliability settings frappe-celery derives (acks late, reject on worker lost, prefetch 1), so the
difference left is frappe-celery's own execution path. JSON only, results ignored.
"""

from __future__ import annotations

import os

from celery import Celery

from . import jobs

BROKER_ENV = "BENCH_BROKER_URL"
PROFILE_ENV = "BENCH_RAW_PROFILE"


def make_app(broker_url: str, *, backend: str | None = None, profile: str = "default") -> Celery:
    """A JSON-only Celery app on ``broker_url`` (with a result backend only if given)."""
    app = Celery("benchmarks_raw", broker=broker_url, backend=backend, set_as_current=False)
    app.conf.update(
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        result_accept_content=["json"],
        task_ignore_result=backend is None,
        task_default_queue="default",
        broker_connection_retry_on_startup=True,
        enable_utc=True,
    )
    if profile == "reliable":
        app.conf.update(
            task_acks_late=True,
            task_reject_on_worker_lost=True,
            worker_prefetch_multiplier=1,
        )
    elif profile != "default":
        raise ValueError(f"{PROFILE_ENV} must be 'default' or 'reliable', got {profile!r}")
    # Same task names as the dotted paths frappe_celery.enqueue sends.
    app.task(name="benchmarks.jobs.noop")(jobs.noop)
    app.task(name="benchmarks.jobs.count")(jobs.count)
    app.task(name="benchmarks.jobs.stamp")(jobs.stamp)
    return app


app = make_app(
    os.environ.get(BROKER_ENV, "redis://127.0.0.1:6379/0"),
    profile=os.environ.get(PROFILE_ENV, "default"),
)
