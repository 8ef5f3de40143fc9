"""Child processes the CLI runs (worker, beat), their output streamed with a name prefix."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import click


def celery_command(*args: str) -> list[str]:
    """``celery -A frappe_celery ...`` with this interpreter."""
    return [sys.executable, "-m", "celery", "-A", "frappe_celery", *args]


def child_env(extra: dict[str, str]) -> dict[str, str]:
    """The environment for children: ours plus ``extra``, with the current folder importable
    (hooks modules such as hooks_example live there)."""
    env = {**os.environ, **extra}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [os.getcwd(), env.get("PYTHONPATH")]))
    return env


class ManagedProcess:
    """A child whose output lines are kept for inspection and either echoed as ``[name] line``
    or, given ``log_path``, written to that file instead."""

    def __init__(
        self,
        name: str,
        argv: list[str],
        env: dict[str, str],
        echo: bool = True,
        err: bool = False,
        log_path: Path | None = None,
    ) -> None:
        self.name = name
        self.lines: list[str] = []
        self.echo = echo and log_path is None
        self.err = err
        self.log_path = log_path
        self._log = None
        if log_path is not None:
            log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log = log_path.open("w", buffering=1)  # line-buffered: readable while it runs
        self.process = subprocess.Popen(
            argv,
            env=env,
            cwd=Path.cwd(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
            start_new_session=True,
        )
        self._reader = threading.Thread(target=self._pump, daemon=True)
        self._reader.start()

    def _pump(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            line = line.rstrip("\n")
            self.lines.append(line)
            if self._log is not None:
                self._log.write(line + "\n")
            if self.echo:
                click.echo(f"[{self.name}] {line}", err=self.err)

    def wait_for_line(self, predicate: Callable[[str], bool], timeout: float) -> bool:
        """True once an output line satisfies ``predicate``; False on timeout or exit."""
        deadline = time.monotonic() + timeout
        seen = 0
        while time.monotonic() < deadline:
            while seen < len(self.lines):
                if predicate(self.lines[seen]):
                    return True
                seen += 1
            if self.process.poll() is not None:
                return False
            time.sleep(0.05)
        return False

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM (Celery's warm shutdown), then SIGKILL the group after ``timeout``."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(5)
        self._reader.join(2)
        if self._log is not None:
            self._log.close()

    def where_output_is(self) -> str:
        """Where to read this child's output: its log file, or the lines echoed above."""
        return f"its log, {self.log_path}" if self.log_path else "its output above"
