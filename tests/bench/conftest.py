"""The bench tier: tests against a real Frappe bench and site, with real Celery workers.

The bench comes from the environment, so a Frappe developer can point these tests at their own:
``FRAPPE_BENCH`` (the bench folder) and ``FRAPPE_SITE``, or ``FRAPPE_BENCH_ENV`` naming a
``bench.env`` file as ``../shared/frappe/make-bench.sh`` writes it. ``bash run.sh bench-test``
prepares such a bench (frappe-celery and the example app installed, the switch enabled) and runs
these tests with the bench's own Python, which is the only one that can import Frappe. Without
a bench every test here is skipped with the reason.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from frappe_celery.ops.embedded import free_port

from ..support.frappe_bench import (
    PREPARE,
    TICK,
    Bench,
    HttpSink,
    Worker,
    edit_json,
    find_bench,
    start_celery_worker,
)
from ..support.processes import wait_for

BENCH, SKIP_REASON = find_bench()
if BENCH is not None:
    try:
        import frappe  # noqa: F401
    except ImportError:
        BENCH, SKIP_REASON = None, f"Frappe is not importable by {sys.executable}; {PREPARE}"
if BENCH is None and os.environ.get("FRAPPE_CELERY_BENCH_REQUIRED"):
    # bash run.sh bench-test prepared a bench: not finding it is a failure, not a skip.
    raise RuntimeError(f"the bench tier cannot run: {SKIP_REASON}")
if BENCH is not None:
    # Before frappe_celery loads its settings: this process talks to the bench's own Redis, with
    # the bench's config, as any process of the bench does.
    for name in [key for key in os.environ if key.startswith("FRAPPE_CELERY_")]:
        del os.environ[name]
    os.environ["FRAPPE_CELERY_SITES_PATH"] = str(BENCH.sites)
    import frappe_celery

    frappe_celery.reload_settings()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if BENCH is not None:
        return
    skip = pytest.mark.skip(reason=SKIP_REASON)
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def bench() -> Iterator[Bench]:
    assert BENCH is not None
    # Frappe finds its logs and its bench relative to the current folder: sites/, as in every
    # bench process.
    before = os.getcwd()
    os.chdir(BENCH.sites)
    yield BENCH
    os.chdir(before)


@pytest.fixture
def site(bench: Bench) -> Iterator[Any]:
    """Frappe connected to the bench's site as Administrator, as ``bench console`` is."""
    import frappe

    frappe.init(bench.site, sites_path=str(bench.sites), force=True)
    frappe.connect()
    frappe.set_user("Administrator")
    try:
        yield frappe
    finally:
        frappe.db.rollback()
        frappe.destroy()


@pytest.fixture(scope="session")
def sentry_sink() -> Iterator[HttpSink]:
    """Where the session's worker sends Sentry events (its FRAPPE_SENTRY_DSN): nothing leaves
    the host."""
    sink = HttpSink()
    yield sink
    sink.close()


@pytest.fixture(scope="session")
def celery_worker(
    bench: Bench, tmp_path_factory: pytest.TempPathFactory, sentry_sink: HttpSink
) -> Iterator[Worker]:
    # Sentry as a bench operator sets it up (Frappe sends only when a site enables telemetry).
    dsn = {"FRAPPE_SENTRY_DSN": sentry_sink.url.replace("http://", "http://public@") + "/1"}
    worker = start_celery_worker(
        bench, tmp_path_factory.mktemp("worker") / "worker.log", extra_env=dsn
    )
    yield worker
    worker.stop()


@pytest.fixture
def scheduler_on(bench: Bench, site: Any) -> Iterator[Any]:
    """The site's scheduler enabled, Frappe's tick at TICK s, every job type just run (so only
    what a test makes due fires), the site in use; put back afterwards."""
    common = bench.sites / "common_site_config.json"
    before = edit_json(common, scheduler_tick_interval=TICK)
    was_enabled = site.db.get_single_value("System Settings", "enable_scheduler")
    site.db.set_single_value("System Settings", "enable_scheduler", 1)
    site.db.sql("update `tabScheduled Job Type` set last_execution = %s", site.utils.now())
    # Someone used the site lately: Frappe 15 runs a site without recent Activity Log rows as
    # "dormant", its scheduled jobs once a day at most.
    site.get_doc({"doctype": "Activity Log", "subject": "frappe-celery bench tests"}).insert(
        ignore_permissions=True
    )
    site.db.commit()
    try:
        yield site
    finally:
        common.write_text(json.dumps(before, indent=1))
        site.db.set_single_value("System Settings", "enable_scheduler", was_enabled)
        site.db.commit()


@pytest.fixture
def admin_password() -> str:
    """Administrator's password, for the tests that log in to the Desk over HTTP."""
    password = os.environ.get("FRAPPE_ADMIN_PASSWORD")
    if not password:
        pytest.skip("FRAPPE_ADMIN_PASSWORD is not set: the test logs in as Administrator")
    return password


@pytest.fixture
def web(bench: Bench, tmp_path) -> Iterator[str]:
    """gunicorn serving the bench's sites on a loopback port, as supervisor runs it."""
    port = free_port()
    log = (tmp_path / "gunicorn.log").open("wb")
    process = subprocess.Popen(
        [
            str(bench.bin / "gunicorn"),
            "-b",
            f"127.0.0.1:{port}",
            "-w",
            "1",
            "-t",
            "120",
            "frappe.app:application",
            "--preload",
        ],
        cwd=bench.sites,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"

    def answers() -> bool:
        try:
            # Frappe picks the site by the Host header.
            ping = urllib.request.Request(f"{url}/api/method/ping", headers={"Host": bench.site})
            with urllib.request.urlopen(ping, timeout=5):
                return True
        except OSError:
            return process.poll() is not None

    try:
        wait_for(answers, timeout=60, interval=0.25)
        assert process.poll() is None, (tmp_path / "gunicorn.log").read_text()[-3000:]
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)
