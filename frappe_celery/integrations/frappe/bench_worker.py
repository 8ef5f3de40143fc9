"""``bench worker`` and ``bench worker-pool`` on a switched bench: Celery workers, same options.

Frappe's commands (``frappe/commands/scheduler.py``) import ``start_worker`` and
``start_worker_pool`` from ``frappe.utils.background_jobs`` when they run; the switch replaces
both with the functions below, so the Procfile and supervisor lines that ``bench setup
procfile`` / ``supervisor`` / ``production`` write (``bench worker --queue short,default``,
``bench worker-pool ...``) start Celery workers, unchanged, from the same folder (``sites/``)
and into the same logs (the process's stdout and stderr, which those files redirect).

What each RQ option becomes:

========================  =====================================================================
``--queue a,b``           ``-Q a,b``, taken strictly in that order (RQ's default strategy); no
                          ``--queue``: every queue of the bench, Frappe's order
``--burst``               ``--burst``: exit 0 once those queues are empty ("done, quitting")
``--quiet``               ``--loglevel WARNING`` (else INFO); log lines go to stdout, as RQ's
``--strategy``            ``--queue-order round_robin`` / ``random``
``-u`` / ``-p``           the Redis ACL user and password for this worker's broker connection
``--num-workers N``       ``-c N`` prefork pool children (``bench worker``: 1, as RQ runs one
                          job at a time; each job still runs in a forked child, with Frappe
                          already loaded)
========================  =====================================================================

The worker is named ``<queues>.<pid>@<host>``, unique per process, as RQ's are: supervisor's
``numprocs`` and several Procfile lines run side by side.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
from typing import Any, NoReturn

import click
from celery import signals

from frappe_celery.bench_files import broker_url_of, find_bench
from frappe_celery.celery_app import get_app, reload_settings
from frappe_celery.config import get_settings
from frappe_celery.errors import FrappeCeleryError
from frappe_celery.worker.options import QUEUE_ORDERS

# What the worker's main process imports before its pool forks (worker.py reads it).
PRELOAD_ENV = "FRAPPE_CELERY_PRELOAD"


def _queues(queue: str | None) -> list[str]:
    known = list(get_settings().queues)
    if not queue:
        return known
    names = [name.strip() for name in queue.split(",") if name.strip()]
    unknown = [name for name in names if name not in known]
    if unknown or not names:
        raise click.BadParameter(
            f"{queue!r}: {', '.join(unknown) or 'no queue'} is not a queue of this bench; "
            f"choose among {', '.join(known)} (custom queues come from 'workers' in "
            "common_site_config.json)",
            param_hint="'--queue'",
        )
    return list(dict.fromkeys(names))


def _use_credentials(username: str | None, password: str | None) -> None:
    """``-u`` / ``-p``: this process's broker connection authenticates as that Redis user."""
    if not username and not password:
        return
    bench = find_bench()
    if bench is None:
        raise click.UsageError("-u/-p: not in a bench's sites folder")
    conf = json.loads(bench.config_path.read_text("utf-8"))
    credentials = {"use_rq_auth": True, "rq_username": username or conf.get("rq_username"),
                   "rq_password": password or conf.get("rq_password")}  # fmt: skip
    os.environ["FRAPPE_CELERY_BROKER_URL"] = broker_url_of(bench, {**conf, **credentials})
    reload_settings()


def worker_options(
    queues: list[str],
    concurrency: int,
    *,
    quiet: bool = False,
    burst: bool = False,
    strategy: Any = None,
) -> dict[str, Any]:
    """The ``celery worker`` options a ``bench worker`` / ``worker-pool`` call means."""
    # RQ's DequeueStrategy is a str enum ("default", "round_robin", "random").
    # "default" (RQ's) is our default order; the others are --queue-order choices by name.
    name = str(getattr(strategy, "value", strategy) or "")
    order = name if name in QUEUE_ORDERS and name != "priority" else None
    return {
        "queues": queues,
        "concurrency": concurrency,
        "pool_cls": "prefork",
        "hostname": f"{'.'.join(queues)}.{os.getpid()}@{socket.gethostname()}",
        "loglevel": "WARNING" if quiet else "INFO",
        "burst": burst,
        "queue_order": order,
    }


def log_to_stdout(logger: logging.Logger, **_: Any) -> None:
    """RQ's workers log to stdout, which the Procfile and supervisor send to ``worker.log``
    (stderr goes to ``worker.error.log``): Celery's log lines go there too."""
    for handler in logger.handlers:
        if isinstance(handler, logging.StreamHandler) and handler.stream in (
            sys.stderr,
            sys.__stderr__,
        ):
            handler.setStream(sys.stdout)


def _run(options: dict[str, Any]) -> NoReturn:
    """Run the worker in this process, as ``celery worker`` would with those options.

    Built directly rather than through Celery's command line: its click commands import about
    0.1 s of modules (click-repl, prompt-toolkit) that a worker never uses, and Frappe's own
    tests measure a ``bench worker``'s CPU from 1 s after its start.
    """
    app = get_app()
    signals.after_setup_logger.connect(log_to_stdout, weak=False)
    signals.after_setup_task_logger.connect(log_to_stdout, weak=False)
    # Nothing imported before the pool forks, as Frappe's `bench worker` (worker.py).
    os.environ.setdefault(PRELOAD_ENV, "none")
    try:
        worker = app.Worker(**options)
        worker.start()
    except FrappeCeleryError as exc:
        raise click.ClickException(str(exc)) from None
    raise SystemExit(worker.exitcode or 0)


def start_worker(
    queue: str | None = None,
    quiet: bool = False,
    rq_username: str | None = None,
    rq_password: str | None = None,
    burst: bool = False,
    strategy: Any = None,
) -> NoReturn:
    """Frappe's ``start_worker`` (``bench worker``): one Celery worker, one job at a time."""
    _use_credentials(rq_username, rq_password)
    _run(worker_options(_queues(queue), 1, quiet=quiet, burst=burst, strategy=strategy))


def start_worker_pool(
    queue: str | None = None,
    num_workers: int = 1,
    quiet: bool = False,
    burst: bool = False,
) -> NoReturn:
    """Frappe's ``start_worker_pool`` (``bench worker-pool``): one Celery worker whose prefork
    pool runs ``num_workers`` jobs at once."""
    if not isinstance(num_workers, int) or num_workers < 1:
        raise click.BadParameter(
            f"{num_workers!r}: the pool needs at least one worker", param_hint="'--num-workers'"
        )
    _run(worker_options(_queues(queue), num_workers, quiet=quiet, burst=burst))
