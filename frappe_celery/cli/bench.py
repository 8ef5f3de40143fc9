"""`bench enable|disable|status`: switch a whole Frappe bench between RQ and frappe-celery."""

from __future__ import annotations

import sys

import click

from ..integrations.frappe import switch


@click.group("bench")
def bench_group() -> None:
    """Run a Frappe bench's background jobs on Celery (enable) or on RQ again (disable).

    Run it with the bench's own Python: BENCH/env/bin/frappe-celery bench enable. It affects
    every process of the bench started afterwards (restart web, workers and scheduler).
    """


@bench_group.command("enable")
def enable_command() -> None:
    """Send frappe.enqueue, enqueue_doc, queue_action ... of every bench process to Celery."""
    try:
        changed = switch.enable()
    except switch.FrappeNotImportable as exc:
        raise click.ClickException(str(exc)) from None
    where = switch.pth_path()
    if changed:
        click.echo(f"frappe-celery switch enabled ({where}); restart the bench's processes")
    else:
        click.echo(f"frappe-celery switch already enabled ({where}); nothing changed")


@bench_group.command("disable")
def disable_command() -> None:
    """Give the bench back to RQ (Frappe's own enqueue) for every process started afterwards."""
    if switch.disable():
        click.echo("frappe-celery switch disabled; restart the bench's processes (RQ again)")
    else:
        click.echo("frappe-celery switch was not enabled; nothing changed")


@bench_group.command("status")
def status_command() -> None:
    """Say whether this Python's bench runs its jobs on Celery (exit 0) or RQ (exit 1)."""
    if switch.is_enabled():
        click.echo(f"enabled: background jobs run on Celery ({switch.pth_path()})")
        return
    click.echo(f"disabled: background jobs run on RQ ({sys.executable})")
    sys.exit(1)
