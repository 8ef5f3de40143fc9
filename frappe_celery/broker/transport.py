"""kombu's Redis transport with RQ's queue order, and one Redis round trip per message.

kombu's worker waits with one BRPOP over every list it consumes, ordered priority-major across
queues (all priority-0 lists of every queue, then all priority-3 lists, ...). A worker started
with ``-Q short,default`` would then take an ``at_front`` job from ``default`` before a normal
job from ``short``. RQ (and Frappe's users) expect strict queue order, with ``at_front`` only
moving a job to the front of its own queue; so the lists are ordered queue-major here. Selected
by the ``broker_transport`` setting (celery_app.py); :class:`SentinelTransport` is the same for
``sentinel://`` URLs.

Three costs of kombu's that a worker's main process paid per message, which on a small machine
left the pool children waiting for their next job a third of the time:

* every ack and every delivery built a new ``redis.Redis`` client (its response-callback table
  included) around the same connection pool; one client per pool is kept instead;
* every ack was a Redis round trip; a job that finished has already removed its message from
  the unacked hash in its own FINISH script (``lua/finish.lua``), so its ack skips the call;
* every delivery was two round trips, BRPOP then kombu's write of the message into its unacked
  hash; while messages wait, one script (``lua/reserve.lua``) pops and holds the next one. It
  also reads the job's record, and when that lets the job start, says so with the delivery
  (``wire.START_CHECKED``): the pool child then starts the job without first waiting for a
  round trip of its own (worker/task.py).

And one loss: a message BRPOP popped in the instant Redis died, before kombu's write, was in no
key any more. So an idle worker waits with BRPOP on its queues' doorbells (``keys.doorbell``,
rung with every push onto a queue), never on the queues, and then takes the message with
reserve.lua; losing a doorbell token costs nothing.

Every held message also names the channel holding it (``keys.HOLDERS``), so that the messages of
a worker that died whole go back to their queues in seconds, not after the visibility timeout,
and those of a channel lost with its connection once Redis answers again (recovery.py).

And one failure of kombu's: a message it cannot read (not JSON, no properties, a body that is
not base64) raised out of the event loop and killed the worker; it is logged and dropped here
(``readable_message``), and the worker takes the next job.

Everything else is kombu's.
"""

from __future__ import annotations

import inspect
import itertools
import json
import logging
from base64 import b64decode
from collections.abc import Iterator
from contextlib import contextmanager
from queue import Empty
from time import monotonic, time
from typing import Any

from kombu.transport import redis as kombu_redis
from kombu.transport import virtual
from kombu.utils.encoding import bytes_to_str
from kombu.utils.json import dumps, loads
from redis import sentinel
from redis.exceptions import NoScriptError

from frappe_celery import records
from frappe_celery.broker import keys, recovery, signing
from frappe_celery.broker.scripts import RESERVE, RESTORE_VISIBLE, SETTLE
from frappe_celery.broker.wire import START_CHECKED
from frappe_celery.config import get_settings
from frappe_celery.errors import BrokerUnreachable

logger = logging.getLogger(__name__)

# reserve.lua's "held" reply when it also found that the job's record lets it start.
RESERVED_AND_CHECKED = 2


