"""What the CLI (and apps) read: queue counts, jobs, failures, workers, the scheduler.

Everything reads the keys the enqueue and worker sides write (keys.py), in a few pipelined
round trips. Nothing reads a whole queue: counts are LLEN / ZCARD over every priority list and
registry, the oldest pending job is each list's tail, and job listings scan at most
``scan_limit`` messages.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

from frappe_celery.broker import keys
from frappe_celery.broker.workers import read_workers
from frappe_celery.config import PRIORITY_STEPS, get_settings
from frappe_celery.connection import as_text, broker_errors, get_redis
from frappe_celery.job import (
    JobStatus,
    is_site_job,
    message_job_id,
    readable_message_kwargs,
    record_payload,
    site_job_prefix,
)
from frappe_celery.records import SUMMARY_FIELDS
from frappe_celery.retention import retention_horizon
from frappe_celery.scheduler import state
from frappe_celery.scheduler.entries import ScheduleEntry, build_entries, load_events


@dataclass
class QueueStats:
    name: str
    pending: int
    pending_by_priority: dict[int, int]
    started: int
    scheduled: int
    finished: int
    failed: int
    canceled: int
    oldest_pending_age: float | None  # seconds


def queue_stats(queues: list[str] | None = None) -> list[QueueStats]:
    """Counts per queue, pending ones summed over every priority list."""
    settings = get_settings()
    names = queues or list(settings.queues)
    now = time.time()
    # Ended records live as long as their site keeps them: count what the longest keeps.
    results_ttl = retention_horizon().results_ttl
    with broker_errors():
        pipe = get_redis().pipeline(transaction=False)
        for name in names:
            for key in keys.queue_lists(name):
                pipe.llen(key)
                pipe.lindex(key, -1)  # the oldest message of this priority list
            pipe.zcard(keys.started_registry(name))
            pipe.zcard(keys.scheduled_registry(name))
            pipe.zcount(keys.finished_registry(name), now - results_ttl, "+inf")
            pipe.zcard(keys.failed_registry(name))
            pipe.zcard(keys.canceled_registry(name))
        replies = iter(pipe.execute())
    stats, tails = [], []
    for name in names:
        by_priority, oldest = {}, []
        for step in PRIORITY_STEPS:
            by_priority[step] = int(next(replies))
            tail = next(replies)
            job_id = message_job_id(as_text(tail)) if tail else None
            if job_id is not None:
                oldest.append(job_id)
        started, scheduled, finished, failed, canceled = (int(next(replies)) for _ in range(5))
        stats.append(
            QueueStats(
                name,
                sum(by_priority.values()),
                by_priority,
                started,
                scheduled,
                finished,
                failed,
                canceled,
                None,
            )
        )
        tails.append(oldest)
    enqueued = _fields([job_id for oldest in tails for job_id in oldest], ["enqueued_at"])
    for stat, oldest in zip(stats, tails, strict=True):
        times = [
            float(enqueued[i]["enqueued_at"]) for i in oldest if enqueued[i].get("enqueued_at")
        ]
        stat.oldest_pending_age = now - min(times) if times else None
    return stats


def get_queue_counts() -> dict[str, dict[str, int]]:
    """Frappe's monitoring numbers per queue: pending, started, failed, scheduled."""
    return {
        s.name: {
            "pending": s.pending,
            "started": s.started,
            "failed": s.failed,
            "scheduled": s.scheduled,
        }
        for s in queue_stats()
    }


def _fields(job_ids: list[str], names: list[str]) -> dict[str, dict[str, str]]:
    """job id -> the named record fields (missing records give empty dicts)."""
    if not job_ids:
        return {}
    with broker_errors():
        pipe = get_redis().pipeline(transaction=False)
        for job_id in job_ids:
            pipe.hmget(keys.job(job_id), names)
        replies = pipe.execute()
    return {
        job_id: {name: as_text(value) for name, value in zip(names, values, strict=True) if value}
        for job_id, values in zip(job_ids, replies, strict=True)
    }


