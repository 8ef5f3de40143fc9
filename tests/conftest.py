"""Shared real parts: a redis-server on a free loopback port and real celery workers.

Nothing here mocks frappe-celery: tests enqueue through the public API, real worker processes
run the jobs, and assertions read what the jobs and the package wrote to Redis.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest
import redis

from frappe_celery.broker.signing import generate_key
from frappe_celery.ops.embedded import EmbeddedRedis

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


def pings(client: redis.Redis) -> bool:
    """Whether the Redis behind ``client`` answers (False while it is still starting)."""
    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False


# What a unit test (``@pytest.mark.unit``: pure code, run first and alone by `bash run.sh unit`)
# may not use: anything that starts or reaches Redis or a process.
NOT_FOR_UNIT_TESTS = frozenset(
    {"redis_server", "r", "worker_env", "start_worker", "start_beat", "shared_worker",
     "restartable_redis"}
)  # fmt: skip


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("unit") is None:
            continue
        used = NOT_FOR_UNIT_TESTS.intersection(getattr(item, "fixturenames", ()))
        if used:
            raise pytest.UsageError(f"{item.nodeid} is marked unit but uses {sorted(used)}")


class RedisServer(EmbeddedRedis):
    """The session's redis-server (frappe-celery's embedded one), plus a client for tests."""

    def __init__(self, workdir: Path) -> None:
        super().__init__(workdir)
        self.start()
        self.client = redis.Redis.from_url(self.url, socket_timeout=5)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    config_path = tmp_path_factory.mktemp("config") / "common_site_config.json"
    config_path.write_text(json.dumps(TEST_CONFIG))
    os.environ.update(
        {
            "FRAPPE_CELERY_BROKER_URL": server.url,
            # Job messages are signed (signing.py): every process of the session shares one key.
            "FRAPPE_CELERY_SIGNING_KEY": generate_key(),
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
    from frappe_celery import get_queue_list
    from frappe_celery.broker import keys

    client = redis_server.client
    doomed = list(client.scan_iter(match=keys.PREFIX + "*")) + list(client.scan_iter("test:*"))
    for queue in get_queue_list():
        doomed += keys.queue_lists(queue)
    if doomed:
        client.delete(*doomed)
    yield client


class CeleryProcess:
    """A real ``celery -A frappe_celery ...`` process, its output in a log file."""

    ready_marker = ""

    def __init__(
        self,
        args: list[str],
        env: dict[str, str],
        logdir: Path,
        name: str,
        prefix: Sequence[str] = (),
    ) -> None:
        self.log_path = logdir / f"{name}.log"
        self.log = self.log_path.open("w")
        # ``prefix`` wraps the command (``ip netns exec NAME``: a worker in a network namespace).
        self.process = subprocess.Popen(
            [*prefix, sys.executable, "-m", "celery", "-A", "frappe_celery", *args],
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
            raise AssertionError(f"celery exited early:\n{self.output()}")
        return self.ready_marker in self.output()

    def kill(self) -> None:
        """SIGKILL the whole process group: a crash, not a shutdown."""
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()
        self.log.close()


class Worker(CeleryProcess):
    ready_marker = " ready."

    def __init__(
        self,
        queues: str,
        concurrency: int,
        env: dict[str, str],
        logdir: Path,
        prefix: Sequence[str] = (),
        pool: str = "prefork",
    ) -> None:
        self.name = f"test-{uuid.uuid4().hex[:8]}@%h"
        args = ["worker", "-Q", queues, "-c", str(concurrency), "-P", pool, "-n", self.name,
                "--loglevel", "INFO", "--without-mingle", "--without-gossip"]  # fmt: skip
        super().__init__(args, env, logdir, self.name.split("@")[0], prefix)


class Beat(CeleryProcess):
    ready_marker = "beat: Starting..."

    def __init__(self, env: dict[str, str], logdir: Path) -> None:
        super().__init__(
            ["beat", "--loglevel", "INFO"], env, logdir, f"beat-{uuid.uuid4().hex[:8]}"
        )

    @property
    def is_leader(self) -> bool:
        return "is now the leader" in self.output()


@pytest.fixture(scope="session")
def worker_env(redis_server: RedisServer) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


@pytest.fixture
def start_worker(worker_env: dict[str, str], tmp_path: Path) -> Iterator[Callable[..., Worker]]:
    """Start a dedicated worker (for tests that control when jobs run); stopped after the test."""
    started: list[Worker] = []

    def start(
        queues: str = "short,default,long",
        concurrency: int = 1,
        prefix: Sequence[str] = (),
        pool: str = "prefork",
        **env: str,
    ) -> Worker:
        worker = Worker(queues, concurrency, {**worker_env, **env}, tmp_path, prefix, pool)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()


@pytest.fixture
def start_beat(worker_env: dict[str, str], tmp_path: Path) -> Iterator[Callable[..., Beat]]:
    """Start a real ``celery beat``; stopped after the test."""
    started: list[Beat] = []

    def start(**env: str) -> Beat:
        beat = Beat({**worker_env, **env}, tmp_path)
        started.append(beat)
        return beat

    yield start
    for beat in started:
        beat.stop()


@pytest.fixture(scope="session")
def shared_worker(
    worker_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Worker]:
    """One worker on short,default,long for the tests that just need jobs to run. Its log is
    under pytest's base temp, which pytest prunes (a mkdtemp of its own was left in /tmp)."""
    logdir = tmp_path_factory.mktemp("shared-worker")
    worker = Worker("short,default,long", 2, worker_env, logdir)
    yield worker
    worker.stop()


class RedisProcess:
    """A redis-server (or sentinel) started by a test with its own arguments, its output in a
    log file, ready once ``client`` answers PING; stop() ends it (kill() crashes it)."""

    def __init__(
        self, binary: str, args: list[str], client: redis.Redis, logdir: Path, name: str
    ) -> None:
        self.client = client
        self.log_path = logdir / f"{name}.log"
        with self.log_path.open("w") as log:
            self.process = subprocess.Popen(
                [binary, *args], stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )

    def wait_ready(self, timeout: float = 15) -> RedisProcess:
        """Wait until it answers; AssertionError with its log if it exits or stays silent."""

        def answers() -> bool:
            if self.process.poll() is not None:
                raise AssertionError(f"redis-server exited:\n{self.output()}")
            try:
                return bool(self.client.ping())
            except (redis.ConnectionError, redis.TimeoutError):
                return False

        wait_for(answers, timeout)
        return self

    @property
    def port(self) -> int:
        return int(self.client.connection_pool.connection_kwargs["port"])

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def stop(self) -> None:
        self.client.close()
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()
