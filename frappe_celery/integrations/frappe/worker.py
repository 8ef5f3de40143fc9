"""Imported by ``celery -A frappe_celery worker`` started in a bench (Celery's ``imports``).

It runs in the worker's main process before the pool forks: Frappe is loaded once, so each pool
child starts warm, and the switch is applied, so what a job enqueues (``frappe.enqueue``,
``queue_action``) goes to Celery too, whether or not the bench's ``.pth`` switch is enabled.

Frappe imports its database driver and its Redis cache wrapper lazily, on the first
``frappe.connect()``; left to the children, every pool child's first job paid for those imports
(about 40 ms of a 60 ms first ping on a 2-vCPU machine, against 2 ms for the next ones). They
are imported here, once, for the database types the bench's sites use; nothing connects.
"""

from __future__ import annotations

import importlib
import json
import logging

import frappe
import frappe.model.document
import frappe.utils.redis_wrapper  # noqa: F401

from ...bench import Bench, find_bench
from .switch import apply

logger = logging.getLogger(__name__)


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


def preload_database_drivers() -> None:
    bench = find_bench()
    if bench is None:
        return
    for db_type in sorted(database_types(bench)):
        module = f"frappe.database.{db_type}.database"
        try:
            importlib.import_module(module)
        except ImportError as exc:  # a driver this venv lacks: the site's jobs will say so
            logger.warning("frappe-celery: could not preload %s: %s", module, exc)


apply()
preload_database_drivers()