class QoS(kombu_redis.QoS):  # type: ignore[misc]  # kombu < 5.7 ships no type hints
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Delivery tags whose message a job settled itself (worker/task.py, JobRequest.on_success).
        self._settled: set[str] = set()
        # Delivery tags that reserve.lua already holds in the unacked hash.
        self._held: set[str] = set()
        # Delivery tags left to recovery.py when the connection was lost (orphan_held).
        self._orphaned: set[str] = set()

    def mark_settled(self, delivery_tag: str) -> None:
        self._settled.add(delivery_tag)

    def mark_held(self, delivery_tag: str) -> None:
        self._held.add(delivery_tag)

    def append(self, message: Any, delivery_tag: str) -> None:
        if delivery_tag not in self._held:
            # After BRPOP: kombu's own writes (the same in kombu 5.4 to 5.7), and the holder.
            info = message.delivery_info
            held = dumps([message._raw, info["exchange"], info["routing_key"]])
            with self.pipe_or_acquire() as pipe:
                pipe.zadd(self.unacked_index_key, {delivery_tag: time()})
                pipe.hset(self.unacked_key, delivery_tag, held)
                pipe.hset(keys.HOLDERS, delivery_tag, self.channel.holder)
                pipe.execute()
        self._held.discard(delivery_tag)
        virtual.QoS.append(self, message, delivery_tag)  # the channel's bookkeeping

    def restore_unacked(self, client: Any = None) -> None:
        """kombu's (return every message this channel holds, when it closes), except that when
        Redis cannot be reached, which is why the channel closes on a lost connection, the
        messages are handed to recovery.py, which returns them once Redis answers again.
        Celery has cancelled their jobs by then; kombu left them held until the visibility
        timeout."""
        try:
            super().restore_unacked(client)
        except self.channel.connection_errors:
            self.orphan_held()

    def orphan_held(self) -> None:
        """Every message this channel holds goes to recovery.py, which returns it to its queue
        once Redis answers: the connection is lost, and with it every job of this channel (Celery
        cancels the running ones, drops the prefetched ones). An ack or reject of one of them
        that comes later (Celery sends some once it has reconnected) leaves it to recovery.

        The channel holds under a new name from now on, and the old name is declared lost, so
        recovery also returns a message that reserve.lua held but whose reply the connection
        lost: this channel never knew of it, and kombu would leave it to the visibility timeout.
        """
        self._flush()  # acked meanwhile: not held any more
        lost, self.channel.holder = self.channel.holder, new_channel_holder()
        recovery.holder_lost(lost)
        self._orphaned.update(self._delivered)
        self._delivered.clear()

    def _remove_from_indices(self, delivery_tag: str, pipe: Any = None) -> Any:
        """kombu's (the pipeline removing the message from the unacked hash and its index, for
        ack, reject and restore), plus its holder."""
        return super()._remove_from_indices(delivery_tag, pipe).hdel(keys.HOLDERS, delivery_tag)

    def ack(self, delivery_tag: str) -> None:
        if delivery_tag in self._settled:
            self._settled.discard(delivery_tag)
        elif delivery_tag in self._orphaned:
            self._orphaned.discard(delivery_tag)
        else:
            self._settle(delivery_tag)
        virtual.QoS.ack(self, delivery_tag)  # the channel's bookkeeping

    def reject(self, delivery_tag: str, requeue: bool = False) -> None:
        if delivery_tag in self._orphaned:
            self.ack(delivery_tag)  # recovery returns it
            return
        if requeue:  # kombu's: back to the front of its queue
            try:
                super().reject(delivery_tag, requeue=True)
            except self.channel.connection_errors:
                # Redis is gone (a job handed back as it could not start, worker.task.NotStarted):
                # the connection is lost, and recovery returns this message with the others.
                self.orphan_held()
                self.ack(delivery_tag)
            return
        self._settle(delivery_tag)
        virtual.QoS.ack(self, delivery_tag)

    def restore_visible(self, start: int = 0, num: int | None = 10, interval: int = 10) -> None:
        """kombu's restore of messages held longer than the visibility timeout (every tenth call
        of its 10-second timer), except a message whose holder is alive: its job still runs
        (lua/restore_visible.lua renews its hold instead). kombu restored it regardless, and a
        job whose own timeout outlasts the visibility timeout ran a second time on another
        worker while the first still ran it. A holder that died is recovery.py's, within
        seconds; one that is gone here too is restored as kombu would."""
        if self.channel.global_keyprefix:  # our scripts do not use kombu's key prefix
            super().restore_visible(start, num, interval)
            return
        self._vrestore_count += 1
        if (self._vrestore_count - 1) % interval:
            return
        with self.channel.conn_or_acquire() as client:
            now = time()
            try:
                with kombu_redis.Mutex(client, self.unacked_mutex_key, self.unacked_mutex_expire):
                    tags = RESTORE_VISIBLE(
                        client,
                        [self.unacked_index_key, keys.HOLDERS],
                        [now - self.visibility_timeout, now, keys.ALIVE_PREFIX, num or 0],
                    )
                    for tag in tags:
                        self.restore_by_tag(bytes_to_str(tag), client)
            except kombu_redis.MutexHeld:
                pass

    def _settle(self, delivery_tag: str) -> None:
        """kombu's ack in Redis (the message leaves the unacked hash and index), unless another
        worker holds the message now (lua/settle.lua)."""
        with self.channel.conn_or_acquire() as client:
            names = [self.unacked_key, self.unacked_index_key, keys.HOLDERS]
            SETTLE(client, names, [delivery_tag, self.channel.holder])


