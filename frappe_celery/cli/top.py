"""`frappe-celery top`: a live view of queues, workers, failures and the scheduler (ops/top.py)."""

from __future__ import annotations

import contextlib
import os
import select
import sys
import termios
import time
import tty
from collections.abc import Iterator

import click

from frappe_celery.cli.common import needs_broker


@contextlib.contextmanager
def keys_without_enter() -> Iterator[bool]:
    """Keys read one at a time, unechoed (cbreak), while stdin is a terminal; yields whether."""
    if not sys.stdin.isatty():
        yield False
        return
    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    try:
        tty.setcbreak(fd)
        yield True
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def read_key(timeout: float) -> str | None:
    """One key pressed within ``timeout`` seconds, or None."""
    ready, _, _ = select.select([sys.stdin], [], [], timeout)
    return os.read(sys.stdin.fileno(), 1).decode(errors="replace") if ready else None


SCRIPT_WIDTH = 200


@click.command("top")
@click.option("-q", "--queue", help="Show only this queue.")
@click.option("-s", "--site", help="Show only this site.")
@click.option(
    "--interval",
    type=click.FloatRange(min=0.5, max=60),
    default=2.0,
    show_default=True,
    help="Seconds between refreshes.",
)
@click.option("--once", is_flag=True, help="Print one screen and exit (for scripts).")
@needs_broker
def top_command(queue: str | None, site: str | None, interval: float, once: bool) -> None:
    """Live view: queues (depth, done per minute, oldest age), workers and what each runs with
    its progress, recent failures, the scheduler per site. Keys: q quit, u next queue, s next
    site, a all."""
    from rich.console import Console
    from rich.live import Live

    from frappe_celery.ops import admin
    from frappe_celery.ops.top import Filters, next_value, read_screen, render

    if queue:
        admin.validate_queue_name(queue)
    if site:
        admin.validate_site(site)
    filters = Filters(queue, site)
    # Off a terminal (a script, a pipe) nothing says how wide: wide enough not to cut a job id.
    console = Console(width=None if sys.stdout.isatty() else SCRIPT_WIDTH)
    if once:
        console.print(render(read_screen(), filters))
        return
    with keys_without_enter() as interactive, Live(
        render(screen := read_screen(), filters), console=console, screen=False,
        auto_refresh=False,
    ) as live:  # fmt: skip
        while True:
            deadline = time.monotonic() + interval
            while (left := deadline - time.monotonic()) > 0:
                key = read_key(left) if interactive else None
                if not interactive:
                    time.sleep(left)
                if key in ("q", "\x1b"):
                    return
                if key in ("u", "s", "a"):
                    if key == "u":
                        filters.queue = next_value(filters.queue, screen.queues)
                    elif key == "s":
                        filters.site = next_value(filters.site, screen.sites)
                    else:
                        filters.queue = filters.site = None
                    live.update(render(screen, filters), refresh=True)
            screen = read_screen()
            live.update(render(screen, filters), refresh=True)