@dataclass
class JobRow:
    id: str
    queue: str
    status: str
    method: str
    site: str
    enqueued_at: float | None
    started_at: float | None = None
    worker: str = ""
    event: str = ""
    progress: str = ""
    retries: int = 0
    exc: str = ""
    ended_at: float | None = None
    kwargs: dict[str, Any] | None = field(default=None)
    job_name: str = ""

    @property
    def age(self) -> float | None:
        return time.time() - self.enqueued_at if self.enqueued_at else None


def exception_summary(exc_type: str, exc_info: str) -> str:
    """One line: "ValueError: bad input" (a traceback's last line already reads like that)."""
    lines = exc_info.strip().splitlines()
    if not lines:
        return exc_type
    last = lines[-1]
    return last if exc_type and exc_type in last.split(":", 1)[0] else f"{exc_type}: {last}"


def _row(job_id: str, queue: str, record: dict[str, str]) -> JobRow:
    progress = record.get("progress")
    return JobRow(
        id=job_id,
        queue=record.get("queue", queue),
        status=record.get("status", "unknown"),
        method=record.get("method", ""),
        site=record.get("site") or re.split(r"\|\||::", job_id, maxsplit=1)[0],
        enqueued_at=float(record["enqueued_at"]) if record.get("enqueued_at") else None,
        started_at=float(record["started_at"]) if record.get("started_at") else None,
        ended_at=float(record["ended_at"]) if record.get("ended_at") else None,
        worker=record.get("worker", ""),
        event=record.get("event", ""),
        progress=f"{progress}% {record.get('progress_message', '')}".strip() if progress else "",
        retries=int(record.get("retries") or 0),
        exc=exception_summary(record.get("exc_type", ""), record.get("exc_info", "")),
        job_name=record.get("job_name") or record.get("method", ""),
    )


# How many pending messages of each queue `jobs --site` looks at (it reads whole messages).
SITE_SCAN_LIMIT = 10_000


def pending_messages(queue: str, scan_limit: int, site: str | None = None) -> list[tuple[str, str]]:
    """(job id, message) of the pending messages among the next ``scan_limit`` to run (only
    ``site``'s, if given), in the order they will run."""
    found: list[tuple[str, str]] = []
    # A site's job ids start with "site||" (Frappe 15: "site::"): a message without that text is
    # not the site's, and is skipped without decoding it (most of the cost of a site filter over
    # a long queue).
    needle = json.dumps(site_job_prefix(site))[:-1] if site is not None else ""
    scanned = 0
    client = get_redis()
    for key in keys.queue_lists(queue):  # highest priority first
        end = -1
        while scanned < scan_limit:
            # The worker pops from the right: read from there, in chunks.
            size = min(500, scan_limit - scanned)
            with broker_errors():
                chunk = client.lrange(key, end - size + 1, end)
            if not chunk:
                break
            scanned += len(chunk)
            for message in reversed(chunk):
                text = as_text(message)
                if needle not in text:
                    continue
                job_id = message_job_id(text)
                if job_id is None:
                    continue  # not a job message: a worker drops it
                if site is None or is_site_job(job_id, site):
                    found.append((job_id, text))
            end -= len(chunk)
            if len(chunk) < size:
                break
    return found


# Where the ids of a queue's jobs in each final or running state are kept, newest last. As in
# RQ, the failed registry also holds the stopped jobs.
STATUS_REGISTRIES: dict[str, Callable[[str], str]] = {
    JobStatus.STARTED: keys.started_registry,
    JobStatus.FINISHED: keys.finished_registry,
    JobStatus.FAILED: keys.failed_registry,
    JobStatus.CANCELED: keys.canceled_registry,
    JobStatus.STOPPED: keys.failed_registry,
}


