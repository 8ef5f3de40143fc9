"""The broker message of a job, built for a direct push onto kombu's Redis list.

Why not ``app.send_task``: a job needs its status record written, and the dedup gate and the
backpressure check decided, atomically with the push; with send_task that is at least two round
trips and not atomic (and a configured result backend adds a SUBSCRIBE per task). Enqueue
instead pushes the message in the same Lua script that writes the record: one round trip.

The task headers and body come from Celery's own protocol-2 builder
(``app.amqp.as_task_v2``); only the outer envelope is written here, in the exact shape kombu's
Redis transport stores (``kombu.transport.virtual.Channel.prepare_message`` and
``_inplace_augment_message``): JSON, body base64-encoded, published to the anonymous exchange with
the queue name as routing key, so a stock ``celery worker`` consumes it like any other task.
Only JSON is ever written (never pickle).
"""

from __future__ import annotations

import base64
import functools
import json
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any, TypedDict

from celery.utils.nodenames import anon_nodename
from kombu.exceptions import EncodeError
from kombu.utils.json import JSONEncoder, register_type

from frappe_celery.broker.signing import SIGNATURE_HEADER, canonical_headers, sign, signature_of
from frappe_celery.errors import InvalidArgumentError, UnserializableArgumentError

TASK_NAME = "frappe_celery.execute_job"

# A message property the worker's transport sets on every delivery: True when reserve.lua found,
# as it took the message, that the job's record lets it start, so its pool child need not wait
# for start.lua's reply before running it (worker/task.py, run_while_starting). The transport always
# overwrites it: a message cannot vouch for itself.
START_CHECKED = "frappe_celery_start_checked"

# Refused at enqueue, before anything is written: a job message larger than this (Redis keeps it
# in the queue and a copy in the job record, and every worker reads it whole), and more keyword
# arguments than this (no Frappe function takes that many; a flood of them is hostile input).
MAX_MESSAGE_BYTES = 4 * 1024 * 1024
MAX_KWARGS = 1000
_ORIGIN = anon_nodename()

# kombu's JSON (its type tags: datetimes, Decimals, UUIDs round-trip), from one encoder:
# ``kombu.utils.json.dumps`` builds a new encoder per call, a microsecond of every enqueue.
_json_encode: Callable[[Any], str] = JSONEncoder().encode


class JobPayload(TypedDict):
    """The keyword arguments of the generic task: everything a worker needs to run one job.

    The first seven mirror Frappe's ``execute_job(site, method, event, job_name, kwargs, user,
    is_async)``; the rest carry what Frappe kept in the RQ job itself.
    """

    site: str
    method: str
    event: str | None
    job_name: str
    kwargs: dict[str, Any]
    user: str | None
    is_async: bool
    queue: str
    timeout: float
    token: str
    on_success: str | None
    on_failure: str | None


