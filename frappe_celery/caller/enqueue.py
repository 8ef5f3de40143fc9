"""Caller side: Frappe's enqueue contract, translated into one Celery message.

validate every argument ─► encode (JSON only) ─► one Lua script: dedup gate, backpressure check,
status record and the push onto the broker list, atomically, in one round trip.

Nothing is written to Redis until every argument passed validation.
"""

from __future__ import annotations

import functools
import inspect
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from frappe_celery import records
from frappe_celery.broker.wire import JobPayload, encode_body, payload_problem
from frappe_celery.builtin_jobs import run_doc_method
from frappe_celery.caller.ids import random_token, uuid4_text
from frappe_celery.caller.publish import (
    Publication,
    prepare,
    publish,
    publish_batch,
    record_fields,
)
from frappe_celery.caller.transaction import publish_after_commit
from frappe_celery.config import get_settings
from frappe_celery.context import doc_method_call_refusal, get_job_context
from frappe_celery.errors import InvalidArgumentError, UnserializableArgumentError
from frappe_celery.job import ACTIVE_STATUSES, Job, JobStatus
from frappe_celery.methods import call_with_accepted_kwargs, import_trusted, normalize_path

RUN_DOC_METHOD = "frappe_celery.jobs.run_doc_method"


# -- queues --------------------------------------------------------------------------------------


def get_queues_timeout() -> dict[str, int]:
    """Queue name -> default timeout (s): short, default, long, then the configured ones."""
    return dict(get_settings().queues)


def get_queue_list(
    queue_list: str | list[str] | None = None, build_queue_name: bool = False
) -> list[str]:
    """The queue names (all, or the given ones after validation), in worker order.

    ``build_queue_name`` is accepted for Frappe compatibility: Celery queues are not prefixed
    with a bench id, so the names are the same either way.
    """
    if queue_list is None:
        return list(get_settings().queues)
    names = [queue_list] if isinstance(queue_list, str) else list(queue_list)
    for name in names:
        validate_queue(name)
    return names


def validate_queue(queue: Any, default_queue_list: list[str] | None = None) -> None:
    """Raise :class:`InvalidArgumentError` unless ``queue`` is a configured queue."""
    valid = default_queue_list or list(get_settings().queues)
    if not isinstance(queue, str) or queue not in valid:
        raise InvalidArgumentError(
            "queue",
            queue,
            f"Queue should be one of {', '.join(valid)} "
            "(custom queues come from the 'workers' block of the config file)",
        )


# -- job ids -------------------------------------------------------------------------------------


def current_site() -> str:
    return get_job_context().current_site() or get_settings().site


def _site_prefix() -> str:
    return f"{current_site()}::" if get_settings().job_id_style == "v15" else f"{current_site()}||"


def create_job_id(job_id: str | None = None, *, site: str | None = None) -> str:
    """Frappe's site-namespaced id (a uuid when none is given): Frappe 16's
    ``{site}||{job_id}`` with ':' replaced by '|', or Frappe 15's ``{site}::{job_id}`` in a
    Frappe 15 bench (``job_id_style``). ``site``: the current site, when the caller has it."""
    site = current_site() if site is None else site
    if get_settings().job_id_style == "v15":
        return f"{site}::{job_id or uuid4_text()}"
    return f"{site}||{job_id or uuid4_text()}".replace(":", "|")


def _namespaced(job_id: str) -> str:
    """Accept both the caller's id and the site-namespaced one (Job.id)."""
    if not isinstance(job_id, str) or not job_id:
        raise InvalidArgumentError("job_id", job_id, "expected a non-empty string")
    return job_id if job_id.startswith(_site_prefix()) else create_job_id(job_id)


def get_job(job_id: str) -> Job | None:
    """The job handle for a caller's job id (or a namespaced one), None if there is none."""
    return Job.fetch(_namespaced(job_id))


def get_job_status(job_id: str) -> JobStatus | None:
    """The job's status, None for an unknown (or expired) id: never Celery's PENDING."""
    return Job(_namespaced(job_id)).get_status()


def is_job_enqueued(job_id: str) -> bool:
    """True while the job is queued or started."""
    return get_job_status(job_id) in ACTIVE_STATUSES


# -- validation ----------------------------------------------------------------------------------


