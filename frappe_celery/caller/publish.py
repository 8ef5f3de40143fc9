"""Putting a validated job onto its queue: one Lua script per job (enqueue.lua).

A :class:`Publication` is everything the script needs, computed at enqueue time, so that a job
buffered for after-commit was validated and encoded when it was enqueued and only the publish
itself waits. Several publications (one commit's worth) go out pipelined, in order.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from redis.exceptions import NoScriptError, ResponseError

from frappe_celery.broker import keys, scripts
from frappe_celery.broker.wire import JobPayload, build_message
from frappe_celery.caller.ids import uuid4_text
from frappe_celery.celery_app import get_app
from frappe_celery.config import (
    AT_FRONT_PRIORITY,
    NORMAL_PRIORITY,
    PRIORITY_STEPS,
    QUEUE_STARVATION_THRESHOLD,
    get_settings,
)
from frappe_celery.connection import as_text, broker_errors, checked_out, get_redis
from frappe_celery.errors import NotReplicated, PublishError, QueueOverloaded
from frappe_celery.job import Job, JobStatus
from frappe_celery.records import ENQUEUE_FIELDS

logger = logging.getLogger(__name__)


# Not frozen: a frozen dataclass sets each field through object.__setattr__, a microsecond of
# every enqueue_many job; nothing changes a publication after prepare() builds it.
@dataclass(slots=True)
class Publication:
    job_id: str
    queue: str
    # This job's part of enqueue.lua's arguments: its target list's position among its queue's
    # lists, then everything from the dedup flag on (see the script).
    args: list[Any]
    record: dict[str, str]


def record_fields(job_id: str, payload: JobPayload) -> dict[str, str]:
    """The status record a job starts with (see job.py for the fields), as Redis stores it.

    A field at its default is left out (no event or user, a job_name that is the method, no
    retries yet), as is the id (it is in the key): every pending job has a record, and these
    are a tenth of its bytes. Readers take the default for a missing field.
    """
    fields = {
        "token": payload["token"],
        "status": JobStatus.QUEUED.value,
        "queue": payload["queue"],
        "method": payload["method"],
        "site": payload["site"],
        # str(float) is the repr redis-py would write.
        "timeout": str(payload["timeout"]),
        "enqueued_at": str(time.time()),
    }
    if payload["job_name"] != payload["method"]:
        fields["job_name"] = payload["job_name"]
    if payload["user"]:
        fields["user"] = payload["user"]
    if payload["event"]:
        fields["event"] = payload["event"]
    return fields


def prepare(
    job_id: str,
    payload: JobPayload,
    body_json: str,
    *,
    at_front: bool,
    deduplicate: bool,
    at_front_when_starved: bool,
) -> Publication:
    settings = get_settings()
    queue = payload["queue"]
    soft = payload["timeout"]
    # kombu's per-message id; the liveness check finds the message (or its redelivered copy)
    # and its unacked entry by it.
    delivery_tag = uuid4_text()
    signing_key = settings.require_signing_key()

    def message(priority: int) -> str:
        return build_message(
            get_app(),
            job_id=job_id,
            queue=queue,
            priority=priority,
            body_json=body_json,
            soft_time_limit=soft,
            time_limit=soft + settings.time_limit_grace,
            display=payload["job_name"],
            delivery_tag=delivery_tag,
            signing_key=signing_key,
        )

    priority = AT_FRONT_PRIORITY if at_front else NORMAL_PRIORITY
    normal = message(priority)
    # Only a normal job can be promoted when the queue is starved.
    starved = at_front_when_starved and not at_front
    record = record_fields(job_id, payload)
    record["delivery_tag"] = delivery_tag
    args: list[Any] = [
        PRIORITY_STEPS.index(priority) + 1,
        "1" if deduplicate else "0",
        QUEUE_STARVATION_THRESHOLD if starved else 0,
        normal,
        # Sent only when the script may need it (one message is ~0.7 KB).
        message(AT_FRONT_PRIORITY) if starved else "",
        *map(record.get, ENQUEUE_FIELDS, itertools.repeat("")),
    ]
    if deduplicate:  # as enqueue.lua stores it
        record["message"] = normal
    return Publication(job_id, queue, args, record)


def outcome(publication: Publication, code: Any, info: Any) -> Job | None:
    """The handle for a published job; None when deduplicated; QueueOverloaded when full."""
    if code == 0:
        logger.info("not queueing %s: already %s", publication.job_id, as_text(info))
        return None
    if code == -1:
        raise QueueOverloaded(publication.queue, int(info), get_settings().max_queued_jobs)
    return Job(publication.job_id, publication.record)  # the publication is spent


# Jobs per enqueue.lua call in a batch: Redis runs one script at a time, so a call is kept to
# about a millisecond of other clients' waiting; and the caller, once it has sent the last call,
# waits for Redis to run it (100 against 200: enqueue_many 38,800 -> 41,300 jobs/s).
SCRIPT_BATCH = 100


def _in_chunks(publications: Iterable[Publication], size: int) -> Iterator[list[Publication]]:
    chunk: list[Publication] = []
    for publication in publications:
        chunk.append(publication)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _script_call(publications: list[Publication]) -> tuple[list[str], list[Any]]:
    """enqueue.lua's keys and arguments for these jobs (see the script): each queue's keys
    once, then the jobs' records."""
    settings = get_settings()
    queue_keys: list[str] = []
    doorbell_at: dict[str, int] = {}  # queue -> its doorbell's index in KEYS (Lua's, from 1)
    record_keys: list[str] = []
    args: list[Any] = [
        len(publications),
        len(PRIORITY_STEPS),
        settings.max_queued_jobs,
        settings.failure_ttl,
        keys.KOMBU_UNACKED,
        time.time(),
        settings.lost_message_grace,
        keys.DOORBELL_DEPTH,
        len(ENQUEUE_FIELDS),
        *ENQUEUE_FIELDS,
    ]
    for publication in publications:
        queue = publication.queue
        at = doorbell_at.get(queue)
        if at is None:
            at = doorbell_at[queue] = len(queue_keys) + 1
            queue_keys += [keys.doorbell(queue), *keys.queue_lists(queue)]
        record_keys.append(keys.job(publication.job_id))
        args.append(at)
        args += publication.args
    return queue_keys + record_keys, args


