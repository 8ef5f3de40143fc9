"""The parts of RQ's objects that Frappe (and apps) read, backed by frappe-celery's records.

Frappe modules call ``rq.get_current_job()`` (database statement timeouts, the monitor, Sentry,
Prepared Report, Submission Queue), read ``get_queue(...).jobs`` / ``.count`` /
``get_job_ids()``, its registries and ``get_workers()`` (doctor, System Health Report), empty a
queue or delete its jobs (``bench purge-jobs``), and apps use RQ's Job API on what
``get_job`` returns (``get_id()``, ``meta`` / ``save_meta()``, ``delete()``,
``latest_result()``, ``is_stopped``, ``failure_ttl``). These views give them what they read,
with RQ's types: datetimes are naive UTC as in RQ, ``kwargs`` are the arguments of Frappe's
``execute_job`` (site, user, method, event, job_name, kwargs, is_async), a vanished job raises
the installed ``rq.exceptions.NoSuchJobError`` (a subclass of it), ``latest_result().type`` is
RQ's ``Result.Type``.

RQ is imported only when first needed (every Frappe bench has it; frappe-celery's own
virtualenv may not), and never by the core ``frappe_celery.Job``.
"""

from __future__ import annotations

import functools
import inspect
import time
import warnings
from collections import Counter
from collections.abc import Callable
from datetime import datetime
from typing import Any

from frappe_celery.broker.keys import (
    canceled_registry,
    failed_registry,
    finished_registry,
    scheduled_registry,
    started_registry,
)
from frappe_celery.broker.wire import JobPayload
from frappe_celery.caller.enqueue import (
    _namespaced,
    create_job_id,
    current_site,
    enqueue,
    validate_queue,
)
from frappe_celery.config import get_settings
from frappe_celery.connection import as_text, broker_errors, get_redis
from frappe_celery.errors import InvalidArgumentError, InvalidJobOperation
from frappe_celery.job import Job, JobStatus, Result, is_site_job, site_job_prefix
from frappe_celery.job import NoSuchJobError as CoreNoSuchJobError
from frappe_celery.methods import normalize_path, resolve_job_callable
from frappe_celery.ops import admin, monitor
from frappe_celery.retention import retention_horizon

# The arguments of Frappe's execute_job, which RQ keeps as the job's kwargs.
EXECUTE_JOB_ARGS = ("site", "user", "method", "event", "job_name", "kwargs", "is_async")


@functools.cache
def no_such_job_error() -> type[CoreNoSuchJobError]:
    """The error a vanished job raises in a bench: a subclass of both frappe-celery's
    ``NoSuchJobError`` and the installed ``rq.exceptions.NoSuchJobError``, so Frappe's and
    apps' ``except NoSuchJobError`` catch it (switch.apply makes every handle raise it)."""
    import rq.exceptions

    class NoSuchJobError(CoreNoSuchJobError, rq.exceptions.NoSuchJobError):  # type: ignore[misc,unused-ignore]
        """No such job (expired, deleted, or never enqueued)."""

    NoSuchJobError.__module__ = __name__
    return NoSuchJobError


def __getattr__(name: str) -> Any:
    if name == "NoSuchJobError":
        return no_such_job_error()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _naive_utc(value: datetime | None) -> datetime | None:
    """RQ's datetimes are naive UTC (Frappe's convert_utc_to_system_timezone expects that)."""
    return value.replace(tzinfo=None) if value is not None else None


def delete_like_rq(job: Job) -> None:
    """RQ's ``Job.delete``: the job is gone, whatever its state, and a refresh raises
    NoSuchJobError. RQ lets a running work horse go on unrecorded, its id free for a second run
    at once; here a running job (or one that started between the read and the cancel) is
    stopped first, so a deleted id never runs twice.

    Raises :class:`InvalidJobOperation` when a running job did not stop in time.
    """
    try:
        Job.delete(job)
    except InvalidJobOperation:
        admin.stop_job(job.id)
        Job.delete(job)


