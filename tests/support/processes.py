"""The real processes of a test session: the session's redis-server, celery workers and beats
started as subprocesses with their output in log files, extra redis-servers and sentinels, and
the waits and process-tree helpers the tests use on them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import redis

from frappe_celery.ops.embedded import EmbeddedRedis

ROOT = Path(__file__).resolve().parents[2]


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


class RedisServer(EmbeddedRedis):
    """The session's redis-server (frappe-celery's embedded one), plus a client for tests."""

    def __init__(self, workdir: Path) -> None:
        super().__init__(workdir)
        self.start()
        self.client = redis.Redis.from_url(self.url, socket_timeout=5)


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
        stop_all([self])

    def _ask_to_stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)

    def _wait_stopped(self, deadline: float) -> None:
        if self.process.poll() is None:
            try:
                self.process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.kill()
        self.log.close()


def stop_all(processes: Sequence[CeleryProcess], timeout: float = 20) -> None:
    """Warm-shut down every process at once: a Celery worker takes about 2 s to stop (its pool's
    threads wind down), so a test's three workers stop in 2 s, not 6. SIGKILL after ``timeout``."""
    for process in processes:
        process._ask_to_stop()
    deadline = time.monotonic() + timeout
    for process in processes:
        process._wait_stopped(deadline)


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


def descendants(pid: int) -> set[int]:
    """Every process below ``pid`` (children, grandchildren...)."""
    listing = subprocess.run(
        ["ps", "-e", "-o", "pid=,ppid="], capture_output=True, text=True, timeout=10, check=True
    ).stdout
    children: dict[int, list[int]] = {}
    for line in listing.splitlines():
        child, parent = (int(part) for part in line.split())
        children.setdefault(parent, []).append(child)
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def alive(pid: int) -> bool:
    """Running (a zombie waiting to be reaped counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def lingering(pids: set[int], timeout: float) -> set[int]:
    """Those of ``pids`` still running after up to ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while (left := {pid for pid in pids if alive(pid)}) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


def stop_process(process: subprocess.Popen[Any], sig: int = signal.SIGTERM, timeout: float = 30):
    """Signal a process we started; SIGKILL its session if it does not exit in time."""
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)
