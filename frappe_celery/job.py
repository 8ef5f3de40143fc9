"""The job handle (RQ's Job surface that Frappe code uses) and its statuses.

The handle reads the job's record, a Redis hash written when the job is published; its fields,
states and writes are records.py's (:data:`frappe_celery.records.FIELDS`).
"""

from __future__ import annotations

import base64
import contextvars
import json
import time
from datetime import datetime, timezone
from enum import Enum
from typing import Any

from kombu.utils.json import dumps as kombu_dumps
from kombu.utils.json import loads as kombu_loads

from frappe_celery import records
from frappe_celery.broker import keys
from frappe_celery.broker.wire import expand_payload
from frappe_celery.connection import as_text, broker_errors, get_redis
from frappe_celery.errors import FrappeCeleryError, InvalidArgumentError, InvalidJobOperation
from frappe_celery.job_ids import is_site_job as is_site_job
from frappe_celery.job_ids import site_job_prefix as site_job_prefix
from frappe_celery.job_ids import site_of_job_id as site_of_job_id
from frappe_celery.records import ACTIVE_STATUSES as ACTIVE_STATUSES
from frappe_celery.records import ENDED_STATUSES as ENDED_STATUSES
from frappe_celery.records import JobStatus as JobStatus
from frappe_celery.retention import site_retention


class NoSuchJobError(FrappeCeleryError, LookupError):
    """The job has no record (expired, deleted, or never enqueued): RQ's NoSuchJobError.

    Inside a Frappe bench the switch makes handles raise a subclass that is also the installed
    ``rq.exceptions.NoSuchJobError`` (integrations/frappe/rq_compat.py)."""


# The job running in this context (set by the worker around the method call).
_current_job_id: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "frappe_celery_current_job", default=None
)


def get_current_job() -> Job | None:
    """Inside a job: its handle (as RQ's get_current_job); elsewhere None."""
    job_id = _current_job_id.get()
    return Job(job_id) if job_id else None


def set_progress(percent: float, note: str | None = None) -> None:
    """Record the current job's progress (0-100) and a note on its record, where `frappe-celery
    jobs`, `status` and `top` show them. Outside a job it does nothing. In a bench, Frappe's own
    ``frappe.publish_progress`` does this too (integrations/frappe/progress.py)."""
    job = get_current_job()
    if job is not None:
        job.set_progress(percent, note)


def publish_progress(
    percent: float,
    title: str | None = None,
    doctype: str | None = None,
    docname: str | None = None,
    description: str | None = None,
) -> None:
    """Frappe's ``publish_progress`` signature: records the current job's progress.

    Outside a job it does nothing (Frappe's would only publish a realtime event).
    """
    job = get_current_job()
    if job is not None:
        job.set_progress(percent, description or title)


def _timestamp(value: str | None) -> datetime | None:
    return datetime.fromtimestamp(float(value), tz=timezone.utc) if value else None


def decode_message_kwargs(message: str | dict[str, Any]) -> dict[str, Any]:
    """The execute_job keyword arguments carried by a broker message (see wire.py), given as
    its JSON or decoded."""
    envelope = json.loads(message) if isinstance(message, str) else message
    body = base64.b64decode(envelope["body"])
    _args, kwargs, _embed = kombu_loads(body)
    return expand_payload(kwargs)


def message_job_id(text: str) -> str | None:
    """The job id a queued message names, or None for an entry that is no job message (anyone
    able to write to Redis can push anything onto a queue; workers drop it, see transport.py)."""
    try:
        job_id = json.loads(text)["headers"]["id"]
    except (ValueError, TypeError, KeyError):
        return None
    return job_id if isinstance(job_id, str) else None


def readable_message_kwargs(message: str) -> dict[str, Any] | None:
    """decode_message_kwargs, or None for a message whose body cannot be read: kombu's decoder
    raises more than ValueError on a bad type tag (TypeError, InvalidOperation, ...)."""
    try:
        payload = decode_message_kwargs(message)
    except Exception:
        return None
    return payload if isinstance(payload, dict) else None


