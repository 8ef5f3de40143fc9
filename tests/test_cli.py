"""The `frappe-celery` command: every command through click's CliRunner (in this process, on the
session's real Redis and real workers), and `status`, `worker` and `start` as real processes of
the installed console script.

CliRunner runs in this process, so a test that changes the environment the commands see (a
broker URL, the hooks modules, the sites) sets it in os.environ and reloads the package's
settings (`settings_env`), and restores both afterwards.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
import redis

import frappe_celery as frappe
from frappe_celery.broker import keys
from frappe_celery.broker.workers import read_workers
from frappe_celery.connection import answers
from frappe_celery.ops import monitor
from frappe_celery.ops.admin import pending_count, scheduler_entries
from frappe_celery.ops.embedded import free_port
from frappe_celery.scheduler import state

from .jobs.sched import TICKS
from .support.broker_state import redis_snapshot
from .support.cli import CLI, cli_env, invoke, ok, run_cli
from .support.processes import ROOT, descendants, lingering, stop_process, wait_for
from .support.settings import enqueuing_as, settings_env

SITE = "test.site"
OTHER_SITE = "other.site"
# tests.jobs.hooks_beat: a cron entry every 2 s (tests.jobs.sched.tick, default queue);
# tests.jobs.cli: a daily_long entry that fails (tests.jobs.cli.scheduled_fail, long queue).
SCHED_HOOKS = "tests.jobs.hooks,tests.jobs.hooks_beat,tests.jobs.cli"
TICK = "tests.jobs.sched.tick"
SCHEDULED_FAIL = "tests.jobs.cli.scheduled_fail"
FINAL = ("finished", "failed", "canceled", "stopped")


# -- helpers --------------------------------------------------------------------------------------


def as_other_site() -> AbstractContextManager[None]:
    """Enqueue as if from another site (the job context names the site)."""
    return enqueuing_as(site=OTHER_SITE)


def table_rows(output: str, header_start: str) -> list[list[str]]:
    """The rows of the tabulate table whose header line starts with ``header_start``."""
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header_start))
    rows = []
    for line in lines[start + 2 :]:
        # A blank or indented line ends it (`status` prints "  most overdue: ..." after one).
        if not line.strip() or line.startswith(" "):
            break
        rows.append(re.split(r"\s{2,}", line.strip()))
    return rows


def jobs_by_id(output: str) -> dict[str, list[str]]:
    """`jobs` output: job id -> [site, queue, status, method, id, enqueued, age, progress...]."""
    return {row[4]: row for row in table_rows(output, "site ")}


def status_of(job_id: str) -> str | None:
    status = frappe.get_job_status(job_id)
    return str(status) if status else None


def local_time(epoch: float | str) -> str:
    return datetime.fromtimestamp(float(epoch)).strftime("%Y-%m-%d %H:%M:%S")


def node_of(worker: Any) -> str:
    return str(worker.name).replace("%h", socket.gethostname())


def heartbeat(predicate: Callable[[dict[str, Any]], bool], timeout: float = 20) -> dict[str, Any]:
    """Wait for an online worker heartbeat matching ``predicate`` (written every 5 s; the `r`
    fixture clears them before each test)."""
    found = wait_for(lambda: next((w for w in read_workers() if predicate(w)), None), timeout)
    assert isinstance(found, dict)
    return found


# -- fixtures -------------------------------------------------------------------------------------


@pytest.fixture
def sched_hooks(r: redis.Redis) -> Iterator[str]:
    """scheduler_events from tests.jobs.hooks_beat and tests.jobs.cli, for this process's
    commands."""
    with settings_env(FRAPPE_CELERY_HOOKS=SCHED_HOOKS):
        yield SCHED_HOOKS


@pytest.fixture
def two_sites(r: redis.Redis) -> Iterator[None]:
    """test.site (the default site) and other.site are the configured sites."""
    with settings_env(FRAPPE_CELERY_SITES=f"{SITE},{OTHER_SITE}"):
        yield


@pytest.fixture
def blocking(r: redis.Redis) -> Iterator[Callable[..., tuple[Any, str, str]]]:
    """Enqueue jobs that run until the test sets their release key; after the test they are
    released and waited for, so no worker slot stays busy."""
    made: list[tuple[Any, str]] = []

    def enqueue(job_id: str, method: str = "tests.jobs.wait_for_release", **kwargs: Any):
        key, release = f"test:cli:{job_id}", f"test:cli:{job_id}:release"
        job = frappe.enqueue(
            method, queue="short", job_id=job_id, key=key, release_key=release, **kwargs
        )
        made.append((job, release))
        return job, key, release

    yield enqueue
    for _, release in made:
        r.set(release, 1)
    for job, _ in made:
        wait_for(lambda job=job: job.get_status() in FINAL, 30)


def started(r: redis.Redis, key: str) -> bool:
    return b'"started"' in r.lrange(key, 0, -1)


# -- every command is there ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "command",
    [
        ["status"], ["jobs"], ["show-pending-jobs"], ["failed"], ["retry"], ["purge-jobs"],
        ["stop"], ["cancel"], ["trigger-scheduler-event"], ["scheduler"], ["scheduler", "enable"],
        ["scheduler", "disable"], ["scheduler", "pause"], ["scheduler", "resume"],
        ["scheduler", "status"], ["doctor"], ["worker"], ["start"], ["demo"],
    ],
    ids=" ".join,
)  # fmt: skip
def test_every_command_is_registered_and_has_help(command):
    result = ok(*command, "--help")
    assert result.output.startswith(f"Usage: main {' '.join(command)}")


# -- status ---------------------------------------------------------------------------------------


@pytest.fixture
def password_url(r: redis.Redis, redis_server: Any) -> Iterator[str]:
    """A Redis ACL user with a password: a broker URL with credentials that really works."""
    r.execute_command("ACL", "SETUSER", "cliuser", "on", ">secret", "~*", "&*", "+@all")
    try:
        yield f"redis://cliuser:secret@127.0.0.1:{redis_server.port}/0"
    finally:
        r.execute_command("ACL", "DELUSER", "cliuser")


def test_status_shows_the_broker_with_its_password_hidden_and_the_redis_version(
    r, redis_server, password_url
):
    version = r.info()["redis_version"]
    shown = f"redis://cliuser:***@127.0.0.1:{redis_server.port}/0"
    with settings_env(FRAPPE_CELERY_BROKER_URL=password_url):
        text = ok("status", env={"FRAPPE_CELERY_BROKER_URL": password_url}).output
        data = json.loads(
            ok("status", "--json", env={"FRAPPE_CELERY_BROKER_URL": password_url}).output
        )
    assert text.startswith(f"Broker  {shown}  (Redis {version}, ")
    assert data["broker"]["url"] == shown
    assert data["broker"]["redis_version"] == version
    assert "secret" not in text + json.dumps(data)

    # The console script, as a user runs it.
    done = run_cli("status", FRAPPE_CELERY_BROKER_URL=password_url)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith(f"Broker  {shown}  (Redis {version}, ")
    assert "secret" not in done.stdout + done.stderr
    done = run_cli("status", "--json", FRAPPE_CELERY_BROKER_URL=password_url)
    assert done.returncode == 0, done.stdout + done.stderr
    broker = json.loads(done.stdout)["broker"]
    assert (broker["url"], broker["redis_version"]) == (shown, version)


def test_status_counts_pending_jobs_over_every_priority_list_and_the_oldest_ones_age(r):
    before_first = time.time()
    for n in range(3):
        frappe.enqueue("tests.jobs.add", queue="reports", a=n, b=n)
    time.sleep(1.2)  # the oldest job is the first one: more than a second old
    for n in range(2):
        frappe.enqueue("tests.jobs.add", queue="reports", at_front=True, a=n, b=n)
    frappe.enqueue("tests.jobs.add", queue="batch", a=1, b=1)

    data = json.loads(ok("status", "--json").output)
    queues = {q["name"]: q for q in data["queues"]}
    assert list(queues) == ["short", "default", "long", "reports", "batch"]
    reports = queues["reports"]
    assert reports["pending"] == 5
    assert reports["pending_by_priority"] == {"0": 2, "3": 3, "6": 0, "9": 0}
    assert 1.0 <= reports["oldest_pending_age"] <= time.time() - before_first
    assert queues["batch"]["pending"] == 1
    assert queues["batch"]["oldest_pending_age"] < reports["oldest_pending_age"] - 1.0
    assert queues["long"]["pending"] == 0
    assert queues["long"]["oldest_pending_age"] is None

    rows = {row[0]: row for row in table_rows(ok("status").output, "queue ")}
    _, pending, by_priority, *_, oldest = rows["reports"]
    assert (pending, by_priority) == ("5", "0:2 3:3 6:0 9:0")
    assert re.fullmatch(r"\d+s", oldest) and int(oldest[:-1]) >= 1
    assert rows["long"][-1] == "-"


def test_status_shows_started_finished_failed_counts_workers_and_running_jobs(
    r, shared_worker, blocking
):
    done = frappe.enqueue("tests.jobs.add", queue="short", a=1, b=2)
    failed = frappe.enqueue("tests.jobs.fail", queue="short", message="status-boom")
    wait_for(lambda: done.get_status() == "finished" and failed.get_status() == "failed", 30)
    running, key, _ = blocking(
        "status-running", method="tests.jobs.cli.progress_then_wait", percent=40,
        message="crunching", via="set_progress",
    )  # fmt: skip
    wait_for(lambda: started(r, key), 30)
    node = node_of(shared_worker)
    heartbeat(lambda w: w["node"] == node)

    data = json.loads(ok("status", "--json").output)
    short = next(q for q in data["queues"] if q["name"] == "short")
    assert (short["started"], short["finished"], short["failed"]) == (1, 1, 1)
    worker = next(w for w in data["workers"] if w["node"] == node)
    assert worker["queues"] == ["short", "default", "long"]
    assert worker["concurrency"] == 2
    assert worker["running"] == [running.id]
    assert time.time() - worker["last_heartbeat"] < 30
    assert [(j["id"], j["progress"]) for j in data["running"]] == [(running.id, "40% crunching")]

    text = ok("status").output
    assert re.search(r"Workers online: [1-9]", text)
    row = next(row for row in table_rows(text, "worker ") if row[0] == node)
    assert row[1:4] == ["short,default,long", "2", "1"]
    assert re.fullmatch(r"\d+s", row[4])
    # queue, pending, by priority, started, scheduled (retry countdowns), finished, failed
    short_row = ["short", "0", "0:0 3:0 6:0 9:0", "1", "0", "1", "1"]
    assert table_rows(text, "queue ")[0][:7] == short_row
    running_rows = table_rows(text.split("Running jobs:", 1)[1], "queue ")
    assert running_rows[0][:3] == ["short", "tests.jobs.cli.progress_then_wait", running.id]
    assert running_rows[0][-1] == "40% crunching"


def test_status_shows_the_scheduler_switches_next_due_most_overdue_and_failing_entries(
    r, shared_worker, sched_hooks
):
    entries = {entry.method: entry for entry in scheduler_entries()}
    tick, failing = entries[TICK], entries[SCHEDULED_FAIL]
    # The cron entry last ran an hour ago: it is overdue (no beat is running to fire it).
    last = time.time() - 3600
    r.hset(keys.SCHEDULER_LAST_RUNS, state.last_run_field(tick.site, tick.name), last)
    # The daily_long entry's last run failed.
    ok("trigger-scheduler-event", "daily_long")
    wait_for(lambda: status_of(failing.job_id) == "failed", 30)
    ok("scheduler", "pause", "--site", SITE)

    scheduler = json.loads(ok("status", "--json").output)["scheduler"]
    assert scheduler["leader"] is None
    assert scheduler["sites"] == {SITE: ["paused"]}
    assert scheduler["entries"] == 2
    midnight = datetime.now(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
    assert [e["method"] for e in scheduler["next"]] == [TICK, SCHEDULED_FAIL]
    # Every 2 s after its last run; the daily one at the next midnight (UTC).
    assert last < scheduler["next"][0]["next_run"] <= last + 2
    assert scheduler["next"][1]["next_run"] == (midnight + timedelta(days=1)).timestamp()
    assert scheduler["most_overdue"]["method"] == TICK
    assert scheduler["most_overdue"]["event"] == "cron"
    assert [(e["method"], e["event"], e["last_status"]) for e in scheduler["failing"]] == [
        (SCHEDULED_FAIL, "daily_long", "failed")
    ]

    text = ok("status").output
    assert f"Scheduler  leader: none running  sites: {SITE}: paused" in text
    assert "2 entries; next due:" in text
    next_rows = table_rows(text, "site ")
    assert [row[:3] for row in next_rows] == [
        [SITE, "cron", TICK],
        [SITE, "daily_long", SCHEDULED_FAIL],
    ]
    assert next_rows[1][-1] == "failed"
    assert re.search(
        rf"most overdue: {re.escape(TICK)} \(cron, {SITE}\), due (59m \d\ds|1h 00m) ago", text
    )
    assert f"last run failed: {SCHEDULED_FAIL} (daily_long, {SITE})" in text


def test_status_watch_refreshes_until_interrupted(r, tmp_path):
    out = tmp_path / "watch.out"
    with out.open("w") as handle:
        process = subprocess.Popen(
            [CLI, "status", "--watch", "0.5"], cwd=ROOT, env=cli_env(), stdout=handle,
            stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        wait_for(
            lambda: out.read_text().count("Workers online:") >= 2 or process.poll() is not None,
            30,
        )
        assert process.poll() is None, out.read_text()
    finally:
        stop_process(process, signal.SIGINT, timeout=10)
    assert out.read_text().count("Broker  redis://127.0.0.1:") >= 2
    assert "Traceback" not in out.read_text()


# -- jobs -----------------------------------------------------------------------------------------


def test_jobs_lists_pending_jobs_per_site_and_queue_with_method_id_time_and_age(r, two_sites):
    add = frappe.enqueue("tests.jobs.add", queue="reports", job_id="j-add", a=1, b=2)
    record = frappe.enqueue(
        "tests.jobs.record", queue="batch", job_id="j-rec", key="test:cli:x", value="arg-value"
    )
    with as_other_site():
        other = frappe.enqueue("tests.jobs.add", queue="reports", job_id="j-other", a=5, b=6)

    text = ok("jobs").output
    rows = jobs_by_id(text)
    assert set(rows) == {add.id, record.id, other.id}
    assert rows[add.id][:5] == [SITE, "reports", "queued", "tests.jobs.add", add.id]
    assert rows[record.id][:5] == [SITE, "batch", "queued", "tests.jobs.record", record.id]
    assert rows[other.id][:5] == [OTHER_SITE, "reports", "queued", "tests.jobs.add", other.id]
    for job in (add, record, other):
        assert rows[job.id][5] == local_time(job.record["enqueued_at"])
        assert re.fullmatch(r"\d+s", rows[job.id][6])
        assert rows[job.id][7] == "-"
    # Arguments only with --show-args.
    assert "arg-value" not in text
    assert "args" not in text.splitlines()[0]

    # Frappe's name for it lists the same jobs.
    alias = jobs_by_id(ok("show-pending-jobs").output)
    assert {job_id: row[:6] for job_id, row in alias.items()} == {
        job_id: row[:6] for job_id, row in rows.items()
    }

    data = {row["id"]: row for row in json.loads(ok("jobs", "--json").output)}
    assert set(data) == {add.id, record.id, other.id}
    assert data[add.id]["method"] == "tests.jobs.add"
    assert data[add.id]["enqueued_at"] == float(add.record["enqueued_at"])
    assert data[other.id]["site"] == OTHER_SITE
    assert data[add.id]["kwargs"] is None


def test_jobs_show_args_adds_each_jobs_arguments(r):
    add = frappe.enqueue("tests.jobs.add", queue="reports", a=1, b=2)
    record = frappe.enqueue("tests.jobs.record", queue="batch", key="test:cli:x", value="arg-value")
    text = ok("jobs", "--show-args").output
    assert text.splitlines()[0].split()[-1] == "args"
    rows = jobs_by_id(text)
    assert json.loads(rows[add.id][-1]) == {"a": 1, "b": 2}
    assert json.loads(rows[record.id][-1]) == {"key": "test:cli:x", "value": "arg-value"}
    data = {row["id"]: row for row in json.loads(ok("jobs", "--show-args", "--json").output)}
    assert data[add.id]["kwargs"] == {"a": 1, "b": 2}


def test_jobs_filters_by_queue_site_and_limit(r, two_sites):
    reports = [frappe.enqueue("tests.jobs.add", queue="reports", a=n, b=n) for n in range(3)]
    batch = frappe.enqueue("tests.jobs.add", queue="batch", a=1, b=1)
    with as_other_site():
        other = frappe.enqueue("tests.jobs.add", queue="reports", a=9, b=9)
    everything = {job.id for job in [*reports, batch, other]}

    assert set(jobs_by_id(ok("jobs").output)) == everything
    assert set(jobs_by_id(ok("jobs", "--queue", "batch").output)) == {batch.id}
    assert set(jobs_by_id(ok("jobs", "-q", "reports").output)) == {j.id for j in [*reports, other]}
    assert set(jobs_by_id(ok("jobs", "--site", OTHER_SITE).output)) == {other.id}
    assert set(jobs_by_id(ok("jobs", "--site", SITE).output)) == everything - {other.id}
    assert set(jobs_by_id(ok("jobs", "--queue", "reports", "--site", SITE).output)) == {
        job.id for job in reports
    }
    # The first rows in run order: reports' jobs, oldest first (the worker pops the oldest).
    limited = jobs_by_id(ok("jobs", "--queue", "reports", "--limit", "2").output)
    assert list(limited) == [reports[0].id, reports[1].id]
    assert len(jobs_by_id(ok("jobs", "--limit", "1").output)) == 1
    # No match is not an error.
    assert ok("jobs", "--queue", "long").output.strip() == "(none)"


def test_jobs_site_says_when_that_sites_jobs_may_lie_beyond_what_it_looked_at(
    r, two_sites, monkeypatch
):
    monkeypatch.setattr(monitor, "SITE_SCAN_LIMIT", 3)
    first = [frappe.enqueue("tests.jobs.add", queue="reports", a=n, b=n) for n in range(3)]
    with as_other_site():
        behind = frappe.enqueue("tests.jobs.add", queue="reports", a=9, b=9)

    near = ok("jobs", "--site", SITE)
    assert set(jobs_by_id(near.output)) == {job.id for job in first}
    far = ok("jobs", "--site", OTHER_SITE)
    assert behind.id not in far.output  # the fourth job to run, past the three looked at
    assert "--site looks at the next 3 pending jobs of each queue; reports has 4" in far.output


def test_jobs_status_filter_shows_only_pending_or_only_running_jobs(r, shared_worker, blocking):
    pending = frappe.enqueue("tests.jobs.add", queue="reports", a=1, b=1)
    running, key, _ = blocking("filter-running")
    wait_for(lambda: started(r, key), 30)

    assert set(jobs_by_id(ok("jobs").output)) == {pending.id, running.id}
    # The help names the values in lower case, as the statuses are spelled everywhere else.
    assert set(jobs_by_id(ok("jobs", "--status", "queued").output)) == {pending.id}
    rows = jobs_by_id(ok("jobs", "--status", "started").output)
    assert set(rows) == {running.id}
    assert rows[running.id][1:4] == ["short", "started", "tests.jobs.wait_for_release"]
    # Running jobs come first.
    assert list(jobs_by_id(ok("jobs").output)) == [running.id, pending.id]


def test_a_running_jobs_progress_appears_in_jobs_and_status(r, shared_worker, blocking):
    by_handle, key_a, _ = blocking(
        "progress-a", method="tests.jobs.cli.progress_then_wait", percent=50, message="half",
        via="set_progress",
    )  # fmt: skip
    by_frappe, key_b, _ = blocking(
        "progress-b", method="tests.jobs.cli.progress_then_wait", percent=75,
        message="three quarters", via="publish_progress",
    )  # fmt: skip
    wait_for(lambda: started(r, key_a) and started(r, key_b), 30)

    rows = jobs_by_id(ok("jobs").output)
    assert rows[by_handle.id][2] == "started" and rows[by_handle.id][7] == "50% half"
    assert rows[by_frappe.id][2] == "started" and rows[by_frappe.id][7] == "75% three quarters"
    data = {row["id"]: row for row in json.loads(ok("jobs", "--json").output)}
    assert data[by_handle.id]["progress"] == "50% half"
    assert data[by_frappe.id]["progress"] == "75% three quarters"

    text = ok("status").output
    running = table_rows(text.split("Running jobs:", 1)[1], "queue ")
    assert {row[2]: row[-1] for row in running} == {
        by_handle.id: "50% half",
        by_frappe.id: "75% three quarters",
    }
    status_json = json.loads(ok("status", "--json").output)
    assert {row["id"]: row["progress"] for row in status_json["running"]} == {
        by_handle.id: "50% half",
        by_frappe.id: "75% three quarters",
    }


# -- failed, retry --------------------------------------------------------------------------------


def test_failed_lists_failed_jobs_with_their_exception(r, shared_worker):
    job = frappe.enqueue("tests.jobs.fail", queue="short", job_id="f-1", message="cli-boom")
    wait_for(lambda: job.get_status() == "failed", 30)

    rows = table_rows(ok("failed").output, "site ")
    assert len(rows) == 1
    site, queue, method, job_id, when, attempts, exception = rows[0]
    assert (site, queue, method, job_id) == (SITE, "short", "tests.jobs.fail", job.id)
    assert attempts == "1"
    assert re.fullmatch(r"\d+s", when)
    assert exception == "ValueError: cli-boom"

    data = json.loads(ok("failed", "--json").output)
    assert [(row["id"], row["exc"]) for row in data] == [(job.id, "ValueError: cli-boom")]
    # The job's arguments are not shown (they may hold personal data): only the exception.
    assert data[0]["kwargs"] is None
    assert ok("failed", "--queue", "default").output.strip() == "(none)"


def test_retry_enqueues_a_failed_job_again_with_the_same_arguments_and_it_runs(r, shared_worker):
    allow = "test:cli:allow-one"
    job = frappe.enqueue(
        "tests.jobs.cli.fail_until_allowed", queue="short", job_id="retry-one", allow_key=allow,
        value=21,
    )  # fmt: skip
    wait_for(lambda: job.get_status() == "failed", 30)
    r.set(allow, 1)

    result = ok("retry", "retry-one")  # the caller's id
    assert result.output.strip() == f"Enqueued {job.id} again on short"
    wait_for(lambda: job.get_status() == "finished", 30)
    assert job.return_value() == 42
    assert [json.loads(v) for v in r.lrange(allow + ":attempts", 0, -1)] == [21, 21]
    assert r.zscore(keys.failed_registry("short"), job.id) is None
    assert ok("failed").output.strip() == "(none)"


def test_the_plain_set_progress_records_on_the_current_job_and_does_nothing_outside_one(
    r, shared_worker
):
    r.set("test:cli:plain:release", 1)  # the job returns at once
    job = frappe.enqueue(
        "tests.jobs.cli.progress_then_wait", queue="short", key="test:cli:plain",
        release_key="test:cli:plain:release", percent=10, message="begun",
        via="frappe_celery.set_progress",
    )  # fmt: skip
    wait_for(lambda: job.get_status() == "finished", 30)
    record = job.refresh()
    assert (record["progress"], record["progress_message"]) == ("10", "begun")
    frappe.set_progress(99, "outside a job: nothing to record, and no error")


def test_retry_all_re_enqueues_every_failed_job_of_a_queue_with_a_progress_bar(r, shared_worker):
    allow = "test:cli:allow-all"
    on_short = [
        frappe.enqueue("tests.jobs.cli.fail_until_allowed", queue="short", allow_key=allow, value=v)
        for v in (1, 2)
    ]
    on_default = frappe.enqueue(
        "tests.jobs.cli.fail_until_allowed", queue="default", allow_key=allow, value=3
    )
    jobs = [*on_short, on_default]
    wait_for(lambda: all(job.get_status() == "failed" for job in jobs), 30)
    r.set(allow, 1)

    result = ok("retry", "--all", "--queue", "short")
    assert "Retrying failed jobs" in result.output
    assert result.output.strip().endswith("Enqueued 2 failed jobs again")
    wait_for(lambda: all(job.get_status() == "finished" for job in on_short), 30)
    assert [job.return_value() for job in on_short] == [2, 4]
    assert on_default.get_status() == "failed"

    result = ok("retry", "--all")
    assert result.output.strip().endswith("Enqueued 1 failed jobs again")
    wait_for(lambda: on_default.get_status() == "finished", 30)
    assert on_default.return_value() == 6


def test_retry_all_retries_each_failed_job_once_even_if_it_fails_again_meanwhile(r, shared_worker):
    # Jobs that fail again at once: while `retry --all` works through the list, the shared
    # worker fails the first ones again. Those must not be retried a second time.
    allow = "test:cli:never"
    jobs = [
        frappe.enqueue("tests.jobs.cli.fail_until_allowed", queue="short", allow_key=allow, value=n)
        for n in range(60)
    ]
    wait_for(lambda: all(job.get_status() == "failed" for job in jobs), 60)

    result = ok("retry", "--all", "--queue", "short")
    wait_for(lambda: all(job.get_status() == "failed" for job in jobs), 60)
    assert result.output.strip().endswith("Enqueued 60 failed jobs again")
    runs = [json.loads(v) for v in r.lrange(allow + ":attempts", 0, -1)]
    assert sorted(runs) == sorted(list(range(60)) * 2)  # each ran exactly twice


def test_retry_needs_exactly_one_of_a_job_id_or_all(r):
    for args in (["retry"], ["retry", "some-id", "--all"]):
        result = invoke(*args)
        assert result.exit_code == 2
        assert "give a JOB_ID" in result.output


# -- purge-jobs -----------------------------------------------------------------------------------


def test_purge_jobs_removes_the_queues_pending_jobs_and_frees_their_ids(r):
    first = frappe.enqueue(
        "tests.jobs.add", queue="reports", job_id="p-dedup", deduplicate=True, a=1, b=1
    )
    at_front = frappe.enqueue("tests.jobs.add", queue="reports", at_front=True, a=2, b=2)
    plain = frappe.enqueue("tests.jobs.add", queue="reports", a=3, b=3)
    untouched = frappe.enqueue("tests.jobs.add", queue="batch", a=4, b=4)
    # While queued, its id is taken.
    assert frappe.enqueue("tests.jobs.add", queue="reports", job_id="p-dedup", deduplicate=True,
                          a=1, b=1) is None  # fmt: skip

    result = ok("purge-jobs", "--queue", "reports")
    assert "Purging reports" in result.output  # the progress bar's label
    assert result.output.strip().endswith("Purged 3 jobs")
    assert pending_count("reports") == 0
    assert [job.get_status() for job in (first, at_front, plain)] == ["canceled"] * 3
    assert pending_count("batch") == 1 and untouched.get_status() == "queued"

    again = frappe.enqueue(
        "tests.jobs.add", queue="reports", job_id="p-dedup", deduplicate=True, a=1, b=1
    )
    assert again is not None and again.id == first.id
    assert again.get_status() == "queued" and pending_count("reports") == 1


def test_purge_jobs_event_only_removes_that_events_jobs(r):
    nightly = [
        frappe.enqueue("tests.jobs.add", queue="reports", event="nightly", a=n, b=n)
        for n in range(2)
    ]
    adhoc = frappe.enqueue("tests.jobs.add", queue="reports", event="adhoc", a=1, b=1)
    none = frappe.enqueue("tests.jobs.add", queue="reports", a=1, b=1)

    result = ok("purge-jobs", "--queue", "reports", "--event", "nightly")
    assert result.output.strip().endswith("Purged 2 jobs")
    assert [job.get_status() for job in nightly] == ["canceled", "canceled"]
    assert set(jobs_by_id(ok("jobs", "--queue", "reports").output)) == {adhoc.id, none.id}
    assert adhoc.get_status() == "queued" and none.get_status() == "queued"


def test_purge_jobs_site_only_removes_that_sites_jobs(r, two_sites):
    ours = [frappe.enqueue("tests.jobs.add", queue="reports", a=n, b=n) for n in range(2)]
    with as_other_site():
        theirs = frappe.enqueue("tests.jobs.add", queue="reports", a=9, b=9)

    result = ok("purge-jobs", "--queue", "reports", "--site", OTHER_SITE)
    assert result.output.strip().endswith("Purged 1 jobs")
    assert theirs.get_status() == "canceled"
    assert set(jobs_by_id(ok("jobs", "--queue", "reports").output)) == {job.id for job in ours}

    result = ok("purge-jobs", "--queue", "reports", "--site", SITE)
    assert result.output.strip().endswith("Purged 2 jobs")
    assert pending_count("reports") == 0


# -- stop, cancel ---------------------------------------------------------------------------------


def test_stop_stops_a_running_job_which_never_completes_its_work(r, shared_worker, blocking):
    job, key, release = blocking("to-stop")
    wait_for(lambda: started(r, key) and job.get_status() == "started", 30)
    # A running job is stopped, not canceled.
    refused = invoke("cancel", job.id)
    assert refused.exit_code == 1
    assert "only a queued job can be canceled; its status is 'started'" in refused.output
    assert job.get_status() == "started"

    result = ok("stop", job.id)  # the site-namespaced id
    assert result.output.strip() == f"Stopped {job.id}; its status is now stopped"
    assert job.get_status() == "stopped"  # RQ's status for a stopped running job
    # Were it still running (or run again), it would record "released" now.
    r.set(release, 1)
    time.sleep(1.5)
    assert [json.loads(v) for v in r.lrange(key, 0, -1)] == ["started"]
    assert job.get_status() == "stopped"
    assert r.zscore(keys.started_registry("short"), job.id) is None


def test_retry_runs_a_stopped_job_again(r, shared_worker, blocking):
    job, key, release = blocking("stop-then-retry")
    wait_for(lambda: started(r, key) and job.get_status() == "started", 30)
    ok("stop", "stop-then-retry")  # the caller's id
    assert job.get_status() == "stopped"
    r.set(release, 1)

    assert ok("retry", "stop-then-retry").output.strip() == f"Enqueued {job.id} again on short"
    # The retried run must really run (not be dropped as the run that was stopped).
    wait_for(lambda: job.get_status() in FINAL, 30)
    assert job.get_status() == "finished", job.refresh()
    assert job.return_value() == "released"
    assert [json.loads(v) for v in r.lrange(key, 0, -1)] == ["started", "started", "released"]


def test_stop_refuses_a_job_that_is_not_running(r):
    job = frappe.enqueue("tests.jobs.add", queue="reports", job_id="not-running", a=1, b=1)
    result = invoke("stop", "not-running")
    assert result.exit_code == 1
    assert "is not running" in result.output
    assert job.get_status() == "queued" and pending_count("reports") == 1


@pytest.mark.parametrize("form", ["caller's id", "namespaced id"])
def test_cancel_removes_a_queued_job(r, form):
    job = frappe.enqueue("tests.jobs.add", queue="reports", job_id="to-cancel", a=1, b=1)
    keep = frappe.enqueue("tests.jobs.add", queue="reports", job_id="to-keep", a=1, b=1)
    result = ok("cancel", "to-cancel" if form == "caller's id" else f"{SITE}||to-cancel")
    assert result.output.strip() == f"Canceled {job.id}"
    assert job.get_status() == "canceled"
    messages = [m for name in keys.queue_lists("reports") for m in r.lrange(name, 0, -1)]
    assert [json.loads(m)["headers"]["id"] for m in messages] == [keep.id]
    assert set(jobs_by_id(ok("jobs").output)) == {keep.id}


# -- scheduler ------------------------------------------------------------------------------------


def test_trigger_scheduler_event_enqueues_an_entry_now_by_key_or_by_method(
    r, shared_worker, sched_hooks
):
    tick = next(entry for entry in scheduler_entries() if entry.method == TICK)

    result = ok("trigger-scheduler-event", "cron")
    assert result.output.strip() == f"{TICK} (cron, {SITE}): enqueued as {tick.job_id}"
    wait_for(lambda: r.llen(TICKS) == 1, 30)
    wait_for(lambda: status_of(tick.job_id) == "finished", 30)
    job = frappe.get_job(tick.job_id)
    assert (job.queue, job.event, job.method) == ("default", "cron", TICK)

    result = ok("trigger-scheduler-event", TICK, "--site", SITE)
    assert result.output.strip() == f"{TICK} (cron, {SITE}): enqueued as {tick.job_id}"
    wait_for(lambda: r.llen(TICKS) == 2, 30)


def test_scheduler_pause_resume_disable_enable_per_site_and_for_every_site(r, two_sites):
    def status() -> dict[str, Any]:
        return json.loads(ok("scheduler", "status", "--json").output)["sites"]

    assert status() == {SITE: ["active"], OTHER_SITE: ["active"]}

    assert ok("scheduler", "pause", "--site", OTHER_SITE).output.strip() == (
        f"Scheduler is paused for site {OTHER_SITE}"
    )
    assert status() == {SITE: ["active"], OTHER_SITE: ["paused"]}
    text = ok("scheduler", "status").output
    assert f"{SITE}: active\n{OTHER_SITE}: paused\nleader: no beat running" in text
    assert ok("scheduler", "status", "--site", OTHER_SITE).output.startswith(
        f"{OTHER_SITE}: paused\nleader:"
    )

    assert ok("scheduler", "disable").output.strip() == "Scheduler is disabled for every site"
    assert status() == {SITE: ["disabled"], OTHER_SITE: ["disabled", "paused"]}

    ok("scheduler", "resume", "--site", OTHER_SITE)
    assert status() == {SITE: ["disabled"], OTHER_SITE: ["disabled"]}
    assert ok("scheduler", "enable").output.strip() == "Scheduler is enabled for every site"
    assert status() == {SITE: ["active"], OTHER_SITE: ["active"]}

    ok("scheduler", "pause")
    assert status() == {SITE: ["paused"], OTHER_SITE: ["paused"]}
    ok("scheduler", "resume")
    assert status() == {SITE: ["active"], OTHER_SITE: ["active"]}
    assert r.hlen(keys.SCHEDULER_SWITCHES) == 0


# -- doctor ---------------------------------------------------------------------------------------


def test_doctor_reports_queues_without_a_worker_and_no_scheduler_with_the_fix(
    r, shared_worker, sched_hooks
):
    node = node_of(shared_worker)
    heartbeat(lambda w: w["node"] == node)
    result = invoke("doctor")
    assert result.exit_code == 1, result.output
    text = result.output
    assert text.startswith(f"Broker {os.environ['FRAPPE_CELERY_BROKER_URL']}: reachable\n")
    for queue in ("reports", "batch"):
        assert (
            f"PROBLEM: no worker consumes queue {queue!r}: its jobs wait for ever\n"
            f"  fix: start one: frappe-celery worker --queue {queue}"
        ) in text
    for queue in ("short", "default", "long"):
        assert f"queue {queue!r}" not in text
    assert (
        "PROBLEM: no scheduler is running: scheduler_events do not fire\n  fix: start one:" in text
    )
    assert "No problems found." not in text


def test_doctor_finds_no_problem_with_a_worker_on_every_queue_and_a_beat(
    r, shared_worker, sched_hooks, start_worker, start_beat
):
    extra = start_worker("reports,batch")
    beat = start_beat(FRAPPE_CELERY_HOOKS=SCHED_HOOKS)
    heartbeat(lambda w: w["node"] == node_of(shared_worker))
    heartbeat(lambda w: w["node"] == node_of(extra))
    wait_for(lambda: beat.is_leader and state.current_leader(), 30)

    result = invoke("doctor")
    assert result.exit_code == 0, result.output
    assert result.output.strip().endswith("No problems found.")
    assert "PROBLEM" not in result.output

    # status names the leader beat.
    leader = state.current_leader()
    assert leader and leader.startswith("beat-")
    assert f"Scheduler  leader: {leader}  sites: {SITE}: active" in ok("status").output
    assert ok("scheduler", "status").output.strip().endswith(f"leader: {leader}")


# -- worker ---------------------------------------------------------------------------------------


def test_worker_burst_runs_the_pending_jobs_then_quits(r):
    key = "test:cli:burst"
    jobs = [
        frappe.enqueue("tests.jobs.add", queue="batch", a=2, b=3),
        frappe.enqueue("tests.jobs.record", queue="batch", key=key, value="x"),
        frappe.enqueue("tests.jobs.sleep_then_record", queue="batch", key=key, seconds=1),
        # Fails once and is retried after a 1 s countdown: burst waits for the retry too.
        frappe.enqueue("tests.jobs.flaky", queue="batch", key=key + ":flaky", failures=1),
    ]
    done = run_cli("worker", "--queue", "batch", "--burst", timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "done, quitting" in done.stderr and " ready." in done.stderr
    assert [job.get_status() for job in jobs] == ["finished"] * 4
    assert jobs[0].return_value() == 5
    assert jobs[3].return_value() == "succeeded on attempt 2"
    assert sorted(json.loads(v) for v in r.lrange(key, 0, -1)) == ["done", "x"]
    assert pending_count("batch") == 0


def test_worker_burst_on_empty_queues_quits_at_once(r):
    result = run_cli("worker", "--queue", "reports,batch", "--burst", timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "queues reports,batch are empty and no job runs here: done, quitting" in result.stderr


def test_worker_num_workers_sets_the_pool_size(r, tmp_path):
    log = tmp_path / "worker.log"
    with log.open("w") as handle:
        process = subprocess.Popen(
            [CLI, "worker", "--queue", "batch", "--num-workers", "3"], cwd=ROOT, env=cli_env(),
            stdout=handle, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        # `worker` becomes the celery worker (exec): same pid.
        found = heartbeat(lambda w: w["pid"] == process.pid or process.poll() is not None, 60)
        assert process.poll() is None, log.read_text()
        assert found["queues"] == ["batch"]
        assert found["concurrency"] == 3
    finally:
        stop_process(process)
    assert process.returncode == 0, log.read_text()
    assert all(w["pid"] != process.pid for w in read_workers())


# -- start ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_start_runs_embedded_redis_worker_and_beat_and_ctrl_c_or_sigterm_stops_them_all(
    r, tmp_path, stop_signal
):
    """Started as a shell without job control starts a background command, with SIGINT
    ignored: Ctrl-C, and a supervisor's SIGTERM, still stop every part."""
    url = f"redis://127.0.0.1:{free_port()}/0"
    out = tmp_path / "start.out"
    start_env = cli_env(FRAPPE_CELERY_BROKER_URL=url, FRAPPE_CELERY_HOOKS="tests.jobs.hooks_beat")
    with out.open("w") as handle:
        process = subprocess.Popen(
            [CLI, "start", "--data-dir", str(tmp_path / "data"), "--concurrency", "1"],
            cwd=ROOT, env=start_env,
            stdout=handle, stderr=subprocess.STDOUT, start_new_session=True,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
        )  # fmt: skip
    tree: set[int] = set()
    try:
        wait_for(
            lambda: (
                "Running; Ctrl-C stops everything." in out.read_text() or process.poll() is not None
            ),
            90,
        )
        assert process.poll() is None, out.read_text()
        text = out.read_text()
        embedded_at = re.search(
            rf"No broker at {re.escape(url)}: started an embedded Redis at (redis://\S+) \(data in",
            text,
        )
        assert embedded_at, text
        embedded_url = embedded_at[1]
        assert re.search(r"^\[worker\] .* ready\.", text, re.MULTILINE)
        assert re.search(r"^\[beat\] .*beat: Starting", text, re.MULTILINE)
        assert (tmp_path / "data" / "redis").is_dir()
        # The hooks of FRAPPE_CELERY_HOOKS: beat fires tests.jobs.hooks_beat's every-2-s entry and
        # the worker runs it, against the embedded Redis.
        embedded = redis.Redis.from_url(embedded_url, socket_timeout=5)
        wait_for(lambda: embedded.llen(TICKS) >= 1, 30)
        embedded.close()
        tree = descendants(process.pid)
        assert len(tree) >= 4, tree  # redis-server, worker + its pool child, beat

        process.send_signal(stop_signal)
        process.wait(60)
    finally:
        if process.poll() is None:  # failed before a clean stop: leak nothing
            tree |= descendants(process.pid)
            stop_process(process, signal.SIGKILL, timeout=10)
        leftovers = lingering(tree, timeout=15)
        for pid in leftovers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    assert process.returncode == 0, out.read_text()
    assert "Stopping..." in out.read_text()
    assert not answers(embedded_url, timeout=0.5)
    assert not leftovers, f"still running after start exited: {leftovers}"


