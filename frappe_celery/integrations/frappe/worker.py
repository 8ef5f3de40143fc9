"""Imported by ``celery -A frappe_celery worker`` started in a bench (Celery's ``imports``).

It runs in the worker's main process before the pool forks: Frappe is loaded once, so each pool
child starts warm, and the switch is applied, so what a job enqueues (``frappe.enqueue``,
``queue_action``) goes to Celery too, whether or not the bench's ``.pth`` switch is enabled.

Whatever a pool child imports on its first job, every child pays for again, while the batch
waits: a child's first ToDo insert took 580 ms with only Frappe itself loaded (about 10 ms for
the next ones), 70-90 ms with the modules below (2-vCPU machine, Frappe 16). So the main process
imports, once and before the fork, what Frappe itself imports before forking its own workers
(its worker-pool and its web server's preload lists), its database driver for the database types
the bench's sites use, and its Redis cache wrapper (imported lazily by ``frappe.connect()``).
Nothing connects here.
"""

from __future__ import annotations

import importlib
import json
import logging
import os

import frappe
import frappe.model.document
import frappe.utils.redis_wrapper  # noqa: F401
from celery import signals

from frappe_celery.bench_files import Bench, find_bench
from frappe_celery.errors import ConfigError
from frappe_celery.integrations.frappe.bench_worker import PRELOAD_ENV
from frappe_celery.integrations.frappe.switch import apply

logger = logging.getLogger(__name__)

# What Frappe imports before it forks workers: ``start_worker_pool`` in
# frappe/utils/background_jobs.py and the "module pre-loading" block of frappe/app.py (gunicorn's
# preload), Frappe 15 and 16. A module one Frappe version lacks is skipped.
FRAPPE_PRELOADS = (
    # frappe.utils.background_jobs.start_worker_pool
    "frappe.database.query",
    "frappe.query_builder",
    "frappe.utils",
    "frappe.utils.safe_exec",
    "frappe.utils.scheduler",
    "frappe.utils.typing_validations",
    "frappe.website.path_resolver",
    # frappe/app.py
    "gettext",
    "babel",
    "babel.messages",
    "bleach",
    "num2words",
    "pydantic",
    "frappe.boot",
    "frappe.client",
    "frappe.core.doctype.file.file",
    "frappe.core.doctype.user.user",
    "frappe.desk.desktop",
    "frappe.desk.form.save",
    "frappe.model.db_query",
    "frappe.utils.background_jobs",
    "frappe.utils.data",
    "frappe.utils.jinja",
    "frappe.utils.jinja_globals",
    "frappe.website.router",
    "frappe.website.website_generator",
)


def database_types(bench: Bench) -> set[str]:
    """The ``db_type`` of the bench's config and of every site (Frappe's default: mariadb). An
    unreadable config adds nothing: that site's jobs will report their own error."""
    types = {"mariadb"}
    configs = [bench.config_path, *(bench.site_config_path(site) for site in bench.sites())]
    for path in configs:
        try:
            config = json.loads(path.read_text("utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(config, dict) and isinstance(config.get("db_type"), str):
            types.add(config["db_type"])
    return types


# FRAPPE_CELERY_PRELOAD=none: the worker's main process imports nothing more before its pool
# forks, as Frappe's own ``bench worker``; ``bench worker`` and ``bench worker-pool`` set it
# (bench_worker.py): they start in about 0.7 s instead of 1.2 s, and each pool child imports
# the rest on its first job (once per child, not once per job as under RQ's fork-per-job worker).
PRELOAD_CHOICES = ("all", "none")


def preload_modules() -> None:
    """Import Frappe's own pre-fork modules and the bench's database drivers (one that cannot
    be imported is logged: a job that needs it will report its own error), unless
    ``FRAPPE_CELERY_PRELOAD=none``."""
    choice = os.environ.get(PRELOAD_ENV) or "all"
    if choice not in PRELOAD_CHOICES:
        raise ConfigError(
            f"{PRELOAD_ENV}={choice!r}: choose one of {', '.join(PRELOAD_CHOICES)} (what the "
            "worker imports before its pool forks)"
        )
    if choice == "none":
        return
    bench = find_bench()
    drivers = [f"frappe.database.{db_type}.database" for db_type in
               sorted(database_types(bench))] if bench is not None else []  # fmt: skip
    for module in (*FRAPPE_PRELOADS, *drivers):
        try:
            importlib.import_module(module)
        except ImportError as exc:
            # A module this Frappe version lacks is expected; a database driver missing from
            # the virtualenv is worth a warning.
            level = logging.WARNING if module in drivers else logging.DEBUG
            logger.log(level, "frappe-celery: could not preload %s: %s", module, exc)


def start_sentry(**_: object) -> None:
    """Frappe's ``_start_sentry()``, which its RQ workers call at start: with
    ``FRAPPE_SENTRY_DSN`` set, a job's exception reaches Sentry. Called in every pool child
    (connected to ``worker_process_init``): Sentry's sending thread does not survive a fork."""
    import frappe.utils.background_jobs as background_jobs

    start = getattr(background_jobs, "_start_sentry", None)
    if start is not None:
        start()


apply()
preload_modules()
signals.worker_process_init.connect(start_sentry, weak=False)
