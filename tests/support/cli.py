"""Running the `frappe-celery` command: in this process through click's CliRunner
(`invoke`, `ok`), or as the installed console script in a subprocess (`run_cli`)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner, Result

from frappe_celery.cli import main

from .processes import ROOT


def console_script() -> str:
    script = Path(sys.executable).parent / "frappe-celery"
    found = str(script) if script.exists() else shutil.which("frappe-celery")
    assert found, "the frappe-celery console script is not installed"
    return found


CLI = console_script()


def invoke(*args: str, env: dict[str, str] | None = None) -> Result:
    """Run one command in this process; an unexpected exception fails the test with its
    traceback instead of turning into exit code 1."""
    return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)


def ok(*args: str, env: dict[str, str] | None = None) -> Result:
    result = invoke(*args, env=env)
    assert result.exit_code == 0, f"{args} exited {result.exit_code}:\n{result.output}"
    return result


def cli_env(**extra: str) -> dict[str, str]:
    """The environment for the console script: the session's (broker, config, site...), with
    the project importable (tests.jobs, the hooks modules)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.update(extra)
    return env


def run_cli(*args: str, timeout: float = 60, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CLI, *args], cwd=ROOT, env=cli_env(**env), capture_output=True, text=True,
        timeout=timeout,
    )  # fmt: skip
