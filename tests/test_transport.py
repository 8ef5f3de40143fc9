"""frappe-celery's kombu Redis channel (transport.py) on the test Redis, at any kombu version."""

from __future__ import annotations

from kombu import Connection

from frappe_celery.transport import Channel

# More than a few names: a set of them coming out in this order by chance is unlikely.
QUEUES = ["long", "reports", "short", "batch", "q5", "default", "a", "zz"]


def test_channel_keeps_the_order_queues_were_added_in(redis_server):
    """The worker's -Q order reaches the BRPOP; kombu before 5.7 kept it in a set (hash order)."""
    with Connection(redis_server.url, transport="frappe_celery.transport:Transport") as conn:
        channel = conn.channel()
        try:
            assert isinstance(channel, Channel)
            for queue in QUEUES:
                channel.basic_consume(queue, True, lambda message: None, f"tag-{queue}")
            assert channel.active_queues == QUEUES
            # What _brpop_start takes the queues from.
            assert channel._queue_cycle.consume(len(channel.active_queues)) == QUEUES
        finally:
            channel.close()