class RQJob(Job):
    """A frappe-celery job as ``rq.job.Job`` shows it to Frappe (see the module)."""

    def __init__(
        self,
        job_id: str,
        record: dict[str, str] | None = None,
        *,
        execute_kwargs: dict[str, Any] | None = None,
        origin: str | None = None,
        timeout: float | None = None,
        enqueued_at: float | None = None,
    ) -> None:
        super().__init__(job_id, record)
        # Known without reading Redis (the running job's payload, a listed message).
        self._execute_kwargs = execute_kwargs
        self._origin = origin
        self._timeout = timeout
        self._enqueued_ts = enqueued_at

    @classmethod
    def of_payload(cls, job_id: str, payload: JobPayload) -> RQJob:
        return cls(
            job_id,
            execute_kwargs={name: payload[name] for name in EXECUTE_JOB_ARGS},  # type: ignore[literal-required]
            origin=payload["queue"],
            timeout=payload["timeout"],
        )

    @classmethod
    def of(cls, job: Job) -> RQJob:
        return cls(job.id, job.record)

    @property
    def kwargs(self) -> dict[str, Any]:
        """RQ's ``job.kwargs`` of a Frappe job: execute_job's arguments, the method's own under
        ``kwargs`` (``{}`` once the job's record and message are gone)."""
        if self._execute_kwargs is None:
            payload = self.job_kwargs
            if not payload:
                return {}
            self._execute_kwargs = {name: payload.get(name) for name in EXECUTE_JOB_ARGS}
            self._execute_kwargs["kwargs"] = dict(payload.get("kwargs") or {})
        return self._execute_kwargs

    @property
    def _kwargs(self) -> dict[str, Any]:  # Frappe's Sentry integration reads the private name
        return self.kwargs

    @property
    def origin(self) -> str:
        """The queue's name (RQ's origin; not prefixed with a bench id: Celery queues are not)."""
        return self._origin or self.queue or ""

    @property
    def timeout(self) -> float | None:
        return self._timeout if self._timeout is not None else super().timeout

    @property
    def description(self) -> str:
        return str(self.kwargs.get("method") or self.method or "")

    @property
    def func_name(self) -> str:
        return self.description

    @property
    def enqueued_at(self) -> datetime | None:
        if self._enqueued_ts is not None:
            return datetime.utcfromtimestamp(self._enqueued_ts)
        return _naive_utc(super().enqueued_at)

    @property
    def created_at(self) -> datetime | None:
        return self.enqueued_at

    @property
    def started_at(self) -> datetime | None:
        return _naive_utc(super().started_at)

    @property
    def ended_at(self) -> datetime | None:
        return _naive_utc(super().ended_at)

    @property
    def last_heartbeat(self) -> datetime | None:
        return None

    def delete(self) -> None:
        delete_like_rq(self)

    def latest_result(self, timeout: float = 0) -> Any:
        """RQ's ``latest_result``: ``type`` is RQ's own ``Result.Type``."""
        import rq.results

        result = super().latest_result(timeout)
        if result is not None:
            result.type = rq.results.Result.Type(result.type.value)
        return result


def get_job(job_id: str) -> RQJob | None:
    """Frappe's ``get_job``: the job for a caller's (or a namespaced) id, with RQ's Job API;
    None when there is none."""
    job = RQJob.fetch(_namespaced(job_id))
    return job if isinstance(job, RQJob) else None


def current_job_getter(original: Callable[..., Any]) -> Callable[..., Any]:
    """``rq.get_current_job`` that knows frappe-celery's running job (and RQ's, if any)."""
    from frappe_celery.integrations.frappe import running_job

    def get_current_job(connection: Any = None, job_class: Any = None) -> Any:
        running = running_job.get()
        if running is not None:
            return RQJob.of_payload(*running)
        return original(connection=connection, job_class=job_class)

    get_current_job.__doc__ = "The running job (frappe-celery's, else RQ's), or None."
    return get_current_job


# -- queues ---------------------------------------------------------------------------------------