# How long Job.job_kwargs waits for a message a worker is taking to reappear (held, or its job
# started): a few milliseconds in practice.
_IN_FLIGHT_WAIT = 1.0

# How many messages one LRANGE reads while a list is searched for one message.
_SEARCH_CHUNK = 500


def find_waiting(list_key: str, delivery_tag: str) -> tuple[int, str] | None:
    """The message with ``delivery_tag`` waiting in ``list_key``, as (its index from the left,
    the message), or None. Linear in the list's length: for looking at one job (a record keeps
    no copy of its message unless the job was deduplicated; see lua/enqueue.lua)."""
    needle = f'"delivery_tag": "{delivery_tag}"'
    client = get_redis()
    start = 0
    while True:
        with broker_errors():
            chunk = client.lrange(list_key, start, start + _SEARCH_CHUNK - 1)
        for offset, message in enumerate(chunk):
            text = as_text(message)
            if needle in text:
                return start + offset, text
        if len(chunk) < _SEARCH_CHUNK:
            return None
        start += _SEARCH_CHUNK


def record_payload(record: dict[str, str], search_queue: bool = True) -> dict[str, Any]:
    """The execute_job payload of a job (site, user, method, kwargs...) as its record and its
    message know it: kept in the record once a worker started the job (start.lua), in the
    record's copy of the message for a deduplicated job, else in the message itself, held by a
    worker or (with ``search_queue``: linear in the queue's length) waiting in its list. Empty
    when none is left (an in-process job, say) or not searched for."""
    if record.get("payload"):
        return dict(kombu_loads(record["payload"]))
    if record.get("message"):
        return decode_message_kwargs(record["message"])
    tag = record.get("delivery_tag")
    if not tag:
        return {}
    with broker_errors():
        held = get_redis().hget(keys.KOMBU_UNACKED, tag)
    if held:  # kombu's value: [message, exchange, routing key]
        return decode_message_kwargs(json.loads(held)[0])
    found = find_waiting(record["list"], tag) if search_queue and record.get("list") else None
    return decode_message_kwargs(found[1]) if found else {}


class Result:
    """A job's outcome as RQ's ``Job.latest_result()`` gives it: ``type`` (SUCCESSFUL for a
    finished job, FAILED for a failed or stopped one, as RQ records a stopped job),
    ``return_value``, ``exc_string`` (the traceback, or why it was stopped) and ``created_at``
    (when it ended, aware UTC)."""

    class Type(Enum):
        SUCCESSFUL = 1
        FAILED = 2
        STOPPED = 3

    def __init__(
        self,
        job_id: str,
        type: Any,
        *,
        id: str,
        created_at: datetime | None,
        return_value: Any = None,
        exc_string: str | None = None,
    ) -> None:
        self.job_id = job_id
        self.type = type
        self.id = id
        self.created_at = created_at
        self.return_value = return_value
        self.exc_string = exc_string

    def __repr__(self) -> str:
        return f"Result(id={self.id}, type={self.type.name})"

    def __bool__(self) -> bool:
        return bool(self.id)


