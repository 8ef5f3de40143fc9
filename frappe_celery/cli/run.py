"""`worker` (a thin wrapper over celery worker, with Frappe's --burst) and `start` (bench start)."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import click

from .. import admin
from ..config import get_settings
from ..connection import broker_errors, get_redis
from ..keys import scheduled_registry, started_registry
from .common import needs_broker
from .stack import DEFAULT_HOOKS, Stack, data_dir_option
from .supervise import ManagedProcess, celery_command, child_env

# Burst mode quits after its queues were seen empty this many polls in a row.
EMPTY_POLLS_TO_QUIT = 2
POLL_SECONDS = 0.5


def _queues(value: str | None) -> list[str]:
    if not value:
        return list(get_settings().queues)
    names = [q.strip() for q in value.split(",") if q.strip()]
    for name in names:
        admin.validate_queue_name(name)
    return names


def _remaining(queues: list[str]) -> int:
    """Jobs a burst worker still has to do: pending, running, or waiting for a retry."""
    with broker_errors():
        pipe = get_redis().pipeline(transaction=False)
        for queue in queues:
            pipe.zcard(started_registry(queue))
            pipe.zcard(scheduled_registry(queue))
        busy = sum(int(n) for n in pipe.execute())
    return busy + sum(admin.pending_count(queue) for queue in queues)


@click.command("worker")
@click.option("--queue", "-q", help="Comma-separated queues, taken in this order (default: all).")
@click.option("--num-workers", "-n", type=click.IntRange(1), default=1, show_default=True,
              help="Pool size: jobs run at once (bench worker's --num-workers).")  # fmt: skip
@click.option("--burst", is_flag=True, help="Quit when the queues are empty and their jobs done.")
@click.option("--loglevel", default="INFO", show_default=True, help="Celery log level.")
@needs_broker
def worker_command(queue: str | None, num_workers: int, burst: bool, loglevel: str) -> None:
    """Run a Celery worker on frappe-celery's queues (celery -A frappe_celery worker)."""
    queues = _queues(queue)
    argv = celery_command("worker", "-Q", ",".join(queues), "-c", str(num_workers),
                          "--loglevel", loglevel)  # fmt: skip
    if not burst:
        os.execve(sys.executable, argv, child_env({}))
    worker = ManagedProcess("worker", argv, child_env({}), err=True)
    try:
        if not worker.wait_for_line(lambda line: " ready." in line, 60):
            raise click.ClickException("the Celery worker did not start; see its output above")
        total = _remaining(queues)
        empty_polls = 0
        with click.progressbar(length=max(total, 1), label="Draining") as bar:
            while empty_polls < EMPTY_POLLS_TO_QUIT:
                if worker.process.poll() is not None:
                    raise click.ClickException(f"the worker exited ({worker.process.returncode})")
                left = _remaining(queues)
                bar.update(max(0, total - left - bar.pos))
                empty_polls = empty_polls + 1 if left == 0 else 0
                time.sleep(POLL_SECONDS)
    finally:
        worker.stop()
    click.echo("Queues empty and jobs done: quitting")


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