# Numbers this process's holder names: a reconnect opens a new channel, which holds under a new
# name, and a channel that lost its connection takes a new one (QoS.orphan_held).
_channel_numbers = itertools.count(1)


def new_channel_holder() -> str:
    return recovery.channel_holder(next(_channel_numbers))


class Channel(kombu_redis.Channel):  # type: ignore[misc]  # kombu < 5.7 ships no type hints
    QoS = QoS
    _sync_client: Any = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # The name this channel holds messages under (keys.HOLDERS, recovery.channel_holder).
        self.holder = new_channel_holder()
        # Consumer tag -> queue, for consumers that never ack (Celery's control replies).
        self._no_ack_consumers: dict[str, str] = {}

    def basic_consume(self, queue: str, no_ack: bool, *args: Any, **kwargs: Any) -> Any:
        consumer_tag = kwargs.get("consumer_tag", args[1] if len(args) > 1 else None)
        if no_ack and consumer_tag is not None:
            self._no_ack_consumers[consumer_tag] = queue
        return super().basic_consume(queue, no_ack, *args, **kwargs)

    def basic_cancel(self, consumer_tag: str) -> Any:
        self._no_ack_consumers.pop(consumer_tag, None)
        return super().basic_cancel(consumer_tag)

    def _never_acked(self, queue: str) -> bool:
        """Whether ``queue`` is consumed without acks: kombu then never acks what it delivers, so
        a message reserve.lua held would stay in the unacked hash until the visibility timeout
        put it back on its queue (every ``celery control`` reply did)."""
        return queue in self._no_ack_consumers.values()

    def _put(self, queue: str, message: Any, **kwargs: Any) -> None:
        """kombu's publish (Celery's retries, send_task), signed, ringing the queue's doorbell
        with it."""
        priority = self._get_message_priority(message, reverse=False)
        headers = message.get("headers")
        if isinstance(headers, dict):  # a task message: signed like every enqueue's (signing.py)
            key = get_settings().require_signing_key()
            headers[signing.SIGNATURE_HEADER] = signing.sign(key, headers, message.get("body", ""))
        with self.conn_or_acquire() as client:
            pipe = client.pipeline()
            pipe.lpush(self._q_for_pri(queue, priority), dumps(message))
            ring_doorbell(pipe, queue)
            pipe.execute()

    def _do_restore_message(
        self, payload: Any, exchange: str, routing_key: str, pipe: Any, leftmost: bool = False
    ) -> None:
        """kombu's restore of a held message to its queue, ringing the queue's doorbell with it."""
        super()._do_restore_message(payload, exchange, routing_key, pipe, leftmost)
        for queue in self._lookup(exchange, routing_key):
            ring_doorbell(pipe, queue)

    @contextmanager
    def conn_or_acquire(self, client: Any = None) -> Iterator[Any]:
        """kombu's, but one client per connection pool rather than a new one per call (the
        client holds no connection of its own: each command takes one from the pool)."""
        if client:
            yield client
            return
        cached = self._sync_client
        if cached is None or cached.connection_pool is not self.pool:
            cached = self._sync_client = self._create_client()
        yield cached

    @property
    def active_queues(self) -> list[str]:
        """The queues consumed from, in the order they were added (the worker's -Q order).

        kombu 5.7's own definition. Before 5.7 kombu returns a set, so the queue cycle, and with
        it the BRPOP order below, followed string hashing: random per worker process.
        """
        return list(
            dict.fromkeys(
                queue for queue in self._active_queues if queue not in self.active_fanout_queues
            )
        )

    # Whether the next wait is reserve.lua alone (messages may be waiting) or a doorbell's BRPOP
    # with reserve.lua after it (the last script took the last message or found none), and which
    # reply the connection awaits.
    _take_by_script = True
    _awaiting = ""

    # kombu's own body, in every kombu of the supported range (5.4 to 5.6, and 5.7's), with the
    # list order changed and the waits below. The parts that differ between versions are looked
    # up, not assumed.
    def _brpop_start(self, timeout: float | None = None) -> None:
        if timeout is None:
            # kombu >= 5.6 has the brpop_timeout transport option; before, the default was 1 s.
            timeout = getattr(self, "brpop_timeout", 1)
        queues = self._queue_cycle.consume(len(self.active_queues))
        if not queues:
            return
        # The change from kombu: every priority list of the first queue, then the next queue.
        lists = [self._q_for_pri(queue, pri) for queue in queues for pri in self.priority_steps]
        self._in_poll = self.client.connection
        if hasattr(self, "_brpop_sent_at"):
            # kombu >= 5.7 times each BRPOP to drop half-open sockets; older kombu has no such
            # attribute and nothing reads it.
            self._brpop_sent_at = monotonic()
        # The commands are sent like kombu's BRPOP, without waiting: the event loop reads the
        # replies (_brpop_read).
        if self.global_keyprefix:
            # kombu's own wait: our scripts and doorbells do not use kombu's key prefix.
            self._awaiting = "lists"
            commands = [self.client._prefix_args(["BRPOP", *lists, timeout or 0])]
        else:
            doorbells = [keys.doorbell(queue) for queue in queues]
            names = [self.unacked_key, self.unacked_index_key, keys.HOLDERS, *lists, *doorbells]
            reserve = ["EVALSHA", RESERVE.sha, len(names), *names, time(), self.holder,
                       len(doorbells), keys.JOB_PREFIX]  # fmt: skip
            if self._take_by_script:
                self._awaiting = "reserve"
                commands = [reserve]
            else:
                # Idle: wait for a doorbell, never for a message. BRPOP pops what it returns, and
                # a message popped in the instant Redis died was in no key any more: lost. A
                # token lost that way costs nothing. Redis runs reserve.lua, sent with it, as
                # soon as BRPOP returns (a token, or nothing after the timeout): it pops and
                # holds the message in one step, and a rung doorbell costs no round trip.
                self._awaiting = "doorbell"
                commands = [["BRPOP", *doorbells, timeout or 0], reserve]
        connection = self.client.connection
        connection.send_packed_command(connection.pack_commands(commands))

    def _brpop_read(self, **options: Any) -> bool:
        """Read the replies of reserve.lua (after a doorbell's BRPOP, if one was sent) or of
        BRPOP, and deliver the message (kombu's own body for BRPOP, the same in kombu 5.4 to
        5.7), except that a message kombu cannot read is logged and dropped: kombu raised, and
        the worker died of it, so anyone able to push one bad message onto a queue could stop
        every worker consuming it."""
        awaiting, self._awaiting = self._awaiting, ""
        by_script = awaiting != "lists"
        try:
            try:
                connection = self.client.connection
                if awaiting == "doorbell":
                    # A token, or None after the timeout: reserve.lua ran after it either way.
                    self.client.parse_response(connection, "BRPOP", **options)
                command = "EVALSHA" if by_script else "BRPOP"
                reply = self.client.parse_response(connection, command, **options)
            except NoScriptError:
                # Redis lost its scripts (a restart): load it, and take the next message with it.
                with self.conn_or_acquire() as client:
                    client.script_load(RESERVE.source)
                self._take_by_script = True
                raise Empty() from None
            except self.connection_errors:
                self._connection_lost()
                raise
            # reserve.lua again while it reports more messages waiting; else the doorbell.
            self._take_by_script = not by_script or bool(reply and reply[3])
            if not reply:
                raise Empty()
            dest, item, held = reply[:3] if by_script else (*reply, 0)
            dest = bytes_to_str(dest).rsplit(self.sep, 1)[0]
            self._queue_cycle.rotate(dest)
            payload = readable_message(bytes_to_str(item))
            if payload is None:
                logger.error("dropped a message from %r that is not a kombu message: %.200r",
                             dest, item)  # fmt: skip
                # reserve.lua held it: it must not come back after the visibility timeout.
                tag = raw_delivery_tag(bytes_to_str(item))
                if held and tag is not None:  # "" is a tag too: reserve.lua held it
                    self.qos._settle(tag)
                fail_named_job(bytes_to_str(item), "malformed job message: kombu cannot read it")
                raise Empty()
            if self._never_acked(dest):  # Celery's control replies: no task, nothing runs
                if held:
                    self.qos._settle(payload["properties"]["delivery_tag"])
            elif not self._signed(payload, dest, bytes_to_str(item)):
                if held:
                    self.qos._settle(payload["properties"]["delivery_tag"])
                raise Empty()
            elif held:
                self.qos.mark_held(payload["properties"]["delivery_tag"])
            # Set on every delivery, so a message never vouches for itself.
            payload["properties"][START_CHECKED] = held == RESERVED_AND_CHECKED
            self.connection._deliver(payload, dest)
            return True
        finally:
            self._in_poll = None

    def _signed(self, payload: dict[str, Any], queue: str, text: str) -> bool:
        """Whether a message may reach Celery: signed with an accepted key (signing.py). One
        that is not is logged, counted and its job's record failed (when it names the job with
        its token, as a message of an older frappe-celery that signed nothing does)."""
        problem = signing.problem(payload, get_settings().accepted_signing_keys)
        if problem is None:
            return True
        headers = payload.get("headers")
        job_id = headers.get("id") if isinstance(headers, dict) else None
        logger.error("dropped a message from queue %r (job %.100r): %s; it was not run",
                     queue, job_id, problem)  # fmt: skip
        try:
            with self.conn_or_acquire() as client:
                pipe = client.pipeline(transaction=False)
                pipe.hincrby(keys.REFUSED_MESSAGES, queue, 1)
                last = {
                    "queue": queue,
                    "job_id": str(job_id)[:200],
                    "problem": problem,
                    "at": time(),
                }
                pipe.hset(keys.REFUSED_MESSAGES, keys.REFUSED_LAST_FIELD, json.dumps(last))
                pipe.execute()
        except self.connection_errors:
            logger.warning("could not count the dropped message of queue %r", queue)
        fail_named_job(text, f"job message refused: {problem}", "UnsignedMessage")
        return False

    def _connection_lost(self) -> None:
        self.client.connection.disconnect()
        # Celery cancels this channel's jobs on the lost connection, and kombu returns their
        # messages only if it closes the channel, which it does not always do.
        self.qos.orphan_held()