# RQ's parse_timeout units ("1h", "30m", "45s", "2d"): ERPNext passes timeout="3600".
_TIMEOUT_UNITS = {"d": 86400, "h": 3600, "m": 60, "s": 1}
TIMEOUT_RULE = (
    "expected a positive number of seconds, a string RQ accepts ('3600', '1h', '30m', '45s', "
    "'2d'), or None (or 0, as in Frappe) for the queue's"
)


def parse_timeout(timeout: Any) -> float | None:
    """The job's timeout in seconds as RQ reads it, None for the queue's own.

    Frappe treats a falsy timeout as "the queue's"; RQ turns ``"3600"`` and ``"1h"`` into
    seconds. A negative timeout (RQ's "never") has no Celery equivalent: refused.
    """
    if timeout is None:
        return None
    if isinstance(timeout, str):
        text = timeout.strip()
        # isdecimal, not isdigit: int() takes no superscript digits ("²" is a digit).
        if text.isdecimal():
            seconds = int(text)
        elif text[:-1].isdecimal() and text[-1:].lower() in _TIMEOUT_UNITS:
            seconds = int(text[:-1]) * _TIMEOUT_UNITS[text[-1:].lower()]
        else:
            raise InvalidArgumentError("timeout", timeout, TIMEOUT_RULE)
        return float(seconds) or None
    # NaN fails the range check too.
    if (
        isinstance(timeout, bool)
        or not isinstance(timeout, int | float)
        or not (0 <= timeout < float("inf"))
    ):
        raise InvalidArgumentError("timeout", timeout, TIMEOUT_RULE)
    return float(timeout) or None


def _validate_callback(argument: str, callback: Any) -> str | None:
    if callback is None:
        return None
    return normalize_path(argument, callback)


def _validate_job_id(job_id: Any, deduplicate: bool) -> None:
    if deduplicate and job_id is None:
        raise InvalidArgumentError(
            "job_id", job_id, "deduplicate=True needs a job_id to deduplicate on"
        )
    if job_id is not None and (not isinstance(job_id, str) or not job_id.strip()):
        raise InvalidArgumentError("job_id", job_id, "expected a non-empty string or None")


# -- enqueue -------------------------------------------------------------------------------------


def make_payload(
    method_path: str,
    queue: str,
    timeout: float | None,
    *,
    site: str,
    user: str | None,
    event: str | None = None,
    job_name: str | None = None,
    kwargs: dict[str, Any] | None = None,
    is_async: bool = True,
    on_success: str | None = None,
    on_failure: str | None = None,
) -> JobPayload:
    """The generic task's arguments for one job (arguments already validated)."""
    return {
        "site": site,
        "method": method_path,
        "event": event,
        "job_name": job_name or method_path,
        "kwargs": kwargs or {},
        "user": user,
        "is_async": is_async,
        "queue": queue,
        "timeout": float(timeout) if timeout is not None else float(get_settings().queues[queue]),
        "token": random_token(),
        "on_success": on_success,
        "on_failure": on_failure,
    }


def enqueue(
    method: str | Callable[..., Any],
    queue: str = "default",
    timeout: float | None = None,
    event: str | None = None,
    is_async: bool = True,
    job_name: str | None = None,
    now: bool = False,
    enqueue_after_commit: bool = False,
    *,
    on_success: str | Callable[..., Any] | None = None,
    on_failure: str | Callable[..., Any] | None = None,
    at_front: bool = False,
    job_id: str | None = None,
    deduplicate: bool = False,
    at_front_when_starved: bool = False,
    **kwargs: Any,
) -> Job | Any | None:
    """Enqueue ``method(**kwargs)`` as a background job, exactly as ``frappe.enqueue`` does.

    Returns a :class:`Job` handle; the method's return value with ``now=True``; None with
    ``enqueue_after_commit=True`` or when ``deduplicate=True`` found the id queued or started.

    Raises :class:`InvalidArgumentError` / :class:`UnserializableArgumentError` (nothing is
    written), :class:`QueueOverloaded`, :class:`BrokerUnreachable`.
    """
    call = _checked(locals())
    if now:
        # Frappe's frappe.call: in-process, keyword arguments the function lacks are dropped.
        func: Callable[..., Any] = (
            import_trusted(normalize_path("method", method)) if isinstance(method, str) else method
        )
        return call_with_accepted_kwargs(func, call["kwargs"])
    full_id, payload, body_json = _encode_job(call)
    if not call["is_async"]:
        # The one import of the worker's code from the caller's, on this branch only: the
        # worker's path run here (worker/attempt.py, which imports nothing of Celery's worker).
        # A web process that never passes is_async=False loads nothing of the worker.
        from frappe_celery.worker.attempt import run_in_process

        records.create(full_id, payload["token"], record_fields(full_id, payload))
        return run_in_process(full_id, payload)
    publication = _prepare(call, full_id, payload, body_json)
    if enqueue_after_commit:
        publish_after_commit(publication)
        return None
    return publish(publication)