class RegistryView:
    """One of a queue's job registries as RQ's (``FailedJobRegistry`` and its kin) shows it:
    ``count``, ``len()``, ``get_job_ids()``, ``in``. The failed registry also holds the stopped
    jobs, as RQ's does; the finished one counts what the longest-keeping site still keeps."""

    def __init__(self, queue: str, key: str, *, ttl_window: bool = False) -> None:
        self.name = queue
        self.key = key
        self._ttl_window = ttl_window

    def _min_score(self) -> float | str:
        if not self._ttl_window:
            return "-inf"
        return time.time() - retention_horizon().results_ttl

    @property
    def count(self) -> int:
        with broker_errors():
            return int(get_redis().zcount(self.key, self._min_score(), "+inf"))

    def __len__(self) -> int:
        return self.count

    def get_job_ids(
        self, start: int = 0, end: int = -1, desc: bool = False, cleanup: bool = True
    ) -> list[str]:
        """The ids, oldest first (``desc``: newest first), ranks ``start`` to ``end``."""
        client = get_redis()
        with broker_errors():
            ids = client.zrangebyscore(self.key, self._min_score(), "+inf")
        found = [as_text(i) for i in ids]
        if desc:
            found.reverse()
        return found[start : None if end == -1 else end + 1]

    def __contains__(self, item: Any) -> bool:
        job_id = item.id if isinstance(item, Job) else str(item)
        with broker_errors():
            return get_redis().zscore(self.key, job_id) is not None


# RQ's Queue.enqueue options, and what they become here (see QueueView.enqueue).
_UNSUPPORTED_ENQUEUE_OPTIONS = {
    "result_ttl": "results are kept for the site's rq_results_ttl (site_config.json)",
    "failure_ttl": "failed jobs are kept for the site's rq_job_failure_ttl (site_config.json)",
    "ttl": "a queued job waits until a worker takes it",
    "depends_on": "job dependencies are not supported; enqueue the next job from the first",
    "retry": "jobs are retried on RetryBackgroundJobError and deadlocks, as in Frappe",
    "on_stopped": "a stopped job runs no callback",
    "pipeline": "a job is published on its own",
    "enqueue_at": "scheduled enqueues are not supported",
    "group_id": "groups are not supported",
    "repeat": "repeats are not supported",
}
# RQ's Queue.enqueue options that map onto frappe_celery.enqueue's.
_ENQUEUE_OPTIONS = frozenset(
    {"job_timeout", "timeout", "description", "job_id", "at_front", "meta", "on_success",
     "on_failure"}
)  # fmt: skip
# Keyword arguments frappe_celery.enqueue takes for itself: a job function cannot receive them.
_ENQUEUE_OWN = frozenset(inspect.signature(enqueue).parameters) - {"method", "kwargs"} | {"async"}


def _callback_path(argument: str, callback: Any) -> Any:
    """RQ's ``Callback(func)`` or a function / dotted path, as enqueue takes it."""
    return getattr(callback, "func", callback) if callback is not None else None


