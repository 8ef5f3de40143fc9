"""`frappe-celery metrics`: the bench's Prometheus endpoint (ops/metrics.py)."""

from __future__ import annotations

import signal
import threading
from typing import Any

import click

from frappe_celery.cli.common import PROBLEM, needs_broker
from frappe_celery.config import get_settings


@click.command("metrics")
@click.option(
    "--port",
    type=click.IntRange(1, 65535),
    help="Port to serve /metrics on [default: the metrics_port setting, else 9850].",
)
@click.option(
    "--address",
    help="Address to listen on [default: the metrics_address setting, else 127.0.0.1].",
)
@click.option("--once", is_flag=True, help="Print one scrape's text and exit.")
@click.option(
    "--print",
    "shipped",
    type=click.Choice(["alerts", "dashboard"]),
    help="Print the shipped Prometheus alert rules or Grafana dashboard and exit.",
)
def metrics_command(port: int | None, address: str | None, once: bool, shipped: str | None) -> None:
    """Serve Prometheus metrics of queues, jobs, workers and the scheduler (one per bench)."""
    if shipped:
        from frappe_celery.ops.metrics import shipped_file

        click.echo(shipped_file(shipped), nl=False)
        return
    _serve(port, address, once)


@needs_broker
def _serve(port: int | None, address: str | None, once: bool) -> None:
    from frappe_celery.ops import metrics

    if once:
        click.echo(metrics.render(), nl=False)
        return
    settings = get_settings()
    port = port or settings.metrics_port or metrics.DEFAULT_PORT
    address = address or settings.metrics_address
    try:
        metrics.serve(port, address)
    except OSError as exc:
        click.echo(f"Error: cannot listen on {address}:{port}: {exc}", err=True)
        raise SystemExit(PROBLEM) from None
    click.echo(f"serving http://{address}:{port}/metrics (Ctrl-C or SIGTERM ends)")
    stopping = threading.Event()

    def stop(*_: Any) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    # The server runs in a daemon thread; this one waits for the signal, waking every second.
    while not stopping.wait(1.0):
        pass
