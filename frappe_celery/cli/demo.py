"""``frappe-celery demo``: Redis (embedded if none is reachable), a real worker, the example jobs
from hooks_example.py, and a table of what became of each.

This is the README's first command. It exits 0 only if every job ended the way the table says
it should, so it doubles as an end-to-end check of a fresh install.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
from tabulate import tabulate

from frappe_celery.cli.stack import DEFAULT_HOOKS, Stack, data_dir_option
from frappe_celery.ops.monitor import exception_summary
from frappe_celery.scheduler.entries import ScheduleEntry

FINAL = ("finished", "failed", "canceled")
# hooks_example's every-10-seconds entry: beat fires it during the demo.
SCHEDULED_EXPRESSION = "* * * * * */10"


@dataclass
class DemoJob:
    title: str
    expect: str  # the status it must end in
    job: Any  # Job handle, or None when enqueue returned None
    detail: Callable[[Any], str]
    skipped_reason: str = ""


def _outcome(job: Any) -> str:
    if job.get_status() == "failed":
        record = job.refresh()
        return exception_summary(record.get("exc_type", ""), record.get("exc_info", ""))
    return repr(job.return_value())


def _enqueue_examples(frappe: Any) -> list[DemoJob]:
    run = uuid.uuid4().hex[:6]
    jobs = [
        DemoJob(
            'enqueue("hooks_example.process_data", queue="long", customer="CUST-001")',
            "finished",
            frappe.enqueue("hooks_example.process_data", queue="long", customer="CUST-001"),
            _outcome,
        ),
        DemoJob(
            "RetryBackgroundJobError once, retried by Celery (1 s countdown)",
            "finished",
            frappe.enqueue("hooks_example.flaky_sync", counter_key=f"demo:flaky:{run}"),
            lambda job: f"{_outcome(job)} after {job.retries} retry",
        ),
        DemoJob(
            "timeout=2 on a 10 s job: the soft time limit interrupts it",
            "failed",
            frappe.enqueue("hooks_example.slow_report", queue="short", timeout=2, seconds=10),
            _outcome,
        ),
        DemoJob(
            "a job that raises, with an on_failure callback",
            "failed",
            frappe.enqueue(
                "hooks_example.fail_on_purpose",
                reason="bad input",
                on_failure="hooks_example.notify_failure",
            ),
            _outcome,
        ),
        DemoJob(
            "at_front=True: jumps ahead of normal jobs in its queue",
            "finished",
            frappe.enqueue("hooks_example.heartbeat", queue="short", at_front=True),
            _outcome,
        ),
    ]
    first = frappe.enqueue(
        "hooks_example.send_daily_digest", job_id=f"digest-{run}", deduplicate=True
    )
    second = frappe.enqueue(
        "hooks_example.send_daily_digest", job_id=f"digest-{run}", deduplicate=True
    )
    jobs.append(DemoJob("deduplicate=True, first call", "finished", first, _outcome))
    jobs.append(
        DemoJob(
            "deduplicate=True, same job_id again while queued",
            "skipped",
            second,
            lambda job: "",
            skipped_reason="enqueue returned None: already queued",
        )
    )
    return jobs


def _wait_until_final(jobs: list[DemoJob], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    pending = [demo.job for demo in jobs if demo.job is not None]
    while pending and time.monotonic() < deadline:
        pending = [job for job in pending if job.get_status() not in FINAL]
        time.sleep(0.2)


def _report(jobs: list[DemoJob]) -> bool:
    rows = []
    all_as_expected = True
    for demo in jobs:
        if demo.job is None:
            status, outcome = "skipped", demo.skipped_reason
        else:
            status = str(demo.job.get_status())
            outcome = demo.detail(demo.job)
        ok = status == demo.expect
        all_as_expected &= ok
        rows.append(
            [demo.title, status, outcome[:70], "yes" if ok else f"NO (wanted {demo.expect})"]
        )
    click.echo(tabulate(rows, headers=["job", "status", "outcome", "as expected"]))
    return all_as_expected


def _scheduled_heartbeat(frappe: Any, since: float, timeout: float) -> DemoJob:
    """The job beat enqueued for hooks_example's every-10-seconds cron entry."""
    site = frappe.get_settings().site
    entry = ScheduleEntry(site, "cron", SCHEDULED_EXPRESSION, "hooks_example.heartbeat", "default")
    deadline = time.monotonic() + timeout
    job = None
    while time.monotonic() < deadline:
        job = frappe.Job.fetch(entry.job_id)
        if job and (job.enqueued_at.timestamp() >= since) and job.get_status() in FINAL:
            break
        time.sleep(0.5)
    return DemoJob(
        f"scheduler_events cron {SCHEDULED_EXPRESSION!r}, fired by celery beat",
        "finished",
        job,
        _outcome,
        skipped_reason="beat enqueued nothing in time",
    )


@click.command()
@data_dir_option
@click.option("--timeout", default=90.0, show_default=True, help="Give up after this many seconds.")
def demo(data_dir: Path, timeout: float) -> None:
    """Run the example jobs of hooks_example.py on a real worker and beat; print the outcome.

    Starts an embedded Redis when none answers at the configured URL, a worker on every queue
    and celery beat; exits 0 only if every example job ended as expected.
    """
    os.environ.setdefault("FRAPPE_CELERY_HOOKS", DEFAULT_HOOKS)
    import frappe_celery as frappe

    with Stack(data_dir, log_dir=data_dir / "logs"):
        started = time.time()
        inline = frappe.enqueue("hooks_example.heartbeat", now=True)
        click.echo(f"now=True runs in-process and returns: {inline!r}")
        jobs = _enqueue_examples(frappe)
        _wait_until_final(jobs, timeout)
        jobs.append(_scheduled_heartbeat(frappe, started, timeout=30))
        click.echo("")
        as_expected = _report(jobs)
    if not as_expected:
        raise SystemExit(1)
    click.echo("\nEvery example job ended as expected.")