def _as_keywords(func_ref: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    """Positional arguments of an RQ-style call turned into keywords by the function's own
    signature (Frappe's jobs get keyword arguments only)."""
    if not args:
        return dict(kwargs)
    func = resolve_job_callable(normalize_path("f", func_ref))
    try:
        bound = inspect.signature(func).bind(*args, **kwargs)
    except TypeError as exc:
        raise InvalidArgumentError("args", args, f"they do not fit the function ({exc})") from None
    keywords: dict[str, Any] = {}
    for name, value in bound.arguments.items():
        kind = inspect.signature(func).parameters[name].kind
        if kind is inspect.Parameter.VAR_POSITIONAL:
            if value:
                raise InvalidArgumentError(
                    "args", args, "a job gets keyword arguments only: *args cannot travel"
                )
        elif kind is inspect.Parameter.VAR_KEYWORD:
            keywords.update(value)
        else:
            keywords[name] = value
    return keywords


class QueueView:
    """A queue as ``rq.Queue`` shows it to Frappe and apps: name, count, jobs, job ids, its
    registries, ``fetch_job`` and ``enqueue``."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"<Queue {self.name}>"

    @property
    def count(self) -> int:
        return monitor.queue_stats([self.name])[0].pending

    def __len__(self) -> int:
        return self.count

    def is_empty(self) -> bool:
        return self.count == 0

    def _rows(self) -> list[monitor.JobRow]:
        return monitor.list_jobs(
            queue=self.name, status=JobStatus.QUEUED, limit=10_000, show_args=True
        )

    def _view(self, row: monitor.JobRow) -> RQJob:
        execute_kwargs = {name: getattr(row, name, None) for name in EXECUTE_JOB_ARGS}
        execute_kwargs.update(kwargs=row.kwargs or {}, user=None, is_async=True)
        return RQJob(
            row.id, origin=row.queue, enqueued_at=row.enqueued_at, execute_kwargs=execute_kwargs
        )

    @property
    def jobs(self) -> list[RQJob]:
        return self.get_jobs()

    def get_jobs(self, offset: int = 0, length: int = -1) -> list[RQJob]:
        """The waiting jobs, next to run first (at most 10,000)."""
        rows = self._rows()
        return [self._view(row) for row in rows[offset : None if length < 0 else offset + length]]

    def get_job_ids(self, offset: int = 0, length: int = -1) -> list[str]:
        ids = [row.id for row in self._rows()]
        return ids[offset : None if length < 0 else offset + length]

    def fetch_job(self, job_id: str) -> RQJob | None:
        """The job with this id (a namespaced one, or the caller's), None if there is none."""
        job = RQJob.fetch(job_id) or RQJob.fetch(create_job_id(job_id))
        return job if isinstance(job, RQJob) else None

    def empty(self) -> int:
        """Remove every pending job (``bench purge-jobs``); returns how many."""
        return admin.purge_jobs(self.name)

    # -- registries, as RQ names them --

    @property
    def started_job_registry(self) -> RegistryView:
        return RegistryView(self.name, started_registry(self.name))

    @property
    def failed_job_registry(self) -> RegistryView:
        return RegistryView(self.name, failed_registry(self.name))

    @property
    def scheduled_job_registry(self) -> RegistryView:
        """Jobs waiting for a retry countdown (RQ: for their scheduled time)."""
        return RegistryView(self.name, scheduled_registry(self.name))

    @property
    def finished_job_registry(self) -> RegistryView:
        return RegistryView(self.name, finished_registry(self.name), ttl_window=True)

    @property
    def canceled_job_registry(self) -> RegistryView:
        return RegistryView(self.name, canceled_registry(self.name))

    @property
    def deferred_job_registry(self) -> RegistryView:
        """Always empty: no job waits on another's (``depends_on`` is not supported)."""
        return RegistryView(self.name, f"{failed_registry(self.name)}:none")

    # -- enqueueing, RQ's way --

    def enqueue(self, f: Any, *args: Any, **kwargs: Any) -> RQJob:
        """RQ's ``Queue.enqueue(f, *args, **kwargs)``, as a frappe-celery job of this queue.

        The job runs as every Frappe job does (in the enqueuing site, as its user; see
        :func:`frappe_celery.enqueue`), which RQ's own ``enqueue`` does not do. Mapped:
        ``job_timeout`` -> ``timeout``; ``job_id`` -> ``job_id`` (namespaced to the site, as
        Frappe's ids are; an id already namespaced is kept); ``description`` -> ``job_name``;
        ``at_front``; ``on_success`` / ``on_failure`` (a function, a dotted path or RQ's
        ``Callback``); ``meta`` (saved with the job); ``args=`` / ``kwargs=`` as RQ takes them.
        Positional arguments become keywords by the function's signature. Refused with
        :class:`InvalidArgumentError`: RQ's options that have no meaning here (``result_ttl``,
        ``failure_ttl``, ``ttl``, ``depends_on``, ``retry``, ``on_stopped``, ``pipeline``...)
        and function arguments named like ``frappe.enqueue``'s own (``queue``, ``timeout``,
        ``event``, ``now``...).
        """
        if "args" in kwargs or "kwargs" in kwargs:
            if args:
                raise InvalidArgumentError(
                    "args", args, "pass the job's arguments either positionally or as args="
                )
            args = tuple(kwargs.pop("args", None) or ())
            explicit = dict(kwargs.pop("kwargs", None) or {})
            options, job_kwargs = kwargs, explicit
        else:
            option_names = {*_ENQUEUE_OPTIONS, *_UNSUPPORTED_ENQUEUE_OPTIONS}
            options = {k: kwargs.pop(k) for k in list(kwargs) if k in option_names}
            job_kwargs = kwargs
        return self._enqueue(f, args, job_kwargs, options)

    def enqueue_call(
        self,
        func: Any,
        args: tuple[Any, ...] | list[Any] | None = None,
        kwargs: dict[str, Any] | None = None,
        timeout: float | None = None,
        **options: Any,
    ) -> RQJob:
        """RQ's ``Queue.enqueue_call``: as :meth:`enqueue`, with the job's arguments apart."""
        if timeout is not None:
            options["job_timeout"] = timeout
        return self._enqueue(func, tuple(args or ()), dict(kwargs or {}), options)

    def _enqueue(
        self, f: Any, args: tuple[Any, ...], job_kwargs: dict[str, Any], options: dict[str, Any]
    ) -> RQJob:
        for name, why in _UNSUPPORTED_ENQUEUE_OPTIONS.items():
            if options.get(name) is not None:
                raise InvalidArgumentError(name, options[name], f"not supported: {why}")
        timeout = options.pop("job_timeout", None)
        legacy_timeout = options.pop("timeout", None)
        timeout = timeout if timeout is not None else legacy_timeout
        unknown = set(options) - _ENQUEUE_OPTIONS
        if unknown:
            raise InvalidArgumentError(
                sorted(unknown)[0], options[sorted(unknown)[0]], "not an option of RQ's enqueue"
            )
        keywords = _as_keywords(f, args, job_kwargs)
        taken = sorted(set(keywords) & _ENQUEUE_OWN)
        if taken:
            raise InvalidArgumentError(
                taken[0],
                keywords[taken[0]],
                "a job function cannot receive an argument named like one of frappe.enqueue's "
                "own parameters",
            )
        job_id = options.get("job_id")
        if isinstance(job_id, str):
            site = current_site()
            if is_site_job(job_id, site):
                job_id = job_id[len(site_job_prefix(site)) :]
        with warnings.catch_warnings():
            # enqueue warns that job_name is not job_id: here it is RQ's description, on purpose.
            warnings.simplefilter("ignore", DeprecationWarning)
            job = enqueue(
                f,
                queue=self.name,
                timeout=timeout,
                job_name=options.get("description"),
                at_front=bool(options.get("at_front", False)),
                job_id=job_id,
                on_success=_callback_path("on_success", options.get("on_success")),
                on_failure=_callback_path("on_failure", options.get("on_failure")),
                **keywords,
            )
        assert isinstance(job, Job)  # neither now, after-commit nor deduplicate: a handle
        view = RQJob.of(job)
        meta = options.get("meta")
        if meta:
            view.meta.update(meta)
            view.save_meta()
        return view


def get_queue(qtype: str, is_async: bool = True) -> QueueView:
    """Frappe's ``get_queue``: the queue named ``qtype`` (an unknown name is refused)."""
    validate_queue(qtype)
    return QueueView(qtype)


def get_queues(connection: Any = None) -> list[QueueView]:
    """Frappe's ``get_queues``: every queue of the bench (Frappe's, then the configured ones)."""
    return [QueueView(name) for name in get_settings().queues]


# At most this many failed jobs are read to count each worker's (Desk, System Health Report).
FAILED_COUNT_SCAN = 10_000


class WorkerView:
    """A Celery worker as ``rq.Worker`` shows it to Frappe (from its heartbeat).

    ``failed_job_count`` counts the failed jobs this worker ran that are still kept (RQ counts
    every failure in the worker's life); the successful count and working time are not kept.
    """

    def __init__(self, info: dict[str, Any], failed_job_count: int = 0) -> None:
        self.info = info
        self.name: str = info["node"]
        self.pid: int | None = info.get("pid")
        self.hostname: str = info.get("hostname", "")
        self.failed_job_count = failed_job_count

    def queue_names(self) -> list[str]:
        return list(self.info.get("queues") or [])

    def get_current_job_id(self) -> str | None:
        running = self.info.get("running") or []
        return running[0] if running else None

    def get_current_job(self) -> RQJob | None:
        job_id = self.get_current_job_id()
        return RQJob(job_id) if job_id else None

    def get_state(self) -> str:
        return "busy" if self.info.get("running") else "idle"


def get_workers(queue: str | None = None) -> list[WorkerView]:
    """Frappe's ``get_workers``: the online workers, those consuming ``queue`` if given."""
    failed = Counter(row.worker for row in monitor.list_failed(limit=FAILED_COUNT_SCAN))
    workers = [WorkerView(info, failed[info["node"]]) for info in monitor.get_workers()]
    return [w for w in workers if queue is None or queue in w.queue_names()]


# Kept for code that imported the earlier names.
RQJobView = RQJob
__all__ = [
    "EXECUTE_JOB_ARGS",
    "QueueView",
    "RQJob",
    "RQJobView",
    "RegistryView",
    "Result",
    "WorkerView",
    "current_job_getter",
    "get_job",
    "get_queue",
    "get_queues",
    "get_workers",
    "no_such_job_error",
]