# -- bad input, broker down -----------------------------------------------------------------------

BAD_INPUT = [
    (["jobs", "--queue", "nosuch"], "no queue 'nosuch'"),
    (["show-pending-jobs", "--site", "nosuch.site"], "no site 'nosuch.site'"),
    (["failed", "--queue", "nosuch"], "no queue 'nosuch'"),
    (["retry", "nosuch-id"], "no job 'nosuch-id'"),
    (["retry", "--all", "--queue", "nosuch"], "no queue 'nosuch'"),
    (["purge-jobs", "--queue", "nosuch"], "no queue 'nosuch'"),
    (["purge-jobs", "--queue", "reports", "--site", "nosuch.site"], "no site 'nosuch.site'"),
    (["stop", "nosuch-id"], "no job 'nosuch-id'"),
    (["stop", f"{SITE}||nosuch-id"], f"no job '{SITE}||nosuch-id'"),
    (["cancel", "nosuch-id"], "no job 'nosuch-id'"),
    (["trigger-scheduler-event", "nosuch_event"], "no scheduler_events entry 'nosuch_event'"),
    (["trigger-scheduler-event", "cron", "--site", "nosuch.site"], "no site 'nosuch.site'"),
    (["scheduler", "pause", "--site", "nosuch.site"], "no site 'nosuch.site'"),
    (["scheduler", "enable", "--site", "nosuch.site"], "no site 'nosuch.site'"),
    (["scheduler", "status", "--site", "nosuch.site"], "no site 'nosuch.site'"),
    (["worker", "--queue", "short,nosuch", "--burst"], "no queue 'nosuch'"),
]


