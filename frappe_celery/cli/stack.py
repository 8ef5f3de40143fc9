"""Redis (embedded if none answers), a worker on every queue and beat: what `start` and `demo`
run, stopped cleanly together."""

from __future__ import annotations

import os
import time
from pathlib import Path
from types import TracebackType

import click

from frappe_celery.broker import signing
from frappe_celery.celery_app import reload_settings
from frappe_celery.cli.supervise import ManagedProcess, celery_command, child_env
from frappe_celery.config import Settings
from frappe_celery.connection import answers
from frappe_celery.ops.embedded import EmbeddedRedis
from frappe_celery.urls import redact_url

READY_TIMEOUT = 60.0
# The hooks `start` and `demo` use when FRAPPE_CELERY_HOOKS is not set.
DEFAULT_HOOKS = "hooks_example"

data_dir_option = click.option(
    "--data-dir",
    default=".frappe_celery",
    show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Where the embedded Redis keeps its data (used only if no broker answers).",
)


class Stack:
    """``with Stack(...) as stack:`` runs the parts; leaving the block stops them, Redis last."""

    def __init__(
        self,
        data_dir: Path,
        concurrency: int = 2,
        with_beat: bool = True,
        echo: bool = True,
        log_dir: Path | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.concurrency = concurrency
        self.with_beat = with_beat
        self.echo = echo
        # Given a folder, the worker's and beat's output goes to NAME.log there, not to the
        # terminal (the demo's table stays readable); the paths are printed.
        self.log_dir = log_dir
        self.embedded: EmbeddedRedis | None = None
        self.processes: list[ManagedProcess] = []

    def __enter__(self) -> Stack:
        try:
            self.settings = self._broker()
            self._start_worker()
            if self.with_beat:
                self._start_beat()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _signing_key(self) -> None:
        """Job messages are signed (signing.py). Without a configured key, `start` and `demo`
        use one of their own, kept in their data folder so that messages persisted by the
        embedded Redis still run after a restart. The key itself is never printed."""
        path = self.data_dir / "signing-key"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(signing.generate_key())
        os.environ[signing.KEY_ENV] = path.read_text().strip()
        click.echo(
            f"No signing key set: using the one in {path}; another process enqueueing here needs "
            f"it ({signing.KEY_ENV}=$(cat {path}))"
        )

    def _broker(self) -> Settings:
        settings = reload_settings()
        if settings.signing_key is None:
            self._signing_key()
            settings = reload_settings()
        if answers(settings.broker_url, settings.sentinel_master):
            click.echo(f"Using the broker at {redact_url(settings.broker_url)}")
            return settings
        self.embedded = EmbeddedRedis(self.data_dir / "redis", persist=True).start()
        os.environ["FRAPPE_CELERY_BROKER_URL"] = self.embedded.url
        click.echo(
            f"No broker at {redact_url(settings.broker_url)}: started an embedded Redis at "
            f"{self.embedded.url} (data in {self.data_dir / 'redis'})"
        )
        return reload_settings()

    def _env(self) -> dict[str, str]:
        return child_env({"FRAPPE_CELERY_BROKER_URL": self.settings.broker_url})

    def _log_path(self, name: str) -> Path | None:
        if self.log_dir is None:
            return None
        path = self.log_dir / f"{name}.log"
        click.echo(f"The {name}'s log: {path}")
        return path

    def _start_worker(self) -> None:
        worker = ManagedProcess(
            "worker",
            celery_command(
                "worker", "-Q", ",".join(self.settings.queues), "-c", str(self.concurrency),
                "--loglevel", "INFO", "-n", f"local-{os.getpid()}@%h",
                "--without-mingle", "--without-gossip",
            ),
            self._env(),
            echo=self.echo,
            log_path=self._log_path("worker"),
        )  # fmt: skip
        self.processes.append(worker)
        if not worker.wait_for_line(lambda line: " ready." in line, READY_TIMEOUT):
            raise click.ClickException(
                f"the Celery worker did not start; see {worker.where_output_is()}"
            )

    def _start_beat(self) -> None:
        beat = ManagedProcess(
            "beat", celery_command("beat", "--loglevel", "INFO"), self._env(), echo=self.echo,
            log_path=self._log_path("beat"),
        )  # fmt: skip
        self.processes.append(beat)
        if not beat.wait_for_line(lambda line: "beat: Starting" in line, READY_TIMEOUT):
            raise click.ClickException(f"celery beat did not start; see {beat.where_output_is()}")

    def wait(self) -> int:
        """Block until a part exits and return its exit code (Ctrl-C: KeyboardInterrupt)."""
        while True:
            for process in self.processes:
                code = process.process.poll()
                if code is not None:
                    click.echo(f"[{process.name}] exited with code {code}", err=True)
                    return code or 1
            if self.embedded and self.embedded.process and self.embedded.process.poll() is not None:
                click.echo("[redis] the embedded Redis exited", err=True)
                return 1
            time.sleep(0.5)

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.stop()
        self.processes.clear()
        if self.embedded:
            self.embedded.stop()
            self.embedded = None
