"""frappe-celery's kombu Redis channel (transport.py) on the test Redis, at any kombu version."""

from __future__ import annotations

from kombu import Connection, Exchange, Queue

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


def test_an_ack_for_a_message_its_job_settled_leaves_redis_alone(redis_server, r):
    """The job's FINISH script removed the message from kombu's unacked hash already
    (lua/finish.lua); the main process's ack then only updates the channel's bookkeeping."""
    queue = "test-settled"
    with Connection(redis_server.url, transport="frappe_celery.transport:Transport") as conn:
        channel = conn.channel()
        try:
            producer = conn.Producer(channel)
            declare = [Queue(queue, Exchange(queue), routing_key=queue)]
            for n in (1, 2):
                producer.publish({"n": n}, exchange=queue, routing_key=queue, declare=declare)
            settled = channel.basic_get(queue, no_ack=False)
            plain = channel.basic_get(queue, no_ack=False)
            tags = [settled.delivery_tag, plain.delivery_tag]
            assert all(r.hexists("unacked", tag) for tag in tags)

            channel.qos.mark_settled(settled.delivery_tag)
            settled.ack()
            plain.ack()
            # Had the settled ack called Redis, its entry (left here on purpose) would be gone.
            assert r.hexists("unacked", settled.delivery_tag)
            assert not r.hexists("unacked", plain.delivery_tag)
            assert r.zscore("unacked_index", plain.delivery_tag) is None
            channel.qos._flush()
            assert not channel.qos._delivered  # both acked as far as the channel knows
        finally:
            r.hdel("unacked", *tags)
            r.zrem("unacked_index", *tags)
            r.delete(queue)
            channel.close()
