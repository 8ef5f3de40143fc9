"""Reading and writing what the broker holds, as the tests check it: snapshots of every key
(to show a refused call wrote nothing), a job's record and waiting message, and forged messages
pushed straight onto a queue (what someone with write access to Redis could do)."""

from __future__ import annotations

import base64
import json
import pickle
import uuid
from typing import Any

import redis

import frappe_celery as frappe
from frappe_celery.broker import keys, signing
from frappe_celery.job import find_waiting

from .processes import wait_for

# Kombu's own bookkeeping, written by running workers at any time, never by enqueue: queue
# bindings, and the unacked hash / index / restore mutex of messages a worker holds.
# What running workers write on their own at any moment (bindings, held messages, heartbeats),
# and the doorbells, which they empty at any moment (a doorbell is rung only with a queue push).
WORKER_BOOKKEEPING = (b"_kombu.binding.", b"unacked", keys.WORKERS.encode(),
                      keys.alive("").encode(), keys.HOLDERS.encode(),
                      keys.doorbell("").encode())  # fmt: skip


# The outcome counters (broker/counters.py): an enqueue refused as overloaded counts itself
# there, in the same script call that refuses it, and writes nothing else.
OUTCOME_COUNTERS = (keys.METRICS_OUTCOMES.encode(), keys.METRICS_METHODS.encode())


def redis_state(r: redis.Redis) -> dict[bytes, bytes | None]:
    """Every key enqueue could write, with its serialized value (to detect any change); the
    outcome counters left out."""
    return {
        key: r.dump(key)
        for key in r.scan_iter()
        if not key.startswith(WORKER_BOOKKEEPING) and key not in OUTCOME_COUNTERS
    }


def redis_snapshot(r: redis.Redis) -> dict[bytes, bytes | None]:
    """Every frappe-celery key and queue list with its serialized value (what running workers
    write on their own, heartbeats and held messages, left out)."""

    names = [name for name in r.scan_iter(match=keys.PREFIX + "*")
             if not name.startswith(WORKER_BOOKKEEPING)]  # fmt: skip
    for queue in frappe.get_queue_list():
        names += [name.encode() for name in keys.queue_lists(queue) if r.exists(name)]
    return {name: r.dump(name) for name in sorted(names)}


FINAL_STATUSES = ("finished", "failed", "canceled")


def unique(prefix: str) -> str:
    return f"test:{prefix}:{uuid.uuid4().hex[:8]}"


def wait_final(job: frappe.Job, timeout: float = 20) -> str:
    """Wait until the job reached a final status and return it."""
    wait_for(lambda: job.get_status() in FINAL_STATUSES, timeout)
    return str(job.get_status())


def record_of(r, job: frappe.Job) -> dict[str, str]:
    raw = r.hgetall(keys.job(job.id))
    return {k.decode(): v.decode() for k, v in raw.items()}


def waiting_message(job: frappe.Job) -> str:
    """The broker message of a job still waiting in its queue (found by its delivery tag)."""
    record = job.refresh()
    found = find_waiting(record["list"], record["delivery_tag"])
    assert found is not None, f"job {job.id}: its message is not waiting in its queue"
    return found[1]


def all_queue_lists() -> list[str]:
    return [name for queue in frappe.get_queue_list() for name in keys.queue_lists(queue)]


def signed(envelope: dict[str, Any]) -> str:
    """``envelope`` signed with the session's key, as JSON: what a forger who stole the key
    could push (the worker's checks behind the signature are defence in depth)."""
    key = frappe.get_settings().require_signing_key()
    envelope["headers"][signing.SIGNATURE_HEADER] = signing.sign(
        key, envelope["headers"], envelope["body"]
    )
    return json.dumps(envelope)


def forge_from(
    r,
    template: frappe.Job,
    queue: str,
    changes: dict[str, Any],
    *,
    pickled_kwargs: dict[str, Any] | None = None,
) -> str:
    """Push a copy of ``template``'s broker message onto ``queue``, rewritten by hand.

    This is what anyone with write access to the broker and the signing key can do: no enqueue
    validation runs. ``changes`` replace fields of the execute_job payload; with
    ``pickled_kwargs`` the body is pickled instead of JSON (content type
    application/x-python-serialize). Returns the list.
    """
    envelope = json.loads(waiting_message(template))
    args, payload, embed = json.loads(base64.b64decode(envelope["body"]))
    payload.update(changes, queue=queue)
    if pickled_kwargs is None:
        body = json.dumps([args, payload, embed]).encode()
    else:
        payload["kwargs"] = pickled_kwargs
        body = pickle.dumps((tuple(args), payload, embed))
        envelope["content-type"] = "application/x-python-serialize"
        envelope["content-encoding"] = "binary"
    envelope["body"] = base64.b64encode(body).decode("ascii")
    envelope["properties"]["delivery_info"]["routing_key"] = queue
    target = keys.queue_list(queue, int(envelope["properties"]["priority"]))
    r.lpush(target, signed(envelope))
    return target


def assert_worker_alive(worker) -> None:
    """The worker process is up and still runs jobs."""
    assert worker.process.poll() is None, worker.output()
    probe = frappe.enqueue("tests.jobs.add", a=20, b=22)
    assert wait_final(probe) == "finished", probe.exc_info
    assert probe.return_value() == 42