def job_ids(queue: str, status: str, scan_limit: int = 10_000) -> list[tuple[str, float]]:
    """``(id, when)`` of ``queue``'s jobs in ``status``, at most ``scan_limit``, newest first:
    ``when`` is the time the registry holds (ended jobs: their end; running ones: their hard
    deadline), and infinity for queued ones, listed in the order they will run. An unknown
    status has none. Frappe's RQ Job list reads them this way. "failed" lists the failed
    registry as RQ's does (stopped jobs included); "stopped" only its stopped jobs."""
    if status == JobStatus.QUEUED:
        return [(job_id, math.inf) for job_id, _ in pending_messages(queue, scan_limit)]
    registry = STATUS_REGISTRIES.get(status)
    if registry is None:
        return []
    with broker_errors():
        found = get_redis().zrevrange(registry(queue), 0, scan_limit - 1, withscores=True)
    listed = [(as_text(job_id), float(when)) for job_id, when in found]
    if status == JobStatus.STOPPED:
        statuses = _fields([job_id for job_id, _ in listed], ["status"])
        listed = [item for item in listed if statuses[item[0]].get("status") == status]
    return listed


def list_jobs(
    queue: str | None = None,
    site: str | None = None,
    status: str | None = None,
    limit: int = 50,
    show_args: bool = False,
    scan_limit: int | None = None,
) -> list[JobRow]:
    """Running and pending jobs (running first), filtered; at most ``limit`` rows."""
    queues = [queue] if queue else list(get_settings().queues)
    rows: list[JobRow] = []
    if status in (None, JobStatus.STARTED):
        with broker_errors():
            pipe = get_redis().pipeline(transaction=False)
            for name in queues:
                pipe.zrange(keys.started_registry(name), 0, -1)
            running = [
                (name, as_text(i))
                for name, ids in zip(queues, pipe.execute(), strict=True)
                for i in ids
            ]
        records = _fields([job_id for _, job_id in running], [*SUMMARY_FIELDS, "payload"])
        for name, job_id in running:
            row = _row(job_id, name, records[job_id])
            if site in (None, row.site) and row.status == JobStatus.STARTED:
                if show_args and records[job_id].get("payload"):
                    row.kwargs = record_payload(records[job_id]).get("kwargs")
                rows.append(row)
    if status in (None, JobStatus.QUEUED):
        for name in queues:
            wanted = limit - len(rows)
            if wanted <= 0:
                break
            # Unfiltered, the first `wanted` messages are the answer; filtered by site, look
            # further, up to scan_limit.
            limit_ = SITE_SCAN_LIMIT if scan_limit is None else scan_limit
            scan = limit_ if site else min(limit_, wanted)
            pending = pending_messages(name, scan, site)[:wanted]
            records = _fields([job_id for job_id, _ in pending], list(SUMMARY_FIELDS))
            for job_id, message in pending:
                row = _row(job_id, name, records[job_id])
                row.status = JobStatus.QUEUED  # the message is waiting, whatever the record says
                if show_args:
                    payload = readable_message_kwargs(message)
                    row.kwargs = payload.get("kwargs") if payload else None
                rows.append(row)
    return rows[:limit]


# The execute_job arguments Frappe's get_jobs reads by ``key`` (JobRow has each).
_JOB_KEYS = frozenset({"site", "method", "event", "job_name"})


def get_jobs(
    site: str | None = None, queue: str | None = None, key: str = "method"
) -> dict[str, list[Any]]:
    """Frappe's ``get_jobs``: site -> the ``key`` of its queued and running jobs; ``key`` one of
    execute_job's arguments (method, job_name, event, site) or else one of the job's own
    keyword arguments (a job without it is left out, as in Frappe).

    Like Frappe's, a site with no jobs maps to an empty list (callers index by their site).
    """
    jobs: defaultdict[str, list[Any]] = defaultdict(list)
    own = key in _JOB_KEYS
    for row in list_jobs(queue=queue, site=site, limit=10_000, show_args=not own):
        if own:
            jobs[row.site].append(asdict(row).get(key))
        elif row.kwargs and key in row.kwargs:
            jobs[row.site].append(row.kwargs[key])
    return jobs


