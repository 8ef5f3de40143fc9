"""The ``metrics_port`` setting: a worker's or beat's main process serves the bench's
Prometheus metrics (ops/metrics.py) once it is up. Imported by workers and beats only (Celery's
``include``, celery_app.WORKER_MODULES): importing it connects the two signal handlers."""

from __future__ import annotations

from typing import Any

from celery import signals

from frappe_celery.ops.metrics import serve_beside


@signals.worker_ready.connect  # the worker's main process, after the pool forked
def serve_beside_worker(**_: Any) -> None:
    serve_beside("worker")


@signals.beat_init.connect
def serve_beside_beat(**_: Any) -> None:
    serve_beside("beat")