@pytest.mark.parametrize(("args", "message"), BAD_INPUT, ids=[" ".join(a) for a, _ in BAD_INPUT])
def test_bad_input_exits_2_with_a_clear_message_and_changes_nothing(r, sched_hooks, args, message):
    frappe.enqueue("tests.jobs.add", queue="reports", job_id="stays", a=1, b=1)
    state.set_switch("paused", True, [SITE])
    before = redis_snapshot(r)
    result = invoke(*args)
    assert result.exit_code == 2, result.output
    assert f"Error: {message}" in result.output
    assert "Traceback" not in result.output
    assert redis_snapshot(r) == before


def test_an_unknown_event_lists_the_known_keys_and_methods(r, sched_hooks):
    result = invoke("trigger-scheduler-event", "nosuch_event")
    assert result.exit_code == 2
    assert (
        "daily_long" in result.output and TICK in result.output and SCHEDULED_FAIL in result.output
    )


def test_start_refuses_a_bad_concurrency(r):
    result = invoke("start", "--concurrency", "0")
    assert result.exit_code == 2
    assert "--concurrency" in result.output


BROKER_DOWN = [
    ["status"], ["status", "--json"], ["jobs"], ["show-pending-jobs"], ["failed"],
    ["retry", "some-id"], ["retry", "--all"], ["purge-jobs", "--queue", "reports"],
    ["stop", "some-id"], ["cancel", "some-id"], ["trigger-scheduler-event", "cron"],
    ["scheduler", "pause"], ["scheduler", "status"], ["doctor"],
    ["worker", "--queue", "batch", "--burst"],
]  # fmt: skip


