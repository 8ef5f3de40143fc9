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
import queue
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from ..conftest import wait_for

EXAMPLE_APP = "celery_example"
PREPARE = "bash run.sh bench-test prepares one"


def _read_env_file(path: Path) -> dict[str, str]:
    values = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip() and not key.startswith("#"):
            values[key.strip()] = value.strip()
    return values


@dataclass(frozen=True)
class Bench:
    path: Path
    site: str
    cli: str

    @property
    def sites(self) -> Path:
        return self.path / "sites"

    @property
    def python(self) -> str:
        return str(self.path / "env" / "bin" / "python")

    @property
    def bin(self) -> Path:
        return self.path / "env" / "bin"

    def run(self, *args: str, timeout: float = 120, env: dict[str, str] | None = None) -> Any:
        """``bench --site SITE ARGS`` from the bench folder, as an operator types it."""
        return subprocess.run(
            [self.cli, "--site", self.site, *args],
            cwd=self.path,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
        )


def find_bench() -> tuple[Bench | None, str]:
    values = dict(os.environ)
    env_file = os.environ.get("FRAPPE_BENCH_ENV")
    if env_file:
        values = {**_read_env_file(Path(env_file)), **values}
    path = values.get("FRAPPE_BENCH")
    if not path:
        return (
            None,
            f"no Frappe bench: set FRAPPE_BENCH (and FRAPPE_SITE) or FRAPPE_BENCH_ENV; {PREPARE}",
        )
    bench_path = Path(path)
    site = values.get("FRAPPE_SITE") or "test.local"
    if not (bench_path / "sites" / site / "site_config.json").is_file():
        return None, f"no site {site!r} in the bench at {bench_path}"
    cli = values.get("FRAPPE_BENCH_CLI") or "bench"
    return Bench(bench_path, site, cli), ""


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


@contextmanager
def custom_queues(bench: Bench, *names: str, **settings: Any) -> Iterator[None]:
    """The bench's common_site_config.json with ``workers`` queues ``names`` added (timeout
    60 s) and top-level ``settings`` set, and this process's settings reloaded; the file put
    back afterwards."""
    import frappe_celery

    common = bench.sites / "common_site_config.json"
    before = common.read_text()
    config = json.loads(before)
    config.setdefault("workers", {}).update({name: {"timeout": 60} for name in names})
    config.update(settings)
    common.write_text(json.dumps(config, indent=1))
    frappe_celery.reload_settings()
    try:
        yield
    finally:
        common.write_text(before)
        frappe_celery.reload_settings()


def fresh(frappe: Any) -> Any:
    """End this connection's snapshot, so rows committed by workers are visible."""
    frappe.db.rollback()
    return frappe.db


class Worker:
    def __init__(self, process: subprocess.Popen[bytes], node: str, log: Path) -> None:
        self.process, self.node, self.log = process, node, log

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)


class HttpSink:
    """An HTTP endpoint on 127.0.0.1 that keeps every POST it is sent (path, body)."""

    def __init__(self) -> None:
        self.posts: queue.Queue[tuple[str, bytes]] = queue.Queue()
        posts = self.posts

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                posts.put((self.path, self.rfile.read(length)))
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="session")
def sentry_sink() -> Iterator[HttpSink]:
    """Where the session's worker sends Sentry events (its FRAPPE_SENTRY_DSN): nothing leaves
    the host."""
    sink = HttpSink()
    yield sink
    sink.close()


def start_celery_worker(
    bench: Bench,
    log: Path,
    queues: str = "short,default,long",
    extra_env: dict[str, str] | None = None,
) -> Worker:
    """``celery -A frappe_celery worker`` started from the bench's sites/, as bench starts
    workers: it reads the bench from there (no FRAPPE_CELERY_* settings in its environment)."""
    from frappe_celery.ops.monitor import get_workers

    node = f"bench-tests-{uuid.uuid4().hex[:8]}@%h"
    env = {k: v for k, v in os.environ.items() if not k.startswith("FRAPPE_CELERY_")}
    env.update(extra_env or {})
    handle = log.open("wb")
    process = subprocess.Popen(
        [
            str(bench.bin / "celery"),
            "-A",
            "frappe_celery",
            "worker",
            "-Q",
            queues,
            "-c",
            "2",
            "-n",
            node,
            "--loglevel",
            "INFO",
            "--without-mingle",
            "--without-gossip",
        ],
        cwd=bench.sites,
        env=env,
        stdout=handle,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    prefix = node.split("@")[0]
    try:
        wait_for(
            lambda: (
                process.poll() is not None
                or any(w["node"].startswith(prefix) for w in get_workers())
            ),
            timeout=60,
        )
    except AssertionError:
        process.kill()
        raise AssertionError(f"the worker did not come up: {log.read_text()[-3000:]}") from None
    if process.poll() is not None:
        raise AssertionError(f"the worker exited: {log.read_text()[-3000:]}")
    return Worker(process, prefix, log)


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


def wait_for_status(job_id: str, statuses: tuple[str, ...], timeout: float = 60) -> Any:
    import frappe_celery

    return wait_for(
        lambda: frappe_celery.get_job_status(job_id) in statuses and frappe_celery.get_job(job_id),
        timeout=timeout,
    )
