"""The ``metrics_port`` setting: a worker's or beat's main process serves the bench's
Prometheus metrics (ops/metrics.py) once it is up. Imported by workers and beats only (Celery's
``include``, celery_app.WORKER_MODULES): importing it connects the two signal handlers. The
exporter (and prometheus_client) is imported only when the setting asks for it: a worker
without it carries none of it."""

from __future__ import annotations

from typing import Any

from celery import signals

from frappe_celery.config import get_settings


def _serve(process: str) -> None:
    if get_settings().metrics_port:
        from frappe_celery.ops.metrics import serve_beside

        serve_beside(process)


@signals.worker_ready.connect  # the worker's main process, after the pool forked
def serve_beside_worker(**_: Any) -> None:
    _serve("worker")


@signals.beat_init.connect
def serve_beside_beat(**_: Any) -> None:
    _serve("beat")
