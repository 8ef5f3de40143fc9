"""The configured hooks modules (``FRAPPE_CELERY_HOOKS``), read like Frappe's app hooks.

A hooks module may define ``before_job`` and ``after_job`` (lists of dotted paths, run around
every job) and ``scheduler_events``. Hooks from several modules run in the configured module
order, each module's list in its own order.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from frappe_celery.bench_files import Bench
from frappe_celery.config import get_settings
from frappe_celery.errors import ConfigError
from frappe_celery.methods import call_with_accepted_kwargs, import_trusted
from frappe_celery.retries import RetryPolicy, policies_from


def hooks_modules() -> list[ModuleType]:
    """The configured hooks modules, imported.

    Like ``celery -A``, the current folder is importable: a project's hooks module usually sits
    there. Raises :class:`ConfigError` naming a module that cannot be imported.
    """
    if os.getcwd() not in sys.path:
        sys.path.append(os.getcwd())
    modules = []
    for name in get_settings().hooks_modules:
        try:
            modules.append(importlib.import_module(name))
        except ImportError as exc:
            raise ConfigError(f"FRAPPE_CELERY_HOOKS: cannot import {name!r}: {exc}") from exc
    return modules


def get_hooks(name: str) -> list[str]:
    """Every dotted path the hooks modules list under ``name``."""
    paths: list[str] = []
    for module in hooks_modules():
        value = getattr(module, name, None) or []
        if isinstance(value, str):
            value = [value]
        paths.extend(value)
    return paths


def run_hooks(name: str, **kwargs: Any) -> None:
    """Call each ``name`` hook with the subset of ``kwargs`` it accepts (like frappe.call).

    A hook that raises propagates: before_job hooks that fail fail the job, as in Frappe.
    """
    for path in get_hooks(name):
        hook: Callable[..., Any] = import_trusted(path)
        call_with_accepted_kwargs(hook, kwargs)


# The policies, read once per settings (reload_settings reads them again).
_policies: tuple[object, dict[str, RetryPolicy]] | None = None


def retry_policies() -> dict[str, RetryPolicy]:
    """Every ``job_retries`` policy: in a bench, each app's ``hooks.py`` (apps.txt order, as
    Frappe merges hooks); the hooks modules' (``job_retries = {method: {...}}`` beside
    ``scheduler_events``); then the config file's, which wins."""
    global _policies
    settings = get_settings()
    if _policies is None or _policies[0] is not settings:
        _policies = (settings, _read_retry_policies())
    return _policies[1]


def _read_retry_policies() -> dict[str, RetryPolicy]:
    found: dict[str, RetryPolicy] = {}
    for module in [*_bench_app_hooks(), *hooks_modules()]:
        found.update(policies_from(f"{module.__name__}.job_retries",
                                   getattr(module, "job_retries", None)))  # fmt: skip
    found.update(get_settings().job_retries)
    return found


def _bench_app_hooks() -> list[ModuleType]:
    """The hooks.py of every app of this process's bench (none outside a bench). An app whose
    hooks cannot be imported is skipped: Frappe itself would fail on it first."""
    sites_path = get_settings().sites_path
    if sites_path is None:
        return []
    modules = []
    for app in Bench(Path(sites_path)).apps():
        try:
            modules.append(importlib.import_module(f"{app}.hooks"))
        except Exception:
            continue
    return modules