# enqueue's signature is the one definition of its parameters: enqueue_many binds each call to
# it, and both check a call's arguments with _checked.
ENQUEUE_SIGNATURE = inspect.signature(enqueue)
# What a tuple call gives, in order: enqueue's positional parameters.
POSITIONAL = tuple(
    name for name, parameter in ENQUEUE_SIGNATURE.parameters.items()
    if parameter.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD
)  # fmt: skip


def _checked(arguments: dict[str, Any]) -> dict[str, Any]:
    """A call's arguments (enqueue's parameters by name, the job's in ``kwargs``), checked,
    with the timeout in seconds (None: the queue's) and ``is_async`` a bool."""
    call = dict(arguments)
    kwargs = dict(call["kwargs"])
    # Frappe still accepts the pre-3.7 spelling.
    call["is_async"] = bool(kwargs.pop("async", call["is_async"]))
    call["kwargs"] = kwargs
    _validate_job_id(call["job_id"], call["deduplicate"])
    validate_queue(call["queue"])
    call["timeout"] = parse_timeout(call["timeout"])
    if call["job_name"] is not None:
        warnings.warn(
            "enqueue(job_name=...) is deprecated, use job_id=...; job_name is kept as the "
            "job's display name",
            DeprecationWarning,
            stacklevel=3,
        )
    return call


def _prepare(call: dict[str, Any], full_id: str, payload: JobPayload, body: str) -> Publication:
    return prepare(
        full_id, payload, body, at_front=call["at_front"], deduplicate=call["deduplicate"],
        at_front_when_starved=call["at_front_when_starved"],
    )  # fmt: skip


def _encode_job(call: dict[str, Any]) -> tuple[str, JobPayload, str]:
    """The job's full id, its payload and its encoded body; raises for anything a worker would
    refuse, before anything is written."""
    context = get_job_context()
    # A framework's own argument types (Frappe's Documents, a Document's bound method) become
    # JSON here, so a bad argument is refused before anything is written.
    method, kwargs, job_name = context.encode_call(call["method"], call["kwargs"], call["job_name"])
    method_path = normalize_path("method", method)
    refused = doc_method_call_refusal(context, method_path, kwargs)
    if refused is not None:
        raise InvalidArgumentError(*refused)
    site = current_site()
    full_id = create_job_id(call["job_id"], site=site)
    payload = make_payload(
        method_path,
        call["queue"],
        call["timeout"],
        site=site,
        user=context.current_user(),
        event=call["event"],
        job_name=job_name,
        kwargs=kwargs,
        is_async=call["is_async"],
        on_success=_validate_callback("on_success", call["on_success"]),
        on_failure=_validate_callback("on_failure", call["on_failure"]),
    )
    # What a worker will check (wire.payload_problem): event, job_name... of the wrong type are
    # refused here rather than failed there.
    problem = payload_problem(payload)
    if problem is not None:
        field, why = problem
        raise InvalidArgumentError(field, payload.get(field), why)
    return full_id, payload, encode_body(payload, kwargs)


# -- enqueue_many --------------------------------------------------------------------------------