def ring_doorbell(pipe: Any, queue: str) -> None:
    """Queue in ``pipe`` the wake-up of one idle worker of ``queue`` (keys.doorbell)."""
    bell = keys.doorbell(queue)
    pipe.lpush(bell, "1")
    pipe.ltrim(bell, 0, keys.DOORBELL_DEPTH - 1)


def raw_delivery_tag(text: str) -> str | None:
    """The delivery tag of a message kombu cannot read, read as plain JSON (no type tags)."""
    try:
        tag = json.loads(text)["properties"]["delivery_tag"]
    except (ValueError, TypeError, KeyError):
        return None
    return tag if isinstance(tag, str) else None


def fail_named_job(text: str, reason: str, exc_type: str = "MalformedMessage") -> None:
    """Fail the job a dropped message (its raw envelope, ``text``) names; see fail_job_named_in."""
    try:
        envelope = json.loads(text)
        body = envelope["body"]
        if envelope["properties"].get("body_encoding") == "base64":
            body = b64decode(body)
        headers = envelope["headers"]
    except (ValueError, TypeError, KeyError, AttributeError):
        return
    fail_job_named_in(headers, body, reason, exc_type)


def fail_job_named_in(headers: Any, body: Any, reason: str, exc_type: str) -> None:
    """Fail the job a dropped message names (as ``exc_type``), if it names one with its token,
    both read as plain JSON (``body``: the task body, decoded from base64): its record would
    otherwise say ``queued`` until it expired, and its id stay taken. A message naming a job
    with a wrong token changes nothing."""
    try:
        job_id, payload = headers["id"], json.loads(body)[1]
        token, queue = payload["token"], payload["queue"]
    except (ValueError, TypeError, KeyError, IndexError, AttributeError):
        return
    if not all(isinstance(value, str) for value in (job_id, token, queue)):
        return
    try:
        # A lone surrogate (a "\ud800" escape in the JSON) cannot be sent to Redis: no job of
        # ours is named so, and the error left the consumer's handler after the message was
        # rejected (a forged message found by tests/test_wire_fuzz.py).
        for value in (job_id, token, queue):
            value.encode("utf-8")
    except UnicodeEncodeError:
        return
    try:
        records.fail(job_id, token, queue, exc_type, f"{reason}; it was not run")
    except BrokerUnreachable:
        logger.warning("job %s: could not record its dropped message as failed", job_id)


