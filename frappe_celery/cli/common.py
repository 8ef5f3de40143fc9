"""Conventions every command shares: exit codes, the broker check, tables, times."""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any, ParamSpec, TypeVar

import click
from tabulate import tabulate

from frappe_celery.config import get_settings
from frappe_celery.connection import answers
from frappe_celery.errors import BrokerUnreachable, FrappeCeleryError, InvalidJobOperation
from frappe_celery.urls import redact_url

P = ParamSpec("P")
R = TypeVar("R")

# Exit codes scripts can trust.
OK, PROBLEM, USAGE = 0, 1, 2
# A broker that does not answer is reported within this many seconds.
BROKER_CHECK_TIMEOUT = 1.0


class UsageProblem(click.UsageError):
    """Bad usage (unknown queue, site, event or job id): exit 2, nothing changed."""


def needs_broker(command: Callable[P, R]) -> Callable[P, R]:
    """Check the broker first (exit 1 naming the URL, password hidden) and turn frappe-celery
    errors into clean messages with the right exit code."""

    @functools.wraps(command)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        from frappe_celery.ops.admin import UnknownTarget

        settings = get_settings()
        url = settings.broker_url
        if not answers(url, settings.sentinel_master, timeout=BROKER_CHECK_TIMEOUT):
            click.echo(f"Error: the Redis broker at {redact_url(url)} does not answer", err=True)
            raise SystemExit(PROBLEM)
        try:
            return command(*args, **kwargs)
        except UnknownTarget as exc:
            raise UsageProblem(str(exc)) from None
        except BrokerUnreachable as exc:
            click.echo(f"Error: {exc}", err=True)
            raise SystemExit(PROBLEM) from None
        except (InvalidJobOperation, FrappeCeleryError) as exc:
            click.echo(f"Error: {exc}", err=True)
            raise SystemExit(PROBLEM) from None

    return wrapper


def table(rows: list[list[Any]], headers: list[str]) -> str:
    return tabulate(rows, headers=headers) if rows else "(none)"


def print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str, sort_keys=True))


def when(timestamp: float | None) -> str:
    if not timestamp:
        return "-"
    return datetime.fromtimestamp(timestamp).strftime("%Y-%m-%d %H:%M:%S")


def age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m {seconds % 60:02d}s"
    if seconds < 86400:
        return f"{seconds // 3600}h {seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d {seconds % 86400 // 3600:02d}h"


def since(timestamp: float | None) -> str:
    return age(time.time() - timestamp) if timestamp else "-"
