"""`status` (one screen: broker, queues, workers, scheduler) and `doctor`."""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import Any

import click

from frappe_celery.cli.common import PROBLEM, age, needs_broker, print_json, since, table, when
from frappe_celery.config import get_settings
from frappe_celery.connection import broker_errors, get_redis
from frappe_celery.ops import admin, monitor
from frappe_celery.urls import redact_url

# How many upcoming scheduler entries `status` lists.
NEXT_ENTRIES = 5


def collect() -> dict[str, Any]:
    """Everything `status` shows, as plain data (the --json output)."""
    settings = get_settings()
    with broker_errors():
        info = get_redis().info()
    scheduler = monitor.scheduler_status()
    entries = scheduler.pop("entries")
    now = scheduler["now"]
    upcoming = sorted(entries, key=lambda e: e.next_run or float("inf"))[:NEXT_ENTRIES]
    overdue = [e for e in entries if e.next_run is not None and e.next_run < now]
    most_overdue = min(overdue, key=lambda e: e.next_run or now, default=None)
    return {
        "broker": {
            "url": redact_url(settings.broker_url),
            "redis_version": info.get("redis_version"),
            "used_memory": info.get("used_memory_human"),
        },
        "queues": [asdict(stats) for stats in monitor.queue_stats()],
        "workers": monitor.get_workers(),
        "running": [asdict(row) for row in monitor.list_jobs(status="started", limit=100)],
        "refused_messages": monitor.refused_messages(),
        "scheduler": {
            **scheduler,
            "next": [_entry(e) for e in upcoming],
            "most_overdue": _entry(most_overdue) if most_overdue else None,
            "failing": [_entry(e) for e in entries if e.last_status == "failed"],
            "entries": len(entries),
        },
    }


def _entry(state: monitor.EntryState) -> dict[str, Any]:
    return {
        "site": state.entry.site,
        "event": state.entry.event,
        "method": state.entry.method,
        "queue": state.entry.queue,
        "last_run": state.last_run,
        "next_run": state.next_run,
        "last_status": state.last_status,
    }


def render(data: dict[str, Any]) -> str:
    broker = data["broker"]
    lines = [
        f"Broker  {broker['url']}  (Redis {broker['redis_version']}, {broker['used_memory']} used)",
        "",
        table(
            [
                [
                    q["name"],
                    q["pending"],
                    " ".join(f"{p}:{n}" for p, n in q["pending_by_priority"].items()),
                    q["started"],
                    q["scheduled"],
                    q["finished"],
                    q["failed"],
                    age(q["oldest_pending_age"]),
                ]
                for q in data["queues"]
            ],
            [
                "queue",
                "pending",
                "by priority",
                "started",
                "scheduled",
                "finished",
                "failed",
                "oldest pending",
            ],
        ),
        "",
        f"Workers online: {len(data['workers'])}",
    ]
    if data["workers"]:
        lines.append(
            table(
                [
                    [
                        w["node"],
                        ",".join(w["queues"]),
                        w["concurrency"],
                        len(w["running"]),
                        since(w["last_heartbeat"]),
                    ]
                    for w in data["workers"]
                ],
                ["worker", "queues", "concurrency", "running", "last heartbeat"],
            )
        )
    if data["running"]:
        lines += ["", "Running jobs:"]
        lines.append(
            table(
                [
                    [r["queue"], r["method"], r["id"], since(r["started_at"]), r["progress"] or "-"]
                    for r in data["running"]
                ],
                ["queue", "method", "job id", "running for", "progress"],
            )
        )
    refused = data["refused_messages"]
    if refused["total"]:
        last = refused["last"] or {}
        by_queue = ", ".join(f"{queue}: {n}" for queue, n in sorted(refused["by_queue"].items()))
        lines += ["", f"Refused messages (unsigned or badly signed, never run): {by_queue}"]
        if last:
            lines.append(
                f"  last: queue {last.get('queue')}, job {last.get('job_id')}, "
                f"{since(last.get('at'))} ago: {last.get('problem')}"
            )
    scheduler = data["scheduler"]
    sites = ", ".join(f"{site}: {'/'.join(flags)}" for site, flags in scheduler["sites"].items())
    lines += ["", f"Scheduler  leader: {scheduler['leader'] or 'none running'}  sites: {sites}"]
    lines.append(f"  {scheduler['entries']} entries; next due:")
    lines.append(
        table(
            [
                [e["site"], e["event"], e["method"], when(e["next_run"]), e["last_status"] or "-"]
                for e in scheduler["next"]
            ],
            ["site", "event", "method", "next run", "last run's job"],
        )
    )
    overdue = scheduler["most_overdue"]
    if overdue:
        lines.append(
            f"  most overdue: {overdue['method']} ({overdue['event']}, {overdue['site']}), due "
            f"{age(time.time() - overdue['next_run'])} ago"
        )
    for entry in scheduler["failing"]:
        lines.append(f"  last run failed: {entry['method']} ({entry['event']}, {entry['site']})")
    return "\n".join(lines)


@click.command("status")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option(
    "--watch", type=click.FloatRange(min=0.5), help="Refresh every N seconds (Ctrl-C ends)."
)
@needs_broker
def status_command(as_json: bool, watch: float | None) -> None:
    """One screen: broker, queues (every priority list counted), workers, scheduler."""
    while True:
        data = collect()
        if as_json:
            print_json(data)
        else:
            if watch:
                click.clear()
            click.echo(render(data))
        if not watch:
            return
        time.sleep(watch)


@click.command("doctor")
@needs_broker
def doctor_command() -> None:
    """Check broker, consumers, scheduler, stuck jobs and timeouts; exit 1 if anything is wrong."""
    settings = get_settings()
    click.echo(f"Broker {redact_url(settings.broker_url)}: reachable")
    problems = admin.doctor()
    if not problems:
        click.echo("No problems found.")
        return
    for problem in problems:
        click.echo(f"PROBLEM: {problem.what}\n  fix: {problem.fix}")
    raise SystemExit(PROBLEM)