def readable_message(text: str) -> dict[str, Any] | None:
    """The message as kombu reads it, or None when kombu could not (it would raise): not JSON,
    not an object, no properties with a delivery tag and delivery info, a body that does not
    decode as its body_encoding says."""
    try:
        payload = loads(text)
    except Exception:
        # ValueError, and what kombu's type-tag decoder raises ({"__type__": "datetime",
        # "__value__": 1}: TypeError; a bad decimal: InvalidOperation; bytes holding a number:
        # AttributeError): any of them is a poison message.
        return None
    properties = payload.get("properties") if isinstance(payload, dict) else None
    if not isinstance(properties, dict) or not isinstance(properties.get("delivery_tag"), str):
        return None
    if not isinstance(properties.get("delivery_info"), dict):
        return None
    body = payload.get("body")
    if body is not None and not isinstance(body, str):
        return None
    # What kombu's Message reads without checking (a dict as body_encoding raised out of the
    # worker's event loop): kombu knows no body encoding but base64 and the utf-8 it passes.
    encoding = properties.get("body_encoding")
    if encoding and not (isinstance(encoding, str) and encoding.lower() in ("base64", "utf-8")):
        return None
    for name in ("content-type", "content-encoding"):
        if payload.get(name) is not None and not isinstance(payload[name], str):
            return None
    if payload.get("headers") is not None and not isinstance(payload["headers"], dict):
        return None
    if body and properties.get("body_encoding") == "base64":
        try:
            b64decode(body, validate=True)
        except ValueError:  # binascii.Error
            return None
    message: dict[str, Any] = payload
    return message


