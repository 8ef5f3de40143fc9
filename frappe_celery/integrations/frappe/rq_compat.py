"""The parts of RQ's objects that Frappe code reads, backed by frappe-celery's records.

Frappe modules call ``rq.get_current_job()`` (database statement timeouts, the monitor, Sentry,
Prepared Report, Submission Queue), read ``get_queue(...).jobs`` / ``.count`` /
``get_job_ids()`` and ``get_workers()`` (doctor, System Health Report), and empty a queue or
delete its jobs (``bench purge-jobs``). These views give them
what they read, with RQ's types: ``enqueued_at`` is a naive UTC datetime as in RQ, ``kwargs``
are the arguments of Frappe's ``execute_job`` (site, user, method, event, job_name, kwargs).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from ... import admin, monitor
from ...enqueue import validate_queue
from ...job import Job, JobStatus
from ...wire import JobPayload

# The arguments of Frappe's execute_job, which RQ keeps as the job's kwargs.
EXECUTE_JOB_ARGS = ("site", "user", "method", "event", "job_name", "kwargs", "is_async")


class RQJobView:
    """A job as ``rq.job.Job`` shows it to Frappe."""

    def __init__(
        self,
        job_id: str,
        execute_kwargs: dict[str, Any],
        *,
        origin: str,
        timeout: float | None,
        enqueued_at: float | None = None,
    ) -> None:
        self.id = job_id
        self.kwargs = execute_kwargs
        self._kwargs = execute_kwargs  # Frappe's Sentry integration reads the private name
        self.origin = origin
        self.timeout = timeout
        self._enqueued_at = enqueued_at
        self.meta: dict[str, Any] = {}

    @classmethod
    def of_payload(cls, job_id: str, payload: JobPayload) -> RQJobView:
        return cls(
            job_id,
            {name: payload[name] for name in EXECUTE_JOB_ARGS},  # type: ignore[literal-required]
            origin=payload["queue"],
            timeout=payload["timeout"],
        )

    def get_id(self) -> str:
        return self.id

    @property
    def description(self) -> str:
        return str(self.kwargs.get("method") or "")

    @property
    def enqueued_at(self) -> datetime | None:
        if self._enqueued_at is not None:
            return datetime.utcfromtimestamp(self._enqueued_at)
        aware = Job(self.id).enqueued_at
        return aware.replace(tzinfo=None) if aware else None

    def get_status(self, refresh: bool = True) -> JobStatus | None:
        return Job(self.id).get_status()

    def delete(self) -> None:
        """RQ deletes the job; here a queued one is canceled (off its queue, its id free)."""
        Job(self.id).cancel()


def current_job_getter(original: Callable[..., Any]) -> Callable[..., Any]:
    """``rq.get_current_job`` that knows frappe-celery's running job (and RQ's, if any)."""
    from . import running_job

    def get_current_job(connection: Any = None, job_class: Any = None) -> Any:
        running = running_job.get()
        if running is not None:
            return RQJobView.of_payload(*running)
        return original(connection=connection, job_class=job_class)

    get_current_job.__doc__ = "The running job (frappe-celery's, else RQ's), or None."
    return get_current_job


class QueueView:
    """A queue as ``rq.Queue`` shows it to Frappe: name, count, jobs, job ids."""

    def __init__(self, name: str) -> None:
        self.name = name

    @property
    def count(self) -> int:
        return monitor.queue_stats([self.name])[0].pending

    def __len__(self) -> int:
        return self.count

    def _rows(self) -> list[monitor.JobRow]:
        return monitor.list_jobs(
            queue=self.name, status=JobStatus.QUEUED, limit=10_000, show_args=True
        )

    @property
    def jobs(self) -> list[RQJobView]:
        return [
            RQJobView(
                row.id,
                {
                    "site": row.site,
                    "method": row.method,
                    "event": row.event,
                    "job_name": row.job_name,
                    "kwargs": row.kwargs or {},
                },
                origin=row.queue,
                timeout=None,
                enqueued_at=row.enqueued_at,
            )
            for row in self._rows()
        ]

    def get_job_ids(self) -> list[str]:
        return [row.id for row in self._rows()]

    def empty(self) -> int:
        """Remove every pending job (``bench purge-jobs``); returns how many."""
        return admin.purge_jobs(self.name)


def get_queue(qtype: str, is_async: bool = True) -> QueueView:
    """Frappe's ``get_queue``: the queue named ``qtype`` (an unknown name is refused)."""
    validate_queue(qtype)
    return QueueView(qtype)


class WorkerView:
    """A Celery worker as ``rq.Worker`` shows it to Frappe (from its heartbeat)."""

    def __init__(self, info: dict[str, Any]) -> None:
        self.info = info
        self.name: str = info["node"]
        self.pid: int | None = info.get("pid")
        self.hostname: str = info.get("hostname", "")

    def queue_names(self) -> list[str]:
        return list(self.info.get("queues") or [])

    def get_current_job_id(self) -> str | None:
        running = self.info.get("running") or []
        return running[0] if running else None

    def get_current_job(self) -> Job | None:
        job_id = self.get_current_job_id()
        return Job(job_id) if job_id else None

    def get_state(self) -> str:
        return "busy" if self.info.get("running") else "idle"


def get_workers(queue: str | None = None) -> list[WorkerView]:
    """Frappe's ``get_workers``: the online workers, those consuming ``queue`` if given."""
    workers = [WorkerView(info) for info in monitor.get_workers()]
    return [w for w in workers if queue is None or queue in w.queue_names()]
