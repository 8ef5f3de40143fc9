"""Job commands: jobs (show-pending-jobs), failed, retry, purge-jobs, stop, cancel."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict
from datetime import datetime
from typing import Any

import click

from frappe_celery.cli.common import PROBLEM, age, needs_broker, print_json, table, when
from frappe_celery.cli.common import since as since_text
from frappe_celery.job import JobStatus
from frappe_celery.ops import admin, monitor

QUEUE_HELP = "Only this queue (default: every queue)."
SITE_HELP = "Only jobs of this site."
LIMIT_HELP = "At most this many rows."


def _job_rows(rows: list[monitor.JobRow], show_args: bool) -> list[list[object]]:
    out: list[list[object]] = []
    for row in rows:
        line: list[object] = [
            row.site,
            row.queue,
            row.status,
            row.method,
            row.id,
            when(row.enqueued_at),
            age(row.age),
            row.progress or "-",
        ]
        if show_args:
            line.append(json.dumps(row.kwargs, default=str))
        out.append(line)
    return out


@click.command("jobs")
@click.option("--queue", "-q", help=QUEUE_HELP)
@click.option("--site", help=SITE_HELP)
@click.option(
    "--status",
    type=click.Choice([JobStatus.QUEUED.value, JobStatus.STARTED.value]),
    help="Only pending (queued) or running (started) jobs.",
)
@click.option(
    "--limit", default=50, show_default=True, type=click.IntRange(1), help="At most this many rows."
)
@click.option("--show-args", is_flag=True, help="Also show each job's arguments.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@needs_broker
def jobs_command(
    queue: str | None,
    site: str | None,
    status: str | None,
    limit: int,
    show_args: bool,
    as_json: bool,
) -> None:
    """Pending and running jobs per site and queue: method, id, enqueued time, age, progress."""
    if queue:
        admin.validate_queue_name(queue)
    if site:
        admin.validate_site(site)
    rows = monitor.list_jobs(
        queue=queue, site=site, status=status, limit=limit, show_args=show_args
    )
    if site and status != JobStatus.STARTED and len(rows) < limit:
        _note_unscanned(queue)
    if as_json:
        print_json([asdict(row) for row in rows])
        return
    headers = ["site", "queue", "status", "method", "job id", "enqueued", "age", "progress"]
    click.echo(table(_job_rows(rows, show_args), headers + (["args"] if show_args else [])))


def _note_unscanned(queue: str | None) -> None:
    """Say so (on stderr) when a site's pending jobs may lie beyond what --site looked at."""
    for stats in monitor.queue_stats([queue] if queue else None):
        if stats.pending > monitor.SITE_SCAN_LIMIT:
            click.echo(
                f"note: --site looks at the next {monitor.SITE_SCAN_LIMIT:,} pending jobs of "
                f"each queue; {stats.name} has {stats.pending:,}, and this site's jobs further "
                "back are not listed",
                err=True,
            )


def failed_filters(command: Callable[..., Any]) -> Callable[..., Any]:
    """The options that pick failed jobs, shared by `failed` and `retry`."""
    for option in reversed([
        click.option("--queue", "-q", help=QUEUE_HELP),
        click.option("--site", help="Only this site's jobs."),
        click.option("--method", help="Only jobs of this method (its dotted path)."),
        click.option("--exception", help="Only jobs whose exception says this (a class name, "
                     "or words of its message)."),
        click.option("--since", type=click.DateTime(), help="Only jobs failed at or after this "
                     "local time (2026-12-06, or '2026-12-06 14:30:00')."),
        click.option("--until", type=click.DateTime(), help="Only jobs failed at or before this "
                     "local time."),
    ]):  # fmt: skip
        command = option(command)
    return command


def _filter(queue: str | None, site: str | None, method: str | None, exception: str | None,
            since: datetime | None, until: datetime | None) -> monitor.FailedFilter:  # fmt: skip
    if queue:
        admin.validate_queue_name(queue)
    if site:
        admin.validate_site(site)
    return monitor.FailedFilter(
        queue, site, method, exception,
        since.timestamp() if since else None, until.timestamp() if until else None,
    )  # fmt: skip


