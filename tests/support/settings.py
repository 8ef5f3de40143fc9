"""The configuration a test session runs with, and ways to change it for one test: the
session's config file contents, environment overrides (reloading the package's settings), a
config file of one's own, and a bench's folder made of files only."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import frappe_celery as frappe

# Test configuration: a custom queue per purpose, a short hard-kill grace so the hard time
# limit test takes seconds, and the recording job context from tests/jobs/__init__.py.
TEST_CONFIG = {
    "workers": {"reports": {"timeout": 120}, "batch": {}},
    "frappe_celery": {
        "time_limit_grace": 2,
        "visibility_margin": 30,
        "lost_message_grace": 1,
        # A dead worker is found in ~7 heartbeats: 14 s here instead of 35 s by default. The soak
        # runs with the default (tests/soak/test_soak.py).
        "heartbeat_interval": 2,
        "retry_exceptions": ["tests.jobs.CustomRetryError"],
        "document_loader": "tests.jobs.load_document",
    },
}


HOOKS_MODULE = "tests.jobs.hooks"


@contextmanager
def settings_env(**env: str) -> Iterator[None]:
    """Set environment variables and reload frappe-celery's settings; restore both after."""
    saved = {name: os.environ.get(name) for name in env}
    os.environ.update(env)
    frappe.reload_settings()
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        frappe.reload_settings()


def config_env(tmp_path: Path, **own: Any) -> dict[str, str]:
    """No max_queued_jobs limit: nobody consumes the jobs, they pile up on purpose."""
    conf = {**TEST_CONFIG, "max_queued_jobs": 0}
    conf["frappe_celery"] = {**TEST_CONFIG["frappe_celery"], **own}
    path = tmp_path / f"config-{len(own)}-{time.monotonic_ns()}.json"
    path.write_text(json.dumps(conf))
    return {"FRAPPE_CELERY_CONFIG": str(path)}


def make_bench(
    root: Path, config: dict | str, *, apps: str = "frappe\nerpnext\n", version: str = "16.0.0"
) -> Path:
    sites = root / "sites"
    (sites / "one.local").mkdir(parents=True)
    (sites / "one.local" / "site_config.json").write_text("{}")
    (sites / "two.local").mkdir()
    (sites / "two.local" / "site_config.json").write_text("{}")
    (sites / "assets").mkdir()  # a folder without site_config.json is not a site
    (sites / "apps.txt").write_text(apps)
    text = config if isinstance(config, str) else json.dumps(config)
    (sites / "common_site_config.json").write_text(text)
    init = root / "apps" / "frappe" / "frappe" / "__init__.py"
    init.parent.mkdir(parents=True)
    init.write_text(f'__version__ = "{version}"\n')
    return sites


class _Enqueuer(frappe.JobContext):
    def __init__(self, site: str | None, user: str | None) -> None:
        self.site, self.user = site, user

    def current_site(self) -> str | None:
        return self.site

    def current_user(self) -> str | None:
        return self.user


@contextmanager
def enqueuing_as(site: str | None = None, user: str | None = None) -> Iterator[None]:
    """Enqueue as if from ``site`` and/or as ``user`` (the job context names them; None: the
    session's), then back to the default context."""
    frappe.set_job_context(_Enqueuer(site, user))
    try:
        yield
    finally:
        frappe.set_job_context(None)