@pytest.fixture
def broker_down(r: redis.Redis) -> Iterator[str]:
    url = f"redis://:secret@127.0.0.1:{free_port()}/0"
    with settings_env(FRAPPE_CELERY_BROKER_URL=url):
        yield url


@pytest.mark.parametrize("args", BROKER_DOWN, ids=" ".join)
def test_broker_down_names_the_url_without_its_password_and_exits_1(r, broker_down, args):
    result = invoke(*args, env={"FRAPPE_CELERY_BROKER_URL": broker_down})
    assert result.exit_code == 1, result.output
    port = broker_down.rsplit(":", 1)[1].split("/")[0]
    assert f"Error: the Redis broker at redis://:***@127.0.0.1:{port}/0 does not answer" in (
        result.output
    )
    assert "secret" not in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    "args", [["status"], ["jobs"], ["failed"], ["scheduler", "status"]], ids=" ".join
)
def test_listing_commands_exit_0_on_an_empty_broker(r, args):
    ok(*args)


def test_job_ids_lists_a_queues_jobs_by_status_newest_ended_first(r, shared_worker):
    from frappe_celery.ops.monitor import job_ids

    first = frappe.enqueue("tests.jobs.fail", queue="short", message="ids-1")
    wait_for(lambda: first.get_status() == "failed", 30)
    second = frappe.enqueue("tests.jobs.fail", queue="short", message="ids-2")
    done = frappe.enqueue("tests.jobs.add", queue="short", a=1, b=2)
    for job in (second, done):
        wait_for(lambda job=job: job.get_status() in FINAL, 30)
    failed = job_ids("short", "failed")
    assert [job_id for job_id, _ in failed] == [second.id, first.id]
    assert failed[0][1] == pytest.approx(second.ended_at.timestamp())
    assert [job_id for job_id, _ in job_ids("short", "finished")] == [done.id]
    assert job_ids("default", "failed") == []
    queued = frappe.enqueue("tests.jobs.add", queue="batch", a=1, b=1)  # no worker on batch
    assert job_ids("batch", "queued") == [(queued.id, math.inf)]
    assert job_ids("short", "no-such-status") == []


