"""Two options RQ's workers have and Celery's lack, for ``celery -A frappe_celery worker``.

* ``--burst``: take jobs until the worker's queues are empty and it runs nothing, then exit 0
  (RQ's burst mode: Frappe's CI and its own tests run ``bench worker --burst``). The check runs
  on the worker's event loop every :data:`BURST_CHECK_INTERVAL`: nothing received and not
  finished (``reserved_requests`` holds every message taken, running or waiting for a pool
  slot), every priority list of every consumed queue empty and no retry of theirs waiting for
  its countdown, on two checks in a row. A running job another worker holds is that worker's:
  as with RQ, only the waiting ones keep a burst worker.
* ``--queue-order``: how the worker picks the next queue among those it consumes (RQ's
  ``--strategy``): ``priority`` (RQ's default and ours: strictly in ``-Q`` order),
  ``round_robin`` (the queue just served goes last), ``random`` (a new order every wait).

The options are declared with the app (celery_app.add_worker_options); their steps are
here. ``bench worker`` on a switched bench passes them (``integrations/frappe/bench_worker.py``).
"""

from __future__ import annotations

import logging
import random
import time
from typing import Any

from celery import bootsteps
from celery.platforms import EX_OK
from celery.worker import state

from frappe_celery.broker import keys
from frappe_celery.connection import broker_errors, get_redis

logger = logging.getLogger(__name__)

BURST_CHECK_INTERVAL = 0.5
# Consecutive empty checks before a burst worker leaves: one check can fall between a message
# leaving its list and the worker receiving it.
BURST_EMPTY_CHECKS = 2
# A retry's countdown is at most a few seconds (worker/task.py); one due longer ago than this is
# not waiting for anything.
RETRY_OVERDUE = 60


class RandomCycle:
    """kombu's queue cycle with a new random order on every wait (RQ's ``random`` strategy)."""

    def __init__(self, it: list[str] | None = None) -> None:
        self.items = list(it or [])

    def update(self, it: list[str]) -> None:
        self.items[:] = it

    def consume(self, n: int) -> list[str]:
        return random.sample(self.items, min(n, len(self.items)))

    def rotate(self, last_used: str) -> None:
        pass


# --queue-order -> kombu's queue_order_strategy (a name kombu knows, or a cycle class's path).
# The option itself is declared with the app (celery_app.QUEUE_ORDER_NAMES, the same names).
QUEUE_ORDERS = {
    "priority": "priority",
    "round_robin": "round_robin",
    "random": f"{__name__}:RandomCycle",
}


class QueueOrder(bootsteps.Step):  # type: ignore[misc]
    """Applies ``--queue-order`` before the worker's consumer opens its broker connection."""

    def __init__(self, worker: Any, queue_order: str | None = None, **_: Any) -> None:
        if queue_order:
            conf = worker.app.conf
            conf.broker_transport_options = {
                **conf.broker_transport_options,
                "queue_order_strategy": QUEUE_ORDERS[queue_order],
            }


class Burst(bootsteps.StartStopStep):  # type: ignore[misc]
    """With ``--burst``: a warm shutdown, exit status 0, once the queues are drained."""

    requires = ("celery.worker.consumer.tasks:Tasks",)

    def __init__(self, consumer: Any, burst: bool = False, **_: Any) -> None:
        self.enabled = bool(burst)
        self.empty_checks = 0
        self.timer_entry: Any = None

    def start(self, consumer: Any) -> None:
        if not self.enabled:
            return
        queues = [queue.name for queue in consumer.task_consumer.queues]
        self.timer_entry = consumer.timer.call_repeatedly(
            BURST_CHECK_INTERVAL, self.check, (queues,)
        )

    def stop(self, consumer: Any) -> None:
        if self.timer_entry is not None:
            self.timer_entry.cancel()
            self.timer_entry = None

    def check(self, queues: list[str]) -> None:
        if state.reserved_requests or state.active_requests:
            self.empty_checks = 0
            return
        try:
            waiting = pending(queues)
        except Exception as exc:  # the broker is away: the worker's own reconnects handle it
            logger.warning("burst: could not count the waiting jobs (%s); will check again", exc)
            self.empty_checks = 0
            return
        self.empty_checks = 0 if waiting else self.empty_checks + 1
        if self.empty_checks >= BURST_EMPTY_CHECKS:
            logger.info("burst: queues %s are empty and no job runs here: done, quitting",
                        ",".join(queues))  # fmt: skip
            state.should_stop = EX_OK


def pending(queues: list[str]) -> int:
    """How many jobs of ``queues`` wait, in one round trip: messages in every priority list,
    and retries waiting for their countdown (a worker holds such a message without reserving
    it until it is due, so neither a list nor ``reserved_requests`` shows it). A retry overdue
    by more than RETRY_OVERDUE is a record left behind, not a job: it does not keep a burst
    worker."""
    since = time.time() - RETRY_OVERDUE
    with broker_errors():
        pipe = get_redis().pipeline(transaction=False)
        for queue in queues:
            for key in keys.queue_lists(queue):
                pipe.llen(key)
            pipe.zcount(keys.scheduled_registry(queue), since, "+inf")
        return sum(int(n) for n in pipe.execute())
