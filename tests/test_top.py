"""`frappe-celery top`: `--once` for a known state (pending jobs of two sites, a running job with
its progress, a failure, a paused site), and the live view in a real terminal (tmux): it
refreshes in place, its keys filter by queue and site, and q quits."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid

import pytest

import frappe_celery as frappe
from frappe_celery.broker.workers import read_workers
from frappe_celery.scheduler import state

from .support.cli import CLI, cli_env, ok
from .support.processes import ROOT, wait_for
from .support.settings import enqueuing_as, settings_env


@pytest.fixture
def known_state(r, shared_worker, start_beat):
    """3 jobs of test.site and 2 of other.site waiting in batch; one job running with its
    progress; one failed; a beat leading, test.site paused."""
    for i in range(3):
        frappe.enqueue("tests.jobs.add", queue="batch", a=i, b=0)
    with enqueuing_as(site="other.site"):
        for i in range(2):
            frappe.enqueue("tests.jobs.add", queue="batch", a=i, b=0)
    failed = frappe.enqueue("tests.jobs.fail", queue="short", message="top saw it")
    wait_for(lambda: failed.get_status() == "failed", 30)
    running = frappe.enqueue(
        "tests.jobs.cli.progress_then_wait", queue="short", key="test:top:run",
        release_key="test:top:release", percent=40, message="importing rows",
        via="set_progress",
    )  # fmt: skip
    wait_for(lambda: r.lrange("test:top:run", 0, -1), 30)
    state.set_switch("paused", True, ["test.site"])
    wait_for(read_workers, 10)  # the `r` fixture cleared the heartbeats: the next one
    start_beat(FRAPPE_CELERY_HOOKS="tests.jobs.hooks,tests.jobs.hooks_beat")
    wait_for(lambda: state.read_passes().get("test.site", None) is not None
             and state.read_passes()["test.site"].state == "paused", 30)  # fmt: skip
    try:
        yield running
    finally:
        state.set_switch("paused", False, ["test.site"])
        r.set("test:top:release", 1)
        wait_for(lambda: running.get_status() == "finished", 30)


def line_with(output: str, *words: str) -> str:
    found = [line for line in output.splitlines() if all(word in line for word in words)]
    assert found, f"no line with {words} in:\n{output}"
    return found[0]


def test_once_prints_queues_workers_progress_failures_and_the_scheduler(known_state):
    running = known_state
    output = ok("top", "--once").output
    batch = line_with(output, "batch").split()
    # queue, pending, oldest, running, stuck, retrying, failed kept, done/min, workers, slots
    assert batch[0] == "batch" and batch[1] == "5" and batch[8] == "0"
    short = line_with(output, " short ").split()
    assert short[3] == "1" and short[6] == "1"  # running; the failure kept
    assert "importing rows" in line_with(output, running.id)
    assert "40%" in line_with(output, running.id)
    assert "top saw it" in line_with(output, "tests.jobs.fail")
    assert "paused" in line_with(output.split("Scheduler")[1], "test.site")

    with settings_env(FRAPPE_CELERY_SITES="test.site,other.site"):  # --site takes a known one
        only_other = ok("top", "--once", "--site", "other.site").output
    assert line_with(only_other, "batch").split()[1] == "2"
    only_short = ok("top", "--once", "--queue", "short").output
    assert "batch" not in only_short.split("Workers")[0]


def test_an_unknown_queue_is_refused_naming_it(r):
    result = subprocess.run([CLI, "top", "--once", "--queue", "nope"], cwd=ROOT, env=cli_env(),
                            capture_output=True, text=True, timeout=60)  # fmt: skip
    assert result.returncode == 2 and "nope" in result.stderr


def test_the_live_view_refreshes_in_place_and_its_keys_filter_and_quit(known_state, tmp_path):
    if shutil.which("tmux") is None:
        if os.environ.get("CI"):
            pytest.fail("tmux is not installed (.ci/run installs it)")
        pytest.skip("tmux is not installed (apt-get install tmux)")
    session = f"top-{uuid.uuid4().hex[:8]}"
    env = cli_env()
    wanted = ("FRAPPE_CELERY_", "PYTHONPATH")
    exports = " ".join(f"{k}='{v}'" for k, v in env.items() if k.startswith(wanted))
    command = f"cd {ROOT} && env {exports} {CLI} top --interval 1; echo top-exited; sleep 30"
    subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", "160", "-y", "60",
                    command], check=True, timeout=10)  # fmt: skip

    def screen() -> str:
        return subprocess.run(["tmux", "capture-pane", "-p", "-t", session], capture_output=True,
                              text=True, timeout=10).stdout  # fmt: skip

    def keys(key: str) -> None:
        subprocess.run(["tmux", "send-keys", "-t", session, key], check=True, timeout=10)

    try:
        wait_for(lambda: "Queues" in screen() and "batch" in screen(), 30)
        first = screen()
        assert first.count("frappe-celery top") == 1  # drawn in place, not appended
        clock = line_with(first, "frappe-celery top").split()[2]
        wait_for(lambda: line_with(screen(), "frappe-celery top").split()[2] != clock, 10)
        assert screen().count("frappe-celery top") == 1

        keys("s")  # the first site: other.site
        wait_for(lambda: "site: other.site" in screen(), 10)
        assert line_with(screen(), "batch").split()[1] == "2"
        keys("a")
        wait_for(lambda: "queue: all  site: all" in screen(), 10)
        keys("u")  # the first queue: short
        wait_for(lambda: "queue: short" in screen(), 10)
        keys("q")
        wait_for(lambda: "top-exited" in screen(), 10)
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], timeout=10)
        time.sleep(0.1)
