"""`frappe-celery top`: one screen of the bench, read from Redis (ops/metrics.py's reading plus
the running jobs, recent failures and the scheduler's passes), drawn with rich.

rich (Textualize's, the terminal library pip and many CLIs use) draws the tables and refreshes
them in place (``rich.live.Live``), falls back to plain text when the output is no terminal
(``--once`` in a script), and sizes columns to the terminal; no escape code is written here.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from rich import box
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from frappe_celery.broker import keys
from frappe_celery.connection import broker_errors, get_redis
from frappe_celery.job import JobStatus
from frappe_celery.ops import metrics
from frappe_celery.ops.monitor import JobRow, list_failed, list_jobs
from frappe_celery.scheduler import state

# The window the "done/min" column counts over: jobs that ended in the last minute.
RATE_WINDOW = 60.0
RECENT_FAILURES = 5
# Rules under the headers only: no vertical bars, so `--once` output splits on whitespace.
TABLE_BOX = box.SIMPLE_HEAD


@dataclass
class Filters:
    """What the view shows: one queue and one site, or all (None)."""

    queue: str | None = None
    site: str | None = None

    def label(self) -> str:
        return f"queue: {self.queue or 'all'}  site: {self.site or 'all'}"


@dataclass
class Screen:
    """One reading for the view."""

    at: float
    reading: metrics.Reading
    ended_last_minute: dict[str, int]
    running: list[JobRow]
    failures: list[JobRow]
    passes: dict[str, state.SitePass] = field(default_factory=dict)

    @property
    def queues(self) -> list[str]:
        return [q.name for q in self.reading.queues]

    @property
    def sites(self) -> list[str]:
        found = {site for q in self.reading.queues for site in q.sites}
        found |= {row.site for row in self.running} | set(self.passes)
        return sorted(site for site in found if site and site != "other")


def read_screen() -> Screen:
    reading = metrics.read()
    now = reading.at
    with broker_errors():
        pipe = get_redis().pipeline(transaction=False)
        for q in reading.queues:
            for registry in (keys.finished_registry, keys.failed_registry):
                pipe.zcount(registry(q.name), now - RATE_WINDOW, "+inf")
        counts = iter(pipe.execute())
    ended = {q.name: int(next(counts)) + int(next(counts)) for q in reading.queues}
    return Screen(
        at=now,
        reading=reading,
        ended_last_minute=ended,
        running=list_jobs(status=JobStatus.STARTED, limit=200),
        failures=list_failed(limit=50),
        passes=reading.passes,
    )


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.0f}s"
    if seconds < 3600:
        return f"{seconds // 60:.0f}m{seconds % 60:02.0f}s"
    return f"{seconds // 3600:.0f}h{seconds % 3600 // 60:02.0f}m"


def render(screen: Screen, filters: Filters) -> RenderableType:
    """The whole view for ``screen``, narrowed to ``filters``."""
    reading = screen.reading
    header = Text.assemble(
        ("frappe-celery top", "bold"),
        f"  {time.strftime('%H:%M:%S', time.localtime(screen.at))}  ",
        (filters.label(), "cyan"),
        "  keys: q quit, u next queue, s next site, a all",
    )

    queues = Table(title="Queues", title_justify="left", expand=True, box=TABLE_BOX)
    for column in ("queue", "pending", "oldest", "running", "stuck", "retrying", "failed kept",
                   "done/min", "workers", "slots"):  # fmt: skip
        queues.add_column(column, justify="left" if column == "queue" else "right")
    for q in reading.queues:
        if filters.queue and q.name != filters.queue:
            continue
        if filters.site:
            pending, oldest_at = q.sites.get(filters.site, (0, None))
        else:
            pending = q.pending
            known = [at for _, at in q.sites.values() if at is not None]
            oldest_at = min(known) if known else None
        online = [w for w in reading.workers if q.name in w.get("queues", [])]
        queues.add_row(
            q.name,
            str(pending),
            _age(screen.at - oldest_at if oldest_at else None),
            str(q.started),
            Text(str(q.stuck), style="bold red" if q.stuck else ""),
            str(q.scheduled),
            str(q.dead_letter),
            str(screen.ended_last_minute.get(q.name, 0)),
            Text(str(len(online)), style="bold red" if pending and not online else ""),
            str(sum(int(w.get("concurrency") or 0) for w in online)),
        )

    def shown(row: JobRow) -> bool:
        return (not filters.queue or row.queue == filters.queue) and (
            not filters.site or row.site == filters.site
        )

    workers = Table(
        title="Workers and what they run", title_justify="left", expand=True, box=TABLE_BOX
    )
    for column in ("worker", "queues", "slots", "job", "site", "method", "running for",
                   "progress"):  # fmt: skip
        workers.add_column(column)
    running_by_worker: dict[str, list[JobRow]] = {}
    for row in screen.running:
        if shown(row):
            running_by_worker.setdefault(row.worker, []).append(row)
    for worker in reading.workers:
        node = worker["node"]
        rows = running_by_worker.pop(node, [])
        first = [node, ",".join(worker.get("queues", [])), str(worker.get("concurrency", ""))]
        if not rows:
            workers.add_row(*first, "idle", "", "", "", "")
        for i, row in enumerate(rows):
            started = screen.at - row.started_at if row.started_at else None
            workers.add_row(*(first if i == 0 else ["", "", ""]), row.id, row.site, row.method,
                            _age(started), row.progress or "-")  # fmt: skip
    for node, rows in running_by_worker.items():  # a job started on a worker now gone
        for row in rows:
            workers.add_row(Text(f"{node} (gone)", style="red"), "", "", row.id, row.site,
                            row.method, _age(None), row.progress or "-")  # fmt: skip

    failures = Table(title="Recent failures", title_justify="left", expand=True, box=TABLE_BOX)
    for column in ("ended", "queue", "site", "method", "exception"):
        failures.add_column(column)
    for row in [row for row in screen.failures if shown(row)][:RECENT_FAILURES]:
        failures.add_row(_age(screen.at - row.ended_at if row.ended_at else None) + " ago",
                         row.queue, row.site, row.method, row.exc)  # fmt: skip

    scheduler = Table(
        title=f"Scheduler (leader: {'yes' if reading.leader else 'none'})",
        title_justify="left",
        expand=True,
        box=TABLE_BOX,
    )
    for column in ("site", "state", "last pass", "due", "most late"):
        scheduler.add_column(column)
    for site, passed in sorted(screen.passes.items()):
        if filters.site and site != filters.site:
            continue
        late = max(passed.lags.items(), key=lambda item: item[1], default=None)
        scheduler.add_row(
            site,
            Text(passed.state, style="" if passed.state == "active" else "bold yellow"),
            _age(screen.at - passed.at) + " ago",
            str(len(passed.lags)),
            f"{late[0]} ({_age(late[1])})" if late else "-",
        )
    return Group(header, queues, workers, failures, scheduler)


def next_value(current: str | None, choices: list[str]) -> str | None:
    """The filter after ``current``: all (None), then each choice in turn, then all again."""
    if current is None:
        return choices[0] if choices else None
    if current not in choices or current == choices[-1]:
        return None
    return choices[choices.index(current) + 1]


__all__ = ["Filters", "Screen", "next_value", "read_screen", "render"]