class Transport(kombu_redis.Transport):  # type: ignore[misc]  # kombu < 5.7 ships no type hints
    Channel = Channel


class SentinelManagedConnection(sentinel.SentinelManagedConnection):  # type: ignore[misc,unused-ignore]
    """redis-py's, accepting ``disconnect_on_error``: in redis-py 4.5.5 (Frappe 15's pin) PubSub
    passes it to every connection's read_response but the Sentinel one does not take it, so a
    worker on a sentinel:// broker died at start with a TypeError (fixed in redis-py 4.6)."""

    def read_response(self, *args: Any, **kwargs: Any) -> Any:
        if not _TAKES_DISCONNECT_ON_ERROR:
            kwargs.pop("disconnect_on_error", None)
        return super().read_response(*args, **kwargs)


_TAKES_DISCONNECT_ON_ERROR = (
    "disconnect_on_error"
    in inspect.signature(sentinel.SentinelManagedConnection.read_response).parameters
)


class SentinelChannel(Channel, kombu_redis.SentinelChannel):  # type: ignore[misc]
    """Our channel over kombu's Sentinel one: the master is found through the sentinels (the
    ``master_name`` transport option, from the ``sentinel_master`` setting) on every new
    connection, so after a failover the worker reconnects to the promoted replica."""

    connection_class = SentinelManagedConnection


class SentinelTransport(kombu_redis.SentinelTransport):  # type: ignore[misc]
    Channel = SentinelChannel
