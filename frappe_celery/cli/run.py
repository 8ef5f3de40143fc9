"""`worker` (a thin wrapper over celery worker, --burst included) and `start` (bench start)."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import click

from frappe_celery.cli.common import needs_broker
from frappe_celery.cli.stack import DEFAULT_HOOKS, Stack, data_dir_option
from frappe_celery.cli.supervise import celery_command, child_env
from frappe_celery.config import get_settings
from frappe_celery.ops import admin


def _queues(value: str | None) -> list[str]:
    if not value:
        return list(get_settings().queues)
    names = [q.strip() for q in value.split(",") if q.strip()]
    for name in names:
        admin.validate_queue_name(name)
    return names


@click.command("worker")
@click.option("--queue", "-q", help="Comma-separated queues, taken in this order (default: all).")
@click.option("--num-workers", "-n", type=click.IntRange(1), default=1, show_default=True,
              help="Pool size: jobs run at once (bench worker's --num-workers).")  # fmt: skip
@click.option("--burst", is_flag=True, help="Quit when the queues are empty and nothing runs.")
@click.option("--loglevel", default="INFO", show_default=True, help="Celery log level.")
@needs_broker
def worker_command(queue: str | None, num_workers: int, burst: bool, loglevel: str) -> None:
    """Run a Celery worker on frappe-celery's queues (celery -A frappe_celery worker)."""
    queues = _queues(queue)
    argv = celery_command("worker", "-Q", ",".join(queues), "-c", str(num_workers),
                          "--loglevel", loglevel, *(["--burst"] if burst else []))  # fmt: skip
    os.execve(sys.executable, argv, child_env({}))


def _stop_everything(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


@click.command("start")
@click.option("--concurrency", "-c", type=click.IntRange(1), default=2, show_default=True,
              help="Jobs the worker runs at once.")  # fmt: skip
@data_dir_option
def start_command(concurrency: int, data_dir: Path) -> None:
    """bench start: Redis (embedded if none answers), a worker on every queue and beat.

    Uses the hooks modules of FRAPPE_CELERY_HOOKS (hooks_example when none are set). Streams
    their logs with prefixes; Ctrl-C stops everything, the embedded Redis last.
    """
    os.environ.setdefault("FRAPPE_CELERY_HOOKS", DEFAULT_HOOKS)
    # Ctrl-C, and a supervisor's SIGTERM, stop everything. Set here because a process started
    # in the background by a shell without job control inherits SIGINT ignored, and Python's
    # default for SIGTERM would leave the worker, beat and Redis running without it.
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _stop_everything)
    with Stack(data_dir, concurrency=concurrency) as stack:
        click.echo("Running; Ctrl-C stops everything.")
        try:
            code = stack.wait()
        except KeyboardInterrupt:
            click.echo("\nStopping...")
            code = 0
    raise SystemExit(code)