class Job:
    """A handle on one job. Reads go to Redis each time, like RQ's ``get_status(refresh=True)``.

    Use :func:`frappe_celery.get_job` to obtain one for an existing id.
    """

    def __init__(self, job_id: str, record: dict[str, str] | None = None) -> None:
        self.id = job_id
        self._record = record
        self._meta: dict[str, Any] | None = None

    def __repr__(self) -> str:
        return f"<Job {self.id}>"

    # Two handles on one id are the same job, as with RQ's Job.
    def __eq__(self, other: object) -> bool:
        return isinstance(other, Job) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)

    def __json__(self) -> dict[str, Any]:
        """What Frappe's JSON responses show of a returned job (``bench execute frappe.enqueue``,
        a whitelisted method returning its job): its id and status."""
        status = self.get_status()
        return {"id": self.id, "status": str(status) if status else None}

    # -- reading -------------------------------------------------------------------------------

    @classmethod
    def fetch(cls, job_id: str) -> Job | None:
        """The handle for ``job_id`` (already site-namespaced), or None if there is no record."""
        record = cls._read(job_id)
        return cls(job_id, record) if record else None

    @staticmethod
    def _read(job_id: str) -> dict[str, str]:
        with broker_errors():
            raw = get_redis().hgetall(keys.job(job_id))
        return {as_text(k): as_text(v) for k, v in raw.items()}

    # What refresh() raises for a vanished job (the Frappe switch sets RQ's subclass).
    missing_error: type[NoSuchJobError] = NoSuchJobError

    def _reload(self) -> dict[str, str]:
        """Read the record again; empty once it expired."""
        self._record = self._read(self.id)
        return self._record

    def refresh(self) -> dict[str, str]:
        """Read the record again and return it; :class:`NoSuchJobError` (RQ's, in a bench) once
        the job is gone (expired, deleted, never enqueued), as RQ's ``Job.refresh``."""
        record = self._reload()
        if not record:
            raise self.missing_error(f"No such job: {self.id}")
        return record

    @property
    def record(self) -> dict[str, str]:
        """The last read record (read once if never read; empty when there is none)."""
        if self._record is None:
            return self._reload()
        return self._record

    def get_id(self) -> str:
        """The job's id (RQ's ``get_id``), site-namespaced."""
        return self.id

    def get_status(self, refresh: bool = True) -> JobStatus | None:
        """queued, started, finished, failed, canceled or stopped; None once the record expired."""
        if refresh:
            with broker_errors():
                raw = get_redis().hget(keys.job(self.id), "status")
            status = as_text(raw) if raw else None
            if self._record is not None and status is not None:
                self._record["status"] = status
        else:
            status = self.record.get("status")
        return JobStatus(status) if status else None

    @property
    def is_queued(self) -> bool:
        return self.get_status() == JobStatus.QUEUED

    @property
    def is_started(self) -> bool:
        return self.get_status() == JobStatus.STARTED

    @property
    def is_finished(self) -> bool:
        return self.get_status() == JobStatus.FINISHED

    @property
    def is_failed(self) -> bool:
        return self.get_status() == JobStatus.FAILED

    @property
    def is_canceled(self) -> bool:
        return self.get_status() == JobStatus.CANCELED

    @property
    def is_stopped(self) -> bool:
        return self.get_status() == JobStatus.STOPPED

    def return_value(self, refresh: bool = True) -> Any:
        """The job's return value once finished, else None."""
        record = self._reload() if refresh else self.record
        result = record.get("result")
        return kombu_loads(result) if result is not None else None

    @property
    def result(self) -> Any:
        return self.return_value()

    @property
    def exc_info(self) -> str | None:
        """The traceback text of a failed job (the reason, for a canceled or stopped one)."""
        return self._reload().get("exc_info")

    @property
    def enqueued_at(self) -> datetime | None:
        return _timestamp(self.record.get("enqueued_at"))

    @property
    def started_at(self) -> datetime | None:
        return _timestamp(self._reload().get("started_at"))

    @property
    def ended_at(self) -> datetime | None:
        return _timestamp(self._reload().get("ended_at"))

    @property
    def queue(self) -> str | None:
        return self.record.get("queue")

    @property
    def method(self) -> str | None:
        return self.record.get("method")

    @property
    def job_name(self) -> str | None:
        return self.record.get("job_name") or self.record.get("method")

    @property
    def site(self) -> str | None:
        return self.record.get("site")

    @property
    def user(self) -> str | None:
        return self.record.get("user") or None

    @property
    def event(self) -> str | None:
        return self.record.get("event") or None

    @property
    def timeout(self) -> float | None:
        value = self.record.get("timeout")
        return float(value) if value else None

    @property
    def retries(self) -> int:
        return int(self._reload().get("retries") or 0)

    @property
    def job_kwargs(self) -> dict[str, Any]:
        """The whole execute_job payload the message carries (site, user, method, kwargs...)."""
        found = record_payload(self.record)
        deadline = time.monotonic() + _IN_FLIGHT_WAIT
        while not found:
            # The handle's record may be older than the job (its message taken, the job started
            # or ended since); and a worker that pops a message with BRPOP holds it a moment
            # later, in between it is in no Redis key, while the record still says queued.
            record = self._reload()
            found = record_payload(record)
            if record.get("status") != JobStatus.QUEUED or time.monotonic() >= deadline:
                break
            time.sleep(0.01)
        return found

    @property
    def kwargs(self) -> dict[str, Any]:
        """The keyword arguments the method is called with."""
        return dict(self.job_kwargs.get("kwargs") or {})

    def known_kwargs(self) -> dict[str, Any]:
        """The method's keyword arguments where they are known without searching its queue
        (once started, deduplicated, or held by a worker); else empty. For listing many jobs:
        ``kwargs`` may read through a long queue for each waiting one."""
        return dict(record_payload(self.record, search_queue=False).get("kwargs") or {})

    @property
    def progress(self) -> tuple[float, str] | None:
        """(percent, message) last reported by the running job, if any."""
        record = self._reload()
        if not record.get("progress"):
            return None
        return float(record["progress"]), record.get("progress_message", "")

    # -- acting --------------------------------------------------------------------------------

    def set_progress(self, percent: float, message: str | None = None) -> None:
        """Record this job's progress (0-100), shown by ``frappe-celery jobs`` and ``status``."""
        if isinstance(percent, bool) or not isinstance(percent, int | float):
            raise InvalidArgumentError("percent", percent, "expected a number from 0 to 100")
        shown = f"{min(max(percent, 0), 100):g}"
        # Only while the record exists: a job whose record was deleted does not recreate it.
        records.update_fields(self.id, progress=shown, progress_message=message or "")

    def get_position(self) -> int | None:
        """0-based place in its queue (0 runs next), or None when not queued.

        Counts the messages of higher priority in the same queue plus those ahead in its own
        list; a message the broker rewrote on redelivery is not found (None).
        """
        record = self._reload()
        if record.get("status") != JobStatus.QUEUED:
            return None
        queue, own_list, message = record["queue"], record["list"], record.get("message")
        lists = keys.queue_lists(queue)
        ahead = lists[: lists.index(own_list)]
        index: int | None = None
        if not message:
            # Searched before the lengths are read: a job pushed meanwhile (on the left, behind
            # this one) can only make the answer one too high, never too low.
            found = find_waiting(own_list, record.get("delivery_tag", ""))
            if found is None:
                return None
            index = found[0]
        with broker_errors():
            pipe = get_redis().pipeline(transaction=False)
            for key in ahead:
                pipe.llen(key)
            pipe.llen(own_list)
            if message:  # a deduplicated job's copy: one LPOS finds it
                pipe.lpos(own_list, message)
            replies = pipe.execute()
        lengths, own_length = replies[: len(ahead)], replies[len(ahead)]
        if message:
            index = replies[-1]
        if index is None:
            return None
        # LPUSH adds on the left and the worker pops from the right.
        return int(sum(lengths)) + int(own_length) - 1 - int(index)

    def cancel(self) -> None:
        """Take a queued job off its queue and mark it canceled.

        Raises :class:`InvalidJobOperation` if the job is not queued (a running job is stopped,
        not canceled).
        """
        record = self._reload()
        if not record:
            raise InvalidJobOperation(f"job {self.id!r}: no such job (expired or never enqueued)")
        previous = records.cancel_queued(self.id, record)
        if previous != JobStatus.QUEUED:
            raise InvalidJobOperation(
                f"job {self.id!r}: only a queued job can be canceled; its status is {previous!r}"
            )

    def delete(self) -> None:
        """Remove the job, as RQ's ``Job.delete``: a queued one is taken off its queue, and its
        record is deleted; afterwards ``refresh`` raises :class:`NoSuchJobError`.

        Raises :class:`InvalidJobOperation` for a running job (stop it first: a worker is
        running it, and its end would find no record) and :class:`NoSuchJobError` when there is
        no job.
        """
        record = self.refresh()
        if record.get("status") == JobStatus.QUEUED:
            self.cancel()
        queue = record.get("queue") or "default"
        registries = [registry(queue) for registry in records.ENDED_REGISTRIES]
        if not records.forget(registries, [self.id]):
            raise InvalidJobOperation(
                f"job {self.id!r} is {self.get_status()}: a running job is stopped, not deleted"
            )
        self._record, self._meta = {}, None

    # -- RQ's job attributes ------------------------------------------------------------------

    @property
    def meta(self) -> dict[str, Any]:
        """RQ's ``job.meta``: a dict of the caller's own data, kept with the job's record once
        :meth:`save_meta` wrote it (JSON, as everything frappe-celery stores)."""
        if self._meta is None:
            stored = self.record.get("meta")
            self._meta = dict(kombu_loads(stored)) if stored else {}
        return self._meta

    @meta.setter
    def meta(self, value: dict[str, Any]) -> None:
        self._meta = value

    def save_meta(self) -> None:
        """Store :attr:`meta` in the job's record; :class:`NoSuchJobError` once it is gone."""
        try:
            encoded = kombu_dumps(self.meta)
        except (TypeError, ValueError) as exc:
            raise InvalidArgumentError("meta", self.meta, f"expected JSON values ({exc})") from None
        if not records.update_fields(self.id, meta=encoded):
            raise self.missing_error(f"No such job: {self.id}")
        if self._record:
            self._record["meta"] = str(encoded)

    @property
    def failure_ttl(self) -> int:
        """Seconds a failed, canceled or stopped run of this job is kept: its own (see
        :meth:`keep_for`), else ``rq_job_failure_ttl`` of the job's site (site_config.json, else
        common_site_config.json, else 7 days)."""
        own = self.record.get("failure_ttl")
        return int(own) if own else site_retention(self.record.get("site")).failure_ttl

    @property
    def result_ttl(self) -> int:
        """Seconds a finished run of this job is kept: its own (see :meth:`keep_for`), else
        ``rq_results_ttl`` of the job's site (site_config.json, else common_site_config.json,
        else 600)."""
        own = self.record.get("results_ttl")
        return int(own) if own else site_retention(self.record.get("site")).results_ttl

    def keep_for(self, *, results_ttl: int | None = None, failure_ttl: int | None = None) -> bool:
        """Give this job its own retention, used when it ends instead of its site's (RQ's
        per-job ``result_ttl`` / ``failure_ttl``); a job that has ended already gets it at once.
        False when the job has no record any more."""
        ttls: dict[str, int] = {}
        for name, value in (("results_ttl", results_ttl), ("failure_ttl", failure_ttl)):
            if value is not None:
                if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                    raise InvalidArgumentError(name, value, "expected a positive number of seconds")
                ttls[name] = value
        if not ttls:
            return True
        saved = records.keep_for(self.id, **ttls)
        self._record = None
        return saved

    def latest_result(self, timeout: float = 0) -> Result | None:
        """The outcome of the job's last run (RQ's ``latest_result``), None while it has none
        (queued, running, canceled) or once its record expired. As RQ's, it waits up to
        ``timeout`` seconds for one (reading the record every 50 ms)."""
        deadline = time.monotonic() + max(0.0, float(timeout))
        while True:
            result = self._result_now()
            left = deadline - time.monotonic()
            if result is not None or left <= 0:
                return result
            time.sleep(min(0.05, left))

    def _result_now(self) -> Result | None:
        record = self._reload()
        status = record.get("status")
        ended = _timestamp(record.get("ended_at"))
        result_id = f"{record.get('token', '')}-{record.get('ended_at', '')}"
        if status == JobStatus.FINISHED:
            result = record.get("result")
            return Result(
                self.id,
                Result.Type.SUCCESSFUL,
                id=result_id,
                created_at=ended,
                return_value=kombu_loads(result) if result is not None else None,
            )
        if status in (JobStatus.FAILED, JobStatus.STOPPED):
            return Result(
                self.id,
                Result.Type.FAILED,
                id=result_id,
                created_at=ended,
                exc_string=record.get("exc_info"),
            )
        return None