def _accepted(hint: Any) -> tuple[type, ...]:
    """The runtime types a field's annotation accepts (a float field takes an int too)."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return tuple(t for arg in typing.get_args(hint) for t in _accepted(arg))
    base = typing.get_origin(hint) or hint
    return (int, float) if base is float else (base,)


# JobPayload's fields and the types each may hold, read from the TypedDict itself.
PAYLOAD_TYPES: dict[str, tuple[type, ...]] = {
    name: _accepted(hint) for name, hint in typing.get_type_hints(JobPayload).items()
}


# Payload fields a message leaves out when they hold their default (a job's job_name defaults
# to its method): most jobs carry no event, user or callbacks, and base64 makes every byte of
# the body 1.33 in Redis. ``expand_payload`` puts them back wherever a message is read.
PAYLOAD_DEFAULTS: dict[str, Any] = {
    "event": None,
    "user": None,
    "is_async": True,
    "on_success": None,
    "on_failure": None,
}


def compact_payload(payload: JobPayload) -> dict[str, Any]:
    """``payload`` as a message carries it: without the fields that hold their default."""
    return {
        name: value
        for name, value in payload.items()
        if not (name in PAYLOAD_DEFAULTS and value is PAYLOAD_DEFAULTS[name])
        and not (name == "job_name" and value == payload["method"])
    }


def expand_payload(carried: Mapping[str, Any]) -> dict[str, Any]:
    """The payload a message carries with the fields it left out at their defaults (the
    inverse of :func:`compact_payload`; a message with every field passes unchanged)."""
    return {**PAYLOAD_DEFAULTS, "job_name": carried.get("method"), **carried}


_PAYLOAD_FIELDS = frozenset(PAYLOAD_TYPES)


def payload_problem(payload: Mapping[str, Any]) -> tuple[str, str] | None:
    """``(field, why)`` when ``payload`` is not a JobPayload (a missing, extra or mistyped
    field), else None. Enqueue checks what it built with it, and a worker every message it
    takes: one written straight to the broker passed no enqueue validation."""
    # The usual case first, cheaply (a plain loop: every enqueue runs it): every field there,
    # each of an accepted type.
    if payload.keys() == _PAYLOAD_FIELDS:
        for name, accepted in PAYLOAD_TYPES.items():
            if type(payload[name]) not in accepted:
                break
        else:
            return None
    missing = sorted(PAYLOAD_TYPES.keys() - payload.keys())
    if missing:
        return missing[0], f"missing field(s) {', '.join(missing)}"
    extra = sorted(payload.keys() - PAYLOAD_TYPES.keys())
    if extra:
        return extra[0], f"unexpected field(s) {', '.join(extra)}"
    for name, accepted in PAYLOAD_TYPES.items():
        if not isinstance(payload[name], accepted):
            allowed = " or ".join("None" if t is type(None) else t.__name__ for t in accepted)
            return name, f"field {name} must be {allowed}, got {type(payload[name]).__name__}"
    return None


def _first_failing(
    user_kwargs: dict[str, Any], errors: type[BaseException] | tuple[type[BaseException], ...]
) -> str | None:
    """The first user argument whose encoding raises one of ``errors`` (to name it)."""
    for name, value in user_kwargs.items():
        try:
            _json_encode(value)
        except errors:
            return name
    return None


class TagShapedDict:
    """A user's dict whose keys are exactly kombu's type-tag keys (``__type__``, ``__value__``):
    kombu's decoder would read it as a tag (and raise on an unknown one, or turn data into a
    datetime), so it travels escaped, as its items under a marker of ours, and arrives as the
    same dict (kombu decodes the marker with the decoder registered below)."""

    __slots__ = ("items",)

    def __init__(self, items: list[list[Any]]) -> None:
        self.items = items


TAG_SHAPED_DICT_MARKER = "frappe_celery.dict"
_KOMBU_TAG_KEYS = {"__type__", "__value__"}
register_type(
    TagShapedDict,
    TAG_SHAPED_DICT_MARKER,
    lambda escaped: escaped.items,
    lambda items: {key: value for key, value in items},
)


def escape_tag_shaped(value: Any) -> Any:
    """``value`` with every dict shaped like a kombu type tag, at any depth, escaped."""
    if isinstance(value, dict):
        escaped = {key: escape_tag_shaped(item) for key, item in value.items()}
        if escaped.keys() == _KOMBU_TAG_KEYS:
            return TagShapedDict([[key, item] for key, item in escaped.items()])
        return escaped
    if isinstance(value, (list, tuple)):
        return [escape_tag_shaped(item) for item in value]
    return value


def encode_data(value: Any) -> str:
    """kombu's JSON of ``value`` (datetimes, Decimals, UUIDs tagged), with any dict of the user's
    that reads like a tag escaped: what a job message, a record's payload and a return value
    are written with."""
    encoded = _json_encode(value)
    # Only JSON with a type tag in it may hold a dict shaped like one: the walk costs more than
    # the encoding, and is not done otherwise.
    if '"__value__"' in encoded:
        encoded = _json_encode(escape_tag_shaped(value))
    return encoded


def encode_body(job_kwargs: JobPayload, user_kwargs: dict[str, Any]) -> str:
    """JSON of Celery's task body ``[args, kwargs, embed]`` for the generic task.

    datetimes, dates, times, Decimals and UUIDs round-trip (kombu's JSON type tags). Raises
    :class:`UnserializableArgumentError` naming the first user argument that cannot travel, and
    :class:`InvalidArgumentError` for more than MAX_KWARGS arguments, a value nested too deeply
    to encode, or a message over MAX_MESSAGE_BYTES (naming its largest argument).
    """
    if len(user_kwargs) > MAX_KWARGS:
        raise InvalidArgumentError(
            "kwargs", f"{len(user_kwargs)} keyword arguments", f"at most {MAX_KWARGS}"
        )
    # The embed (callbacks, errbacks, chain, chord) is empty: Celery's worker reads each of
    # them with a default of None, so `{}` says the same in 60 bytes less.
    body: tuple[Any, ...] = ((), compact_payload(job_kwargs), {})
    try:
        encoded = encode_data(body)
    except RecursionError:
        name = _first_failing(user_kwargs, RecursionError)
        if name is None:
            raise
        raise InvalidArgumentError(
            name, "a value nested too deeply to encode",
            "nesting within Python's recursion limit (a few hundred levels)",
        ) from None  # fmt: skip
    except (TypeError, ValueError, EncodeError):
        name = _first_failing(user_kwargs, (TypeError, ValueError, EncodeError))
        if name is None:
            raise
        raise UnserializableArgumentError(name, user_kwargs[name]) from None
    if len(encoded) > MAX_MESSAGE_BYTES:
        sizes = {name: len(_json_encode(value)) for name, value in user_kwargs.items()}
        largest = max(sizes, key=lambda name: sizes[name], default="kwargs")
        raise InvalidArgumentError(
            largest,
            f"{sizes.get(largest, len(encoded))} bytes of JSON, a {len(encoded)}-byte message",
            f"a job message of at most {MAX_MESSAGE_BYTES} bytes; pass a reference (a "
            "document name, a file) and load the data inside the job",
        )
    return encoded


def build_message(
    app: Any,
    *,
    job_id: str,
    queue: str,
    priority: int,
    body_json: str,
    soft_time_limit: float,
    time_limit: float,
    display: str,
    delivery_tag: str,
    signing_key: str,
) -> str:
    """The JSON string to push for this task: what kombu's Redis transport would have pushed,
    less what Celery's worker reads with a default anyway (``_HEADER_DEFAULTS``), signed with
    ``signing_key`` (signing.py).

    Only the task id, the delivery tag, the body and the signature differ between the jobs of
    one queue, priority, time limit and name, so the builder runs once for those (a cached
    template, with the signed form of its headers) and each job's message is the template with
    its own values put in: the same string :func:`build_message_uncached` gives
    (tests/test_transport.py), for a fraction of the cost.
    """
    template, signed_headers = _message_template(
        app, queue, priority, soft_time_limit, time_limit, display
    )
    body = base64.b64encode(body_json.encode("utf-8")).decode("ascii")
    escaped_id = json.dumps(job_id)[1:-1]
    signature = signature_of(signing_key, signed_headers.replace(_ID_PLACEHOLDER, escaped_id), body)
    # The id last: the tag is a uuid, the body base64 and the signature hex, none can hold a
    # placeholder.
    return (
        template.replace(_TAG_PLACEHOLDER, delivery_tag)
        .replace(_BODY_PLACEHOLDER, body)
        .replace(_SIGNATURE_PLACEHOLDER, signature)
        .replace(_ID_PLACEHOLDER, escaped_id)
    )


# What the template holds in place of each job's own values.
_ID_PLACEHOLDER = "frappe-celery-template-task-id"
_TAG_PLACEHOLDER = "frappe-celery-template-delivery-tag"
_BODY_PLACEHOLDER = "frappe-celery-template-body"
_SIGNATURE_PLACEHOLDER = "frappe-celery-template-signature"


@functools.lru_cache(maxsize=512)
def _message_template(
    app: Any, queue: str, priority: int, soft_time_limit: float, time_limit: float, display: str
) -> tuple[str, str]:
    """The message with placeholders, and its headers as signed (signing.canonical_headers)."""
    headers = _task_headers(app, _ID_PLACEHOLDER, soft_time_limit, time_limit, display)
    signed_headers = canonical_headers(headers)
    headers[SIGNATURE_HEADER] = _SIGNATURE_PLACEHOLDER
    envelope = _envelope(headers, queue, priority, _BODY_PLACEHOLDER, _TAG_PLACEHOLDER)
    return envelope, signed_headers


def build_message_uncached(
    app: Any,
    *,
    job_id: str,
    queue: str,
    priority: int,
    body_b64: str,
    soft_time_limit: float,
    time_limit: float,
    display: str,
    delivery_tag: str,
    signing_key: str,
) -> str:
    """The message, built by Celery's protocol-2 builder (``body_b64``: the base64 body)."""
    headers = _task_headers(app, job_id, soft_time_limit, time_limit, display)
    headers[SIGNATURE_HEADER] = sign(signing_key, headers, body_b64)
    return _envelope(headers, queue, priority, body_b64, delivery_tag)


def _task_headers(
    app: Any, job_id: str, soft_time_limit: float, time_limit: float, display: str
) -> dict[str, Any]:
    task_message = app.amqp.as_task_v2(
        job_id,
        TASK_NAME,
        args=(),
        kwargs={},
        soft_time_limit=soft_time_limit,
        time_limit=time_limit,
        ignore_result=True,
        origin=_ORIGIN,
        # Shown by `celery inspect`; arguments are not printed (they may hold personal data).
        argsrepr="",
        kwargsrepr=display,
    )
    return {
        name: value
        for name, value in task_message.headers.items()
        if (name not in _HEADER_DEFAULTS or value != _HEADER_DEFAULTS[name])
        # A job is its own root (the worker reads a missing root id as none: no workflow).
        and not (name == "root_id" and value == job_id)
    }


def _envelope(
    headers: dict[str, Any], queue: str, priority: int, body_b64: str, delivery_tag: str
) -> str:
    properties = {
        "delivery_info": {"exchange": "", "routing_key": queue},
        "priority": priority,
        "body_encoding": "base64",
        "delivery_tag": delivery_tag,
    }
    envelope = {
        "body": body_b64,
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": headers,
        "properties": properties,
    }
    return json.dumps(envelope)


# Celery's protocol-2 headers that its worker reads with a default (celery.worker.request's
# Request and celery.app.task's Context, the same in Celery 5.4 to 5.7), and that default: a
# header holding it is left out. The message's properties keep only what kombu's Redis transport
# and Celery's worker read (delivery info, priority, body encoding, delivery tag); the
# correlation id, reply-to and delivery mode serve RPC result replies and AMQP, which no job
# uses. About 350 bytes less per message, in the queue's Redis memory and on every read.
_HEADER_DEFAULTS: dict[str, Any] = {
    "shadow": None,
    "eta": None,
    "expires": None,
    "group": None,
    "group_index": None,
    "retries": 0,
    "parent_id": None,
    "argsrepr": "",
    "replaced_task_nesting": 0,
    "stamped_headers": None,
    "stamps": {},
    # Read by nothing in the worker (Celery's protocol-1 converter aside).
    "lang": "py",
    # Missing, the worker takes the task's own setting, which is True (worker/task.py).
    "ignore_result": True,
}
