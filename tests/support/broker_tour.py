"""One end-to-end tour of a broker URL (test_tls: rediss://, test_sentinel: sentinel://):
enqueue, a real worker running jobs, a real beat firing a scheduled entry, and every
frappe-celery command that talks to the broker. Returns each output by name, so the caller can
check that the password appears in none of them."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import frappe_celery as frappe
from frappe_celery.connection import get_redis

from ..jobs.sched import TICKS
from .cli import run_cli
from .processes import Beat, Worker, wait_for
from .settings import settings_env

# tests.jobs.hooks_beat fires an entry every 2 s; tests.jobs.hooks_schedule_all has the "hourly"
# event that trigger-scheduler-event fires.
HOOKS = "tests.jobs.hooks,tests.jobs.hooks_beat,tests.jobs.hooks_schedule_all"
# Not consumed by the tour's worker: jobs wait there to be canceled, purged, or drained by
# `frappe-celery worker --burst`.
IDLE_QUEUE = "batch"

# The commands left out, and why: `start` and `demo` run an embedded Redis of their own
# when none answers (and `start` runs until Ctrl-C), `bench` edits a bench's files; none of
# them reads the broker beyond the check every command makes.


def tour(
    env: dict[str, str],
    start_worker: Callable[..., Worker],
    start_beat: Callable[..., Beat],
) -> dict[str, str]:
    env = {**env, "FRAPPE_CELERY_HOOKS": HOOKS}
    outputs: dict[str, str] = {}

    def cli(*command: str, expect: tuple[int, ...] = (0,), timeout: float = 60) -> str:
        result = run_cli(*command, timeout=timeout, **env)
        text = result.stdout + result.stderr
        outputs[" ".join(command)] = text
        assert result.returncode in expect, (command, result.returncode, text)
        return text

    with settings_env(**env):
        client: Any = get_redis()
        client.delete(TICKS)
        worker = start_worker("short,default,long", concurrency=1, **env)
        job = frappe.enqueue("tests.jobs.add", queue="short", a=2, b=3)
        wait_for(lambda: job.get_status() == "finished", 30)
        assert job.return_value() == 5
        failing = frappe.enqueue("tests.jobs.fail", queue="short", message="over the tour")
        wait_for(lambda: failing.get_status() == "failed", 30)

        beat = start_beat(**env)
        wait_for(lambda: beat.is_leader, 30)
        wait_for(lambda: client.llen(TICKS) > 0, 30)  # a scheduled entry fired and ran

        for command in (["status"], ["status", "--json"], ["jobs"], ["jobs", "--json"],
                        ["show-pending-jobs"], ["failed"], ["failed", "--json"],
                        ["scheduler", "status"], ["scheduler", "status", "--json"],
                        ["scheduler", "pause"], ["scheduler", "resume"],
                        ["scheduler", "disable"], ["scheduler", "enable"],
                        ["trigger-scheduler-event", "hourly"]):  # fmt: skip
            cli(*command)
        assert json.loads(outputs["status --json"])["broker"]
        assert failing.id in outputs["failed"]

        cli("retry", failing.id)
        wait_for(lambda: failing.get_status() == "failed", 30)  # it fails again, as it must
        cli("retry", "--all")

        queued = frappe.enqueue("tests.jobs.add", queue=IDLE_QUEUE, a=1, b=1)
        cli("cancel", queued.id)
        assert queued.get_status() == "canceled"
        frappe.enqueue("tests.jobs.add", queue=IDLE_QUEUE, a=1, b=1)
        cli("purge-jobs", "--queue", IDLE_QUEUE)

        key = "test:tour:stopped"
        client.delete(key)
        running = frappe.enqueue("tests.jobs.sleep_then_record", queue="short", key=key, seconds=60)
        wait_for(lambda: running.get_status() == "started", 30)
        cli("stop", running.id)
        assert running.get_status() == "stopped"

        drained = frappe.enqueue("tests.jobs.add", queue=IDLE_QUEUE, a=20, b=22)
        cli("worker", "--queue", IDLE_QUEUE, "--burst", timeout=120)
        assert drained.return_value() == 42

        cli("doctor", expect=(0, 1))  # 1: a problem found (e.g. the failed jobs)
        outputs["worker log"] = worker.output()
        outputs["beat log"] = beat.output()
    return outputs


def assert_never_shown(outputs: dict[str, str], secret: str) -> None:
    for name, text in outputs.items():
        assert secret not in text, f"the password appears in {name}"
