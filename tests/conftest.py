"""Shared real parts: a redis-server on a free loopback port and real celery workers.

Nothing here mocks frappe-celery: tests enqueue through the public API, real worker processes
run the jobs, and assertions read what the jobs and the package wrote to Redis.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest
import redis

from frappe_celery.broker.signing import generate_key

from .support.processes import ROOT, Beat, RedisServer, Worker, stop_all
from .support.settings import HOOKS_MODULE, TEST_CONFIG

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
    stop_all(started)


@pytest.fixture
def start_beat(worker_env: dict[str, str], tmp_path: Path) -> Iterator[Callable[..., Beat]]:
    """Start a real ``celery beat``; stopped after the test."""
    started: list[Beat] = []

    def start(**env: str) -> Beat:
        beat = Beat({**worker_env, **env}, tmp_path)
        started.append(beat)
        return beat

    yield start
    stop_all(started)


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
