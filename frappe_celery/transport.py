"""kombu's Redis transport with RQ's queue order: queue first, then priority.

kombu's worker waits with one BRPOP over every list it consumes, ordered priority-major across
queues (all priority-0 lists of every queue, then all priority-3 lists, ...). A worker started
with ``-Q short,default`` would then take an ``at_front`` job from ``default`` before a normal
job from ``short``. RQ (and Frappe's users) expect strict queue order, with ``at_front`` only
moving a job to the front of its own queue; so the lists are ordered queue-major here. Selected
by the ``broker_transport`` setting (celery_app.py); everything else is kombu's.
"""

from __future__ import annotations

from time import monotonic

from kombu.transport import redis as kombu_redis


class Channel(kombu_redis.Channel):
    def _brpop_start(self, timeout: float | None = None) -> None:
        wait = self.brpop_timeout if timeout is None else timeout
        queues = self._queue_cycle.consume(len(self.active_queues))
        if not queues:
            return
        # The one change from kombu: every priority list of the first queue, then the next queue.
        lists = [self._q_for_pri(queue, pri) for queue in queues for pri in self.priority_steps]
        self._in_poll = self.client.connection
        self._brpop_sent_at = monotonic()  # type: ignore[assignment]  # kombu types it None
        command = ["BRPOP", *lists, wait or 0]
        if self.global_keyprefix:
            command = self.client._prefix_args(command)
        self.client.connection.send_command(*command)


class Transport(kombu_redis.Transport):
    Channel = Channel
