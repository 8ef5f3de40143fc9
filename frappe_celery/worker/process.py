"""The classes a ``celery -A frappe_celery worker`` process runs with, named by celery_app.py
(by dotted path, so that building the app imports none of Celery's worker code): the worker
(only with a signing key, without mingle and gossip), its consumer (never killed by a message)
and the step that refills the pool promptly.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import bootsteps
from celery.apps.worker import Worker as CeleryWorker
from celery.worker.consumer import Consumer as CeleryConsumer

from frappe_celery.broker.transport import fail_job_named_in
from frappe_celery.config import get_settings

logger = logging.getLogger(__name__)


class Worker(CeleryWorker):  # type: ignore[misc]
    """``celery -A frappe_celery worker``, without Celery's mingle and gossip steps, and only
    with a signing key.

    Mingle makes every starting worker wait about 1 s for its peers' revoked-task sets and
    logical clocks, and gossip keeps a pub/sub subscription for worker events: frappe-celery
    keeps no state in Celery's revoked sets (cancel and stop go through the job records and
    its own control command) and finds workers through their heartbeats, so both only cost.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # It runs only signed messages (signing.py): without a key it would drop every one.
        get_settings().require_signing_key()
        kwargs.update(without_mingle=True, without_gossip=True)
        super().__init__(*args, **kwargs)


class Consumer(CeleryConsumer):  # type: ignore[misc]
    """Celery's consumer, never killed by a message, and failing the record of a job whose
    message it drops (it said ``queued`` until it expired, its id taken).

    Celery logs and drops a task message whose body it cannot decode (a kombu type tag its
    decoder raises on) or that it finds invalid; anything else a message made its task handler
    raise (a body that is not ``[args, kwargs, embed]``: a ValueError out of Celery's Request)
    went out of the event loop and stopped the worker. The transport drops an envelope kombu
    cannot read itself (transport.readable_message)."""

    def on_decode_error(self, message: Any, exc: Exception) -> None:
        super().on_decode_error(message, exc)
        reason = f"malformed job message: its body cannot be decoded ({type(exc).__name__})"
        fail_job_named_in(message.headers, message.body, reason, "MalformedMessage")

    def on_invalid_task(self, body: Any, message: Any, exc: Exception) -> None:
        super().on_invalid_task(body, message, exc)
        reason = f"malformed job message: {exc}"
        fail_job_named_in(message.headers, message.body, reason, "MalformedMessage")

    def create_task_handler(self, *args: Any, **kwargs: Any) -> Any:
        handle = super().create_task_handler(*args, **kwargs)
        # Raised on a lost connection: the consumer reconnects on these, as Celery's own does.
        passes = (MemoryError, *self.connection_errors)

        def on_task_received(message: Any) -> Any:
            try:
                return handle(message)
            except passes:
                raise
            except Exception as exc:  # a message must never stop the worker
                if message.acknowledged:
                    # Celery's handler settled it (rejected it as invalid), then something
                    # after raised: settling it again would raise out of the event loop.
                    logger.exception("a dropped message raised after it was settled")
                    return None
                return self.on_invalid_task(None, message, exc)

        return on_task_received


# How often the worker looks for pool children that exited, to start their replacements.
POOL_REFILL_INTERVAL = 0.25


class PromptPoolRefill(bootsteps.StartStopStep):  # type: ignore[misc]
    """Replace an exited pool child within POOL_REFILL_INTERVAL, not up to 5 s later.

    A child leaves after worker_max_tasks_per_child jobs (1000 by default here). Celery starts
    its replacement when it sees the exit, but when the child had been handed its next job just
    before exiting, it misses it (celery/celery#9588), and only the pool's 5 s maintenance timer
    starts the replacement: meanwhile that job waits. Measured in the drain benchmark: the last
    of 2000 jobs on ``-c 2`` waited 2.2 to 4.7 s in 3 runs of 5. The same maintenance, run more
    often here, costs a few system calls per run.
    """

    requires = ("celery.worker.components:Pool",)

    def start(self, worker: Any) -> None:
        hub = getattr(worker, "hub", None)
        maintain = getattr(getattr(worker.pool, "_pool", None), "maintain_pool", None)
        if hub is not None and maintain is not None:  # the prefork pool on an event loop
            hub.call_repeatedly(POOL_REFILL_INTERVAL, maintain)