def test_remove_failed_jobs_forgets_one_sites_failed_jobs_only(r, two_sites, shared_worker):
    from frappe_celery.ops.admin import remove_failed_jobs

    mine = frappe.enqueue("tests.jobs.fail", queue="short", message="mine")
    with as_other_site():
        theirs = frappe.enqueue("tests.jobs.fail", queue="short", message="theirs")
    for job in (mine, theirs):
        wait_for(lambda job=job: job.get_status() == "failed", 30)
    assert remove_failed_jobs(SITE) == 1
    assert r.exists(keys.job(mine.id)) == 0
    assert r.zscore(keys.failed_registry("short"), mine.id) is None
    assert theirs.get_status() == "failed"


def test_forget_job_refuses_a_queued_job_and_forgets_an_ended_one(r, shared_worker):
    from frappe_celery.errors import InvalidJobOperation
    from frappe_celery.ops.admin import forget_job

    queued = frappe.enqueue("tests.jobs.add", queue="batch", a=1, b=1)  # no worker on batch
    with pytest.raises(InvalidJobOperation, match="has not ended"):
        forget_job(queued.id)
    assert queued.get_status() == "queued"
    done = frappe.enqueue("tests.jobs.add", queue="short", a=1, b=1)
    wait_for(lambda: done.get_status() == "finished", 30)
    forget_job(done.id)
    assert r.exists(keys.job(done.id)) == 0
    assert r.zscore(keys.finished_registry("short"), done.id) is None
