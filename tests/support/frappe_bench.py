"""A real Frappe bench as the bench tier uses it: where it is (FRAPPE_BENCH or FRAPPE_BENCH_ENV),
commands typed in it, celery workers and beats started in its sites/ as bench starts them, its
config edited for one test, waits on its jobs, and a message no enqueue validation has seen.

Frappe itself is imported only inside the functions that take a connected ``frappe`` module:
importing this module needs no bench."""

from __future__ import annotations

import importlib
import json
import os
import queue
import signal
import subprocess
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import frappe_celery
from frappe_celery.broker import signing, wire
from frappe_celery.caller import publish

from .processes import wait_for

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


@contextmanager
def custom_queues(bench: Bench, *names: str, **settings: Any) -> Iterator[None]:
    """The bench's common_site_config.json with ``workers`` queues ``names`` added (timeout
    60 s) and top-level ``settings`` set, and this process's settings reloaded; the file put
    back afterwards."""
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


def wait_for_status(job_id: str, statuses: tuple[str, ...], timeout: float = 60) -> Any:
    return wait_for(
        lambda: frappe_celery.get_job_status(job_id) in statuses and frappe_celery.get_job(job_id),
        timeout=timeout,
    )


DAILY = "celery_example.tasks.daily"


# Frappe's scheduler tick for these tests (common_site_config's scheduler_tick_interval).
TICK = 2


def edit_json(path: Path, **changes: Any) -> dict[str, Any]:
    """Set (or, with None, remove) keys of a JSON config file; returns the file as it was."""
    before = json.loads(path.read_text())
    after = {**before, **changes}
    for key, value in changes.items():
        if value is None:
            after.pop(key, None)
    path.write_text(json.dumps(after, indent=1))
    return before


class Beat(Worker):
    """``celery -A frappe_celery beat`` started in the bench's sites/, as the Procfile runs it."""

    def __init__(self, bench: Bench, log: Path) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("FRAPPE_CELERY_")}
        process = subprocess.Popen(
            [str(bench.bin / "celery"), "-A", "frappe_celery", "beat", "--loglevel", "INFO"],
            cwd=bench.sites, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        super().__init__(process, "beat", log)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def passes(self) -> int:
        """How many scheduler passes this beat finished (it logs each)."""
        return self.output().count("scheduler: pass done")


def make_due(frappe: Any, method: str, days_ago: int = 2) -> tuple[str, str]:
    """Set the job type's last run ``days_ago`` back; returns its name and the time now."""
    name = frappe.db.get_value("Scheduled Job Type", {"method": method})
    now = frappe.utils.now()
    last = frappe.utils.add_days(now, -days_ago)
    frappe.db.set_value("Scheduled Job Type", name, "last_execution", last, update_modified=False)
    frappe.db.commit()
    return name, now


def logs_since(frappe: Any, job_type: str, since: str) -> list[str]:
    return fresh(frappe).get_all(  # type: ignore[no-any-return]
        "Scheduled Job Log",
        filters={"scheduled_job_type": job_type, "creation": [">=", since]},
        pluck="status",
    )


def publish_unvalidated(
    method: str, kwargs: dict[str, Any], signed: bool = True
) -> frappe_celery.Job:
    """What anyone with write access to the queue Redis and the bench's signing key can do: a
    well-formed message that no enqueue validation has seen (without the key: ``signed=False``,
    the same message without its signature)."""
    enqueue_module = importlib.import_module("frappe_celery.caller.enqueue")
    payload = enqueue_module.make_payload(
        method, "short", None, site=enqueue_module.current_site(), user="Administrator",
        kwargs=kwargs,
    )  # fmt: skip
    job_id = frappe_celery.create_job_id()
    publication = publish.prepare(
        job_id,
        payload,
        wire.encode_body(payload, kwargs),
        at_front=False,
        deduplicate=False,
        at_front_when_starved=False,
    )
    if not signed:
        envelope = json.loads(publication.args[3])  # enqueue.lua's message argument
        del envelope["headers"][signing.SIGNATURE_HEADER]
        publication.args[3] = json.dumps(envelope)
    job = publish.publish(publication)
    assert job is not None
    return job
