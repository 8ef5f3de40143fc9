"""Sentinel failover under load, measured (`bash run.sh failover`; not in the default run: it
kills masters and takes a few minutes). Prints the figures RELIABILITY.md reports:

* seconds from the master's death until enqueues succeed again;
* acknowledged enqueues lost: enqueue returned a handle, but the promoted replica never got the
  job (asynchronous replication), so it never runs;
* the same with ``enqueue_wait_replicas = 1`` (WAIT 1 after each enqueue), which closes that gap;
* enqueues per second with and without the WAIT (medians of several runs).
"""

from __future__ import annotations

import statistics
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import frappe_celery as frappe
from frappe_celery.broker import keys
from frappe_celery.connection import make_client
from frappe_celery.errors import FrappeCeleryError

from .support.processes import wait_for
from .support.sentinel import MASTER_NAME, SentinelCluster, sentinel_env
from .support.settings import config_env, settings_env

pytestmark = pytest.mark.failover

THREADS = 4
BEFORE_KILL = 3.0
# Goal: enqueues resume within 15 s; give up on the run well after that.
AFTER_KILL_LIMIT = 30.0
RESUMED_FOR = 2.0
SPEED_RUNS = 5
SPEED_SECONDS = 2.0


class Load:
    """THREADS threads enqueueing as fast as they can; each attempt's time, outcome, job id."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.attempts: list[tuple[float, bool, str | None]] = []
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._run) for _ in range(THREADS)]

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                job = frappe.enqueue("tests.jobs.add", queue="batch", a=1, b=2)
                outcome = (time.monotonic(), True, job.id if job else None)
            except FrappeCeleryError:
                outcome = (time.monotonic(), False, None)
                time.sleep(0.01)  # the broker is down: do not spin
            with self.lock:
                self.attempts.append(outcome)

    def __enter__(self) -> Load:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(30)

    def ok_since(self, moment: float) -> list[float]:
        """Successes after the first failure past ``moment`` (calls in flight when the master
        died may still succeed just after it)."""
        with self.lock:
            failures = [t for t, ok, _ in self.attempts if not ok and t > moment]
            if not failures:
                return []
            return [t for t, ok, _ in self.attempts if ok and t > failures[0]]


def failover_run(tmp_path: Path, wait_replicas: int) -> dict[str, Any]:
    # Two replicas: after the failover the new master still has one, or WAIT 1 could never
    # succeed again (with one replica, enqueue_wait_replicas=1 stops enqueues until the old
    # master comes back as a replica).
    name = f"cluster-{wait_replicas}-{time.monotonic_ns()}"
    cluster = SentinelCluster(tmp_path / name, down_after_ms=1000, replicas=2)
    try:
        env = sentinel_env(cluster) | config_env(tmp_path, enqueue_wait_replicas=wait_replicas)
        with settings_env(**env), Load() as load:
            time.sleep(BEFORE_KILL)
            killed_at = time.monotonic()
            cluster.master.kill()
            resumed = wait_for(
                lambda: (ok := load.ok_since(killed_at)) and ok[-1] - ok[0] > RESUMED_FOR and ok,
                AFTER_KILL_LIMIT,
                interval=0.1,
            )
        assert isinstance(resumed, list)
        acked = [job_id for _, ok, job_id in load.attempts if ok and job_id]
        new_master = make_client(cluster.url, MASTER_NAME)
        pipe = new_master.pipeline(transaction=False)
        for job_id in acked:
            pipe.exists(keys.job(job_id))
        lost = sum(1 for present in pipe.execute() if not present)
        new_master.close()
        return {
            "wait_replicas": wait_replicas,
            "resumed_after_s": round(resumed[0] - killed_at, 2),
            "acknowledged": len(acked),
            "lost": lost,
            "failed_attempts": sum(1 for _, ok, _ in load.attempts if not ok),
        }
    finally:
        cluster.stop()


def enqueue_speed(tmp_path: Path, cluster: SentinelCluster, wait_replicas: int) -> float:
    env = sentinel_env(cluster) | config_env(tmp_path, enqueue_wait_replicas=wait_replicas)
    with settings_env(**env):
        frappe.enqueue("tests.jobs.add", queue="batch", a=0, b=0)  # connect, load the script
        count = 0
        deadline = time.monotonic() + SPEED_SECONDS
        while time.monotonic() < deadline:
            frappe.enqueue("tests.jobs.add", queue="batch", a=1, b=2)
            count += 1
    return count / SPEED_SECONDS


def test_failover_under_load_figures(tmp_path, redis_server):
    results = [failover_run(tmp_path, wait) for wait in (0, 1, 0, 1)]
    cluster = SentinelCluster(tmp_path / "speed")
    try:
        speeds: dict[int, list[float]] = {0: [], 1: []}
        for _ in range(SPEED_RUNS):
            for wait in (0, 1):
                speeds[wait].append(enqueue_speed(tmp_path, cluster, wait))
    finally:
        cluster.stop()
    print("\nfailover runs (kill -9 of the master under", THREADS, "enqueue threads):")
    for result in results:
        print("  ", result)
    for wait, values in speeds.items():
        print(
            f"enqueue_wait_replicas={wait}: median {statistics.median(values):.0f} enqueues/s "
            f"(one thread; runs: {', '.join(f'{v:.0f}' for v in values)})"
        )
    for result in results:
        assert result["resumed_after_s"] < 15, result
        if result["wait_replicas"]:
            assert result["lost"] == 0, result