def publish(publication: Publication) -> Job | None:
    """Publish one job now: one round trip (with enqueue_wait_replicas, the script and WAIT in
    one pipeline, so WAIT runs on the connection that wrote the job, as it must)."""
    settings = get_settings()
    script_keys, args = _script_call([publication])
    if not settings.enqueue_wait_replicas:
        with broker_errors():
            code, info = scripts.ENQUEUE(get_redis(), script_keys, args)
        return outcome(publication, code, info)
    client = get_redis()

    def enqueue_and_wait() -> list[Any]:
        pipe = client.pipeline(transaction=False)
        scripts.ENQUEUE.queue_in(pipe, script_keys, args)
        pipe.execute_command(
            "WAIT", settings.enqueue_wait_replicas, settings.enqueue_wait_timeout_ms
        )
        replies: list[Any] = pipe.execute()
        return replies

    with broker_errors():
        scripts.ENQUEUE.ensure_loaded(client)
        try:
            (code, info), acked = enqueue_and_wait()
        except NoScriptError:
            # Redis lost its scripts (a restart, or a failover to a replica that never loaded it).
            client.script_load(scripts.ENQUEUE.source)
            (code, info), acked = enqueue_and_wait()
    job = outcome(publication, code, info)
    if job is not None:
        _check_replicated([publication.job_id], int(acked))
    return job


def _check_replicated(job_ids: list[str], acked: int) -> None:
    settings = get_settings()
    if acked < settings.enqueue_wait_replicas:
        raise NotReplicated(
            job_ids, acked, settings.enqueue_wait_replicas, settings.enqueue_wait_timeout_ms
        )


def publish_batch(publications: Iterable[Publication]) -> list[Job | None]:
    """Publish jobs in order, SCRIPT_BATCH per script call, each call sent as soon as its jobs
    are there and the replies read at the end (one round trip for the batch). Given a
    generator (the scheduler's all-due tick), Redis runs each call while the next jobs are
    being encoded.

    Every job is attempted; if any failed, raises :class:`PublishError` listing them (the
    others are published).
    """
    pending = _in_chunks(publications, SCRIPT_BATCH)
    first = next(pending, None)
    if first is None:
        return []
    client = get_redis()
    chunks: list[list[Publication]] = []
    calls: list[tuple[list[str], list[Any]]] = []
    wait = get_settings().enqueue_wait_replicas
    replies: list[Any] = []
    with broker_errors():
        scripts.ENQUEUE.ensure_loaded(client)
        with checked_out(client) as connection:
            for chunk in itertools.chain([first], pending):
                script_keys, args = _script_call(chunk)
                connection.send_command(
                    "EVALSHA", scripts.ENQUEUE.sha, len(script_keys), *script_keys, *args
                )
                chunks.append(chunk)
                calls.append((script_keys, args))
            if wait:
                connection.send_command("WAIT", wait, get_settings().enqueue_wait_timeout_ms)
            for _ in range(len(chunks) + bool(wait)):
                try:
                    replies.append(connection.read_response())
                except ResponseError as exc:  # that call's error; the next replies follow
                    replies.append(exc)
        if wait:
            acked = replies.pop()
            if isinstance(acked, BaseException):
                raise acked
        for index, reply in enumerate(replies):
            if isinstance(reply, NoScriptError):  # Redis restarted mid-way: plain EVAL.
                try:
                    replies[index] = scripts.ENQUEUE(client, *calls[index])
                except ResponseError as exc:
                    replies[index] = exc
    results: list[Job | None] = []
    failures: list[tuple[str, BaseException]] = []
    for chunk, reply in zip(chunks, replies, strict=True):
        for position, publication in enumerate(chunk):
            try:
                if isinstance(reply, BaseException):
                    raise reply
                results.append(outcome(publication, *reply[2 * position : 2 * position + 2]))
            except Exception as exc:
                results.append(None)
                failures.append((publication.job_id, exc))
    if wait:
        try:
            _check_replicated([job.id for job in results if job is not None], int(acked))
        except NotReplicated as exc:
            failures += [(job.id, exc) for job in results if job is not None]
    if failures:
        raise PublishError(failures, results)
    return results