def list_failed(queue: str | None = None, limit: int = 50) -> list[JobRow]:
    """Failed jobs, newest first, with their exception summary."""
    queues = [queue] if queue else list(get_settings().queues)
    with broker_errors():
        pipe = get_redis().pipeline(transaction=False)
        for name in queues:
            pipe.zrevrange(keys.failed_registry(name), 0, limit - 1)
        failed = [
            (name, as_text(i))
            for name, ids in zip(queues, pipe.execute(), strict=True)
            for i in ids
        ]
    records = _fields([job_id for _, job_id in failed], list(SUMMARY_FIELDS))
    rows = [_row(job_id, name, records[job_id]) for name, job_id in failed if records[job_id]]
    rows.sort(key=lambda row: row.ended_at or 0, reverse=True)
    return rows[:limit]


@dataclass(frozen=True)
class FailedFilter:
    """Which failed jobs `failed` lists and `retry` replays: each given part must match."""

    queue: str | None = None
    site: str | None = None
    method: str | None = None  # the method path, exactly
    exception: str | None = None  # part of the exception's summary ("TimeoutError", "deadlock")
    since: float | None = None  # failed at or after (epoch)
    until: float | None = None  # failed at or before (epoch)

    def matches(self, row: JobRow) -> bool:
        ended = row.ended_at or 0.0
        return (
            (self.site is None or row.site == self.site)
            and (self.method is None or row.method == self.method)
            and (self.exception is None or self.exception in row.exc)
            and (self.since is None or ended >= self.since)
            and (self.until is None or ended <= self.until)
        )


def failed_matching(which: FailedFilter, limit: int = 10**9) -> list[JobRow]:
    """The failed jobs (stopped ones too, as in RQ's failed registry) that ``which`` matches,
    newest first."""
    rows = list_failed(which.queue, limit=10**9)
    return [row for row in rows if which.matches(row)][:limit]


def get_workers() -> list[dict[str, Any]]:
    """Online workers (from their heartbeats) with the jobs each is running."""
    workers = read_workers()
    running = list_jobs(status=JobStatus.STARTED, limit=10_000)
    for worker in workers:
        worker["running"] = [row.id for row in running if row.worker == worker["node"]]
    return workers


@dataclass
class EntryState:
    entry: ScheduleEntry
    last_run: float | None
    next_run: float | None
    last_status: str | None  # the status of the job its last run enqueued


def scheduler_status() -> dict[str, Any]:
    """Leader, switches per site, and every entry's last run, next run and last outcome."""
    settings = get_settings()
    zone = ZoneInfo(settings.time_zone)
    switches = state.read_switches()
    entries = build_entries(load_events(), settings)
    last_runs = state.read_last_runs([state.last_run_field(e.site, e.name) for e in entries])
    statuses = _fields([e.job_id for e in entries], ["status"])
    now = time.time()
    rows = []
    for entry, last in zip(entries, last_runs, strict=True):
        next_run = entry.next_after(last if last is not None else now, zone)
        status = statuses.get(entry.job_id, {}).get("status")
        rows.append(EntryState(entry, last, next_run, status))
    sites = {}
    for site in settings.scheduler_sites:
        on = sorted(switches.get(site, set()) | switches.get(state.ALL_SITES, set()))
        for flag, name in (
            (settings.pause_scheduler, "paused"),
            (settings.disable_scheduler, "disabled"),
            (settings.maintenance_mode, "maintenance"),
        ):
            if flag and name not in on:
                on.append(name)
        sites[site] = on or ["active"]
    return {"leader": state.current_leader(), "sites": sites, "entries": rows, "now": now}


def refused_messages() -> dict[str, Any]:
    """The messages workers dropped as unsigned or badly signed (signing.py): how many per queue,
    and the last one (queue, job id, why, when), or None."""
    with broker_errors():
        raw = get_redis().hgetall(keys.REFUSED_MESSAGES)
    fields = {as_text(name): as_text(value) for name, value in raw.items()}
    last_text = fields.pop(keys.REFUSED_LAST_FIELD, None)
    try:
        last = json.loads(last_text) if last_text else None
    except ValueError:
        last = None
    counts = {queue: int(count) for queue, count in fields.items() if count.isdigit()}
    return {"by_queue": counts, "total": sum(counts.values()), "last": last}
