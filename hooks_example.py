"""An example app's hooks, the way a Frappe app's ``hooks.py`` looks, plus the jobs it names.

Point frappe-celery at it with ``FRAPPE_CELERY_HOOKS=hooks_example`` (the demo and
``frappe-celery start`` do when nothing else is configured). Being a hooks module, it also
allows its own functions to run as jobs (module prefix ``hooks_example``).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from frappe_celery import RetryBackgroundJobError
from frappe_celery.connection import get_redis

logger = logging.getLogger(__name__)

# -- hooks ---------------------------------------------------------------------------------------

# Run around every job, like Frappe's before_job / after_job hooks.
before_job = ["hooks_example.log_job_start"]
after_job = ["hooks_example.log_job_end"]

scheduler_events = {
    "all": ["hooks_example.heartbeat"],
    "hourly": ["hooks_example.sync_exchange_rates"],
    "hourly_long": ["hooks_example.rebuild_search_index"],
    "hourly_maintenance": ["hooks_example.vacuum_logs"],
    "daily": ["hooks_example.send_daily_digest"],
    "daily_long": ["hooks_example.rebuild_search_index"],
    "daily_maintenance": ["hooks_example.vacuum_logs"],
    "daily_short": ["hooks_example.heartbeat"],
    "weekly": ["hooks_example.send_weekly_report"],
    "weekly_long": ["hooks_example.rebuild_search_index"],
    "monthly": ["hooks_example.close_books"],
    "monthly_long": ["hooks_example.archive_old_records"],
    "yearly": ["hooks_example.close_books"],
    "annual": ["hooks_example.archive_old_records"],
    "cron": {
        # six fields, seconds LAST (croniter's reading): every 10 seconds
        "* * * * * */10": ["hooks_example.heartbeat"],
        "*/15 * * * *": ["hooks_example.sync_exchange_rates"],
    },
    "cron_long": {"0 2 * * *": ["hooks_example.rebuild_search_index"]},
    "cron_short": {"@hourly": ["hooks_example.sync_exchange_rates"]},
}


def log_job_start(method: str, kwargs: dict[str, Any], transaction_type: str) -> None:
    logger.info("before_job: %s (%s)", method, transaction_type)


def log_job_end(method: str, result: Any) -> None:
    logger.info("after_job: %s -> %r", method, result)


# -- jobs ----------------------------------------------------------------------------------------


def process_data(customer: str) -> str:
    """The README's example: ``frappe.enqueue("hooks_example.process_data", customer=...)``."""
    time.sleep(0.5)
    return f"processed 42 invoices for {customer}"


def flaky_sync(counter_key: str, failures: int = 1) -> str:
    """Fails ``failures`` times with RetryBackgroundJobError, then succeeds (shows retries)."""
    attempt = int(get_redis().incr(counter_key))
    get_redis().expire(counter_key, 3600)
    if attempt <= failures:
        raise RetryBackgroundJobError(f"remote API busy (attempt {attempt})")
    return f"synced on attempt {attempt}"


def slow_report(seconds: float) -> str:
    """Runs longer than its timeout: the soft time limit interrupts it."""
    time.sleep(seconds)
    return "report ready"


def fail_on_purpose(reason: str) -> None:
    raise ValueError(reason)


def notify_failure(
    job: Any, connection: Any, exc_type: type, value: BaseException, tb: Any
) -> None:
    """An on_failure callback with RQ's signature."""
    logger.warning("on_failure: job %s failed with %s: %s", job.id, exc_type.__name__, value)


def heartbeat() -> str:
    return f"alive at {time.strftime('%H:%M:%S')}"


def sync_exchange_rates() -> str:
    return "rates synced"


def rebuild_search_index() -> str:
    return "index rebuilt"


def vacuum_logs() -> str:
    return "logs vacuumed"


def send_daily_digest() -> str:
    return "digest sent"


def send_weekly_report() -> str:
    return "weekly report sent"


def close_books() -> str:
    return "books closed"


def archive_old_records() -> str:
    return "old records archived"
