"""`scheduler enable|disable|pause|resume|status` and `trigger-scheduler-event`."""

from __future__ import annotations

import click

from frappe_celery.cli.common import needs_broker, print_json
from frappe_celery.ops import admin, monitor

SITE_HELP = "Only this site (default: every site)."


@click.group("scheduler")
def scheduler_group() -> None:
    """Pause, resume, disable or enable the scheduler (per site or for all), or show it."""


def _switch(action: str, done: str) -> click.Command:
    @click.command(action, help=f"{action.capitalize()} the scheduler (no --site: every site).")
    @click.option("--site", help=SITE_HELP)
    @needs_broker
    def command(site: str | None) -> None:
        admin.set_scheduler(action, site)
        click.echo(f"Scheduler is {done} for {f'site {site}' if site else 'every site'}")

    return command


for _action, _done in (("pause", "paused"), ("resume", "resumed"), ("disable", "disabled"),
                       ("enable", "enabled")):  # fmt: skip
    scheduler_group.add_command(_switch(_action, _done))


@scheduler_group.command("status")
@click.option("--site", help=SITE_HELP)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@needs_broker
def scheduler_status(site: str | None, as_json: bool) -> None:
    """Per site: active, or which of paused / disabled / maintenance; and the leader beat."""
    if site:
        admin.validate_site(site)
    status = monitor.scheduler_status()
    sites = {s: flags for s, flags in status["sites"].items() if site in (None, s)}
    if as_json:
        print_json({"leader": status["leader"], "sites": sites})
        return
    for name, flags in sites.items():
        click.echo(f"{name}: {', '.join(flags)}")
    click.echo(f"leader: {status['leader'] or 'no beat running'}")


@click.command("trigger-scheduler-event")
@click.argument("event")
@click.option("--site", help=SITE_HELP)
@needs_broker
def trigger_command(event: str, site: str | None) -> None:
    """Enqueue a scheduler_events entry now: EVENT is a key (daily_long) or a method path."""
    for entry, job in admin.trigger_scheduler_event(event, site):
        outcome = f"enqueued as {job.id}" if job else "already queued or running: skipped"
        click.echo(f"{entry.method} ({entry.event}, {entry.site}): {outcome}")
