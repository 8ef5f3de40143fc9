"""README's two first commands, run as written: the quickstart block outside a bench, and
``frappe-celery demo`` (the README's ``bash run.sh demo``) on a machine with no Redis running."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from frappe_celery.ops.embedded import EmbeddedRedis, free_port

from .support.processes import ROOT

QUICKSTART = re.compile(r"<!-- quickstart:.*?-->\n```bash\n(.*?)```\n<!-- /quickstart -->", re.S)


def clean_env(**extra: str) -> dict[str, str]:
    """A user's shell: this interpreter's bin first on PATH, no FRAPPE_CELERY_* of the session."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FRAPPE_CELERY_")}
    env.pop("PYTHONPATH", None)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return {**env, **extra}


def test_the_readme_quickstart_runs_as_written(tmp_path):
    block = QUICKSTART.search((ROOT / "README.md").read_text())
    assert block is not None, "README.md has no quickstart block"
    lines = block.group(1).splitlines()
    assert lines[0].startswith("pip install frappe-celery")  # installed here already
    script = "\n".join(["set -euo pipefail", *lines[1:]])
    # A Redis of its own, named by FRAPPE_CELERY_BROKER_URL as the quickstart's first comment
    # tells a user whose Redis is not at 127.0.0.1:6379 (the session's has the test workers on
    # the same queues, which do not allow myapp).
    redis_server = EmbeddedRedis(tmp_path / "redis").start()
    shell = subprocess.Popen(
        ["bash", "-c", script], cwd=tmp_path,
        env=clean_env(FRAPPE_CELERY_BROKER_URL=redis_server.url),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )  # fmt: skip
    try:
        output, _ = shell.communicate(timeout=120)
    finally:
        # The worker it started in the background is in the shell's process group.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(shell.pid, signal.SIGTERM)
        redis_server.stop()
    log = (tmp_path / "worker.log").read_text() if (tmp_path / "worker.log").exists() else ""
    assert shell.returncode == 0, f"{output}\nworker.log:\n{log[-3000:]}"
    job_id, value = output.split()
    assert value == "5" and job_id


@pytest.mark.timeout(300)
def test_the_demo_starts_its_own_redis_and_prints_a_clean_table(tmp_path):
    """No broker answers at the configured URL: the demo starts an embedded Redis, a worker and
    beat, and every example job ends as its table says. The worker's and beat's output (the
    slow job's expected soft-time-limit traceback among it) goes to log files it names."""
    data = tmp_path / "data"
    nothing_there = f"redis://127.0.0.1:{free_port()}/0"
    cli = Path(sys.executable).parent / "frappe-celery"
    demo = subprocess.run(
        [str(cli), "demo", "--data-dir", str(data)], cwd=ROOT, timeout=240,
        env=clean_env(FRAPPE_CELERY_BROKER_URL=nothing_there), capture_output=True, text=True,
    )  # fmt: skip
    assert demo.returncode == 0, demo.stdout + demo.stderr
    assert "started an embedded Redis" in demo.stdout
    assert "Every example job ended as expected." in demo.stdout
    assert "Traceback" not in demo.stdout + demo.stderr
    assert "[worker]" not in demo.stdout  # no process output interleaved with the table
    logs = {name: data / "logs" / f"{name}.log" for name in ("worker", "beat")}
    for name, path in logs.items():
        assert f"The {name}'s log: {path}" in demo.stdout
    assert "SoftTimeLimitExceeded" in logs["worker"].read_text()
    assert "beat: Starting" in logs["beat"].read_text()