@click.command("failed")
@failed_filters
@click.option(
    "--limit", default=50, show_default=True, type=click.IntRange(1), help="At most this many rows."
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@needs_broker
def failed_command(
    queue: str | None, site: str | None, method: str | None, exception: str | None,
    since: datetime | None, until: datetime | None, limit: int, as_json: bool,
) -> None:  # fmt: skip
    """Failed jobs, newest first, with their exception and how many attempts they had: the
    dead-letter `retry` replays from."""
    which = _filter(queue, site, method, exception, since, until)
    rows = monitor.failed_matching(which, limit)
    if as_json:
        print_json([asdict(row) for row in rows])
        return
    click.echo(
        table(
            [
                [
                    row.site,
                    row.queue,
                    row.method,
                    row.id,
                    since_text(row.ended_at),
                    row.retries + 1,
                    row.exc[:80],
                ]
                for row in rows
            ],
            ["site", "queue", "method", "job id", "failed", "attempts", "exception"],
        )
    )


@click.command("retry")
@click.argument("job_id", required=False)
@click.option("--all", "retry_all", is_flag=True, help="Every failed job (the filters narrow it).")
@failed_filters
@needs_broker
def retry_command(
    job_id: str | None, retry_all: bool, queue: str | None, site: str | None,
    method: str | None, exception: str | None, since: datetime | None, until: datetime | None,
) -> None:  # fmt: skip
    """Enqueue failed jobs again with the same arguments, site, user and id: JOB_ID, the ones
    the filters pick, or --all."""
    filtered = any(v is not None for v in (queue, site, method, exception, since, until))
    if job_id and (retry_all or filtered):
        raise click.UsageError("give a JOB_ID, or filters and/or --all, not both")
    if not job_id and not (retry_all or filtered):
        raise click.UsageError("give a JOB_ID, filters (--queue, --site, ...) or --all")
    if job_id:
        job = admin.retry_job(job_id)
        click.echo(f"Enqueued {job.id} again on {job.queue}")
        return
    which = _filter(queue, site, method, exception, since, until)
    total = len(monitor.failed_matching(which))
    with click.progressbar(length=total, label="Retrying failed jobs") as bar:
        done = admin.retry_matching(which, progress=bar.update)
    click.echo(f"Enqueued {done} failed jobs again")


@click.command("purge-jobs")
@click.option("--queue", "-q", required=True, help="The queue to remove pending jobs from.")
@click.option(
    "--event", help="Only jobs of this event (scheduler_events key, or enqueue's event=)."
)
@click.option("--site", help="Only jobs of this site.")
@needs_broker
def purge_jobs_command(queue: str, event: str | None, site: str | None) -> None:
    """Remove pending jobs and free their ids; prints how many."""
    admin.validate_queue_name(queue)
    if site:
        admin.validate_site(site)
    with click.progressbar(length=admin.pending_count(queue), label=f"Purging {queue}") as bar:
        removed = admin.purge_jobs(queue, event=event, site=site, progress=bar.update)
    click.echo(f"Purged {removed} jobs")


@click.command("stop")
@click.argument("job_id", required=False)
@click.option(
    "--stuck",
    is_flag=True,
    help="Fail every job still started past its hard time limit plus a grace, freeing its id.",
)
@needs_broker
def stop_command(job_id: str | None, stuck: bool) -> None:
    """Stop a running job (its worker kills it; it is recorded stopped, as RQ does), or with
    --stuck fail the stuck ones (a worker frozen or gone) so their ids are free again."""
    if stuck == bool(job_id):
        raise click.UsageError("give a JOB_ID or --stuck (not both)")
    if stuck:
        failed = admin.stop_stuck_jobs()
        for one in failed:
            click.echo(f"Failed {one.job_id} ({one.queue}): stuck {one.overdue:.0f} s past its "
                       "hard time limit; its id is free")  # fmt: skip
        click.echo(f"{len(failed)} stuck job(s) failed and freed")
        return
    assert job_id is not None
    job = admin.stop_job(job_id)
    status = job.get_status()
    if status == JobStatus.STARTED:
        click.echo(f"Error: no worker stopped {job.id} in time: is its worker online?", err=True)
        raise SystemExit(PROBLEM)
    click.echo(f"Stopped {job.id}; its status is now {status}")


@click.command("cancel")
@click.argument("job_id")
@needs_broker
def cancel_command(job_id: str) -> None:
    """Remove a queued job before it runs."""
    job = admin.cancel_job(job_id)
    click.echo(f"Canceled {job.id}")