def enqueue_many(calls: Iterable[Mapping[str, Any] | Sequence[Any]]) -> list[Job | None]:
    """Enqueue many jobs in one pipelined round trip; one handle per call, in order.

    Each call is what ``enqueue`` takes: a dict of its keyword arguments
    (``{"method": "app.tasks.f", "queue": "short", "job_id": ..., "x": 1}``), or a tuple of its
    positional ones (``("app.tasks.f", "short")``). Every call is validated and encoded first:
    if one is invalid, :class:`InvalidArgumentError` (or :class:`UnserializableArgumentError`)
    names it as ``calls[i]`` and nothing at all is written. Then each job goes through
    enqueue's own script, in order: dedup (``None`` in its place, also for a repeat within the
    batch), the max_queued_jobs check, ``enqueue_after_commit`` (``None``, published with the
    transaction). ``now=True`` and ``is_async=False`` run a job in the caller, which has no
    place in a batch: refused. If some jobs cannot be published (a full queue), the others are
    and :class:`PublishError` lists them.
    """
    if isinstance(calls, (str, bytes, Mapping)):
        raise InvalidArgumentError("calls", calls, "expected a list of enqueue calls")
    builders: list[tuple[Callable[[], Publication], bool]] = []
    for index, call in enumerate(calls):
        try:
            builders.append(_prepare_call(call))
        except InvalidArgumentError as exc:
            where = ".".join(filter(None, [f"calls[{index}]", exc.argument]))
            raise InvalidArgumentError(where, exc.given, exc.allowed) from None
        except UnserializableArgumentError as exc:
            where = f"calls[{index}].{exc.argument}"
            raise UnserializableArgumentError(where, exc.given) from None
    # Every call is validated and encoded: nothing left can refuse one. The publications are
    # built as they are sent, so Redis runs one script call while the next jobs' messages are
    # being built (a generator to publish_batch), instead of after all of them.
    published = iter(publish_batch(build() for build, after_commit in builders if not after_commit))
    results: list[Job | None] = []
    for build, after_commit in builders:
        if after_commit:
            publish_after_commit(build())
            results.append(None)
        else:
            results.append(next(published))
    return results


def _prepare_call(
    call: Mapping[str, Any] | Sequence[Any],
) -> tuple[Callable[[], Publication], bool]:
    """One enqueue_many call, validated and encoded: what builds its publication, and whether
    it waits for the transaction's commit."""
    if isinstance(call, Mapping):
        if "method" not in call:
            raise InvalidArgumentError("method", None, "every call needs the method to run")
        bound = _bind(call, lambda: ENQUEUE_SIGNATURE.bind(**call))
    elif isinstance(call, (tuple, list)):
        if len(call) > len(POSITIONAL):
            raise InvalidArgumentError(
                "", call, f"a tuple of at most {len(POSITIONAL)} of enqueue's positional "
                f"arguments ({', '.join(POSITIONAL)}); use a dict for keyword arguments",
            )  # fmt: skip
        bound = _bind(call, lambda: ENQUEUE_SIGNATURE.bind(*call))
    else:
        raise InvalidArgumentError(
            "", call, "a dict of enqueue's keyword arguments or a tuple of its positional ones"
        )
    bound.apply_defaults()
    checked = _checked(bound.arguments)
    for name, value in (("now", checked["now"]), ("is_async", not checked["is_async"])):
        if value:
            raise InvalidArgumentError(
                name, not value if name == "is_async" else value,
                "enqueue_many only queues jobs; run this one with enqueue",
            )  # fmt: skip
    full_id, payload, body_json = _encode_job(checked)
    build = functools.partial(_prepare, checked, full_id, payload, body_json)
    return build, bool(checked["enqueue_after_commit"])


def _bind(call: Any, bind: Callable[[], inspect.BoundArguments]) -> inspect.BoundArguments:
    try:
        return bind()
    except TypeError as exc:  # the method given twice, by position and by name
        raise InvalidArgumentError("", call, f"enqueue's arguments: {exc}") from None


def enqueue_doc(
    doctype: str,
    name: str | None = None,
    method: str | None = None,
    queue: str = "default",
    timeout: float | None = None,
    now: bool = False,
    **kwargs: Any,
) -> Job | Any | None:
    """Run ``getattr(get_doc(doctype, name), method)(**kwargs)`` as a background job.

    Unlike Frappe (which passes 300 s), the timeout defaults to the queue's own, so
    ``enqueue_doc(..., queue="long")`` gets the long queue's 1500 s.
    """
    if not isinstance(method, str) or not method.isidentifier() or method.startswith("__"):
        raise InvalidArgumentError("method", method, "expected the name of a document method")
    reason = get_job_context().doc_method_refusal(doctype, method)
    if reason is not None:
        raise InvalidArgumentError("method", method, reason)
    if now:
        return run_doc_method(doctype, name, method, **kwargs)
    return enqueue(
        RUN_DOC_METHOD,
        queue=queue,
        timeout=timeout,
        doctype=doctype,
        name=name,
        doc_method=method,
        **kwargs,
    )
