"""A bench operator's own commands on a switched bench, driven through the bench CLI itself:
``bench worker`` / ``worker-pool`` (``--burst``, and the Procfile's worker line that ``bench
setup procfile`` writes), ``bench schedule``, ``bench doctor``, ``bench ready-for-migration``,
the System Health Report, ``frappe-celery doctor`` in the bench, and an uninstalled
frappe-celery whose switch file stayed behind."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import frappe_celery
from frappe_celery.ops import admin
from frappe_celery.ops.monitor import get_workers

from ..support.frappe_bench import DAILY, Beat, Bench, custom_queues, fresh, logs_since, make_due
from ..support.processes import wait_for

pytestmark = pytest.mark.usefixtures("celery_worker")

# A queue only the workers a test starts consume (the session's worker does not).
QUEUE = "celery-tests-operator"
SECOND_QUEUE = "celery-tests-operator-2"
PROJECT = Path(__file__).resolve().parents[2]


@pytest.fixture
def own_queue(bench: Bench) -> Iterator[str]:
    with custom_queues(bench, QUEUE, SECOND_QUEUE):
        try:
            yield QUEUE
        finally:
            admin.purge_jobs(QUEUE)
            admin.purge_jobs(SECOND_QUEUE)


def bench_cli(bench: Bench, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    """``bench ARGS`` from the bench folder, without a site (``bench worker`` takes none)."""
    return subprocess.run(
        [bench.cli, *args], cwd=bench.path, capture_output=True, text=True, timeout=timeout,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip


def enqueue_records(site: Any, queue: str, count: int) -> list[Any]:
    label = f"operator-{uuid.uuid4().hex[:8]}"
    return [
        site.enqueue("celery_example.tasks.record", queue=queue, label=f"{label}-{i}")
        for i in range(count)
    ]


# -- bench worker / worker-pool -------------------------------------------------------------------


@pytest.mark.parametrize(
    "command",
    [("worker",), ("worker-pool", "--num-workers", "2")],
    ids=["bench worker", "bench worker-pool"],
)
def test_bench_worker_burst_runs_every_waiting_job_on_celery_then_quits(
    bench, site, own_queue, command
):
    jobs = enqueue_records(site, own_queue, 4)
    result = bench_cli(bench, *command, "--queue", own_queue, "--burst")

    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    # RQ's words, on stdout (the Procfile sends it to logs/worker.log), as Frappe's tests read.
    assert "quitting" in result.stdout
    assert "Traceback" not in result.stderr
    assert [job.get_status() for job in jobs] == ["finished"] * 4
    # Each ran on the Celery worker this command started: named <queues>.<pid>@<host>.
    workers = {job.refresh()["worker"] for job in jobs}
    assert len(workers) == 1 and workers.pop().startswith(f"{own_queue}.")


@pytest.mark.parametrize(
    ("strategy", "expected"),
    [
        ((), [QUEUE, QUEUE, SECOND_QUEUE, SECOND_QUEUE]),  # RQ's default: strictly in order
        (("--strategy", "round_robin"), [QUEUE, SECOND_QUEUE, QUEUE, SECOND_QUEUE]),
    ],
    ids=["default", "round_robin"],
)
def test_bench_worker_strategy_decides_which_queue_serves_next(
    bench, site, own_queue, strategy, expected
):
    jobs = [*enqueue_records(site, SECOND_QUEUE, 2), *enqueue_records(site, own_queue, 2)]
    result = bench_cli(bench, "worker", "--queue", f"{own_queue},{SECOND_QUEUE}", "--burst",
                       *strategy)  # fmt: skip
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    records = sorted(
        (job.refresh() for job in jobs), key=lambda record: float(record["started_at"])
    )
    assert [record["queue"] for record in records] == expected


def test_bench_worker_refuses_a_queue_the_bench_does_not_have(bench):
    result = bench_cli(bench, "worker", "--queue", "short,no-such-queue", "--burst")
    assert result.returncode != 0
    assert "--queue" in result.stderr and "no-such-queue" in result.stderr
    assert "short" in result.stderr and "default" in result.stderr  # what is allowed


def procfile_line(bench: Bench, process: str) -> str:
    """``bench setup procfile``'s line for ``process`` (the Procfile put back afterwards)."""
    procfile = bench.path / "Procfile"
    before = procfile.read_text() if procfile.exists() else None
    procfile.unlink(missing_ok=True)
    try:
        result = bench_cli(bench, "setup", "procfile")
        assert result.returncode == 0, result.stderr[-2000:]
        lines = dict(
            line.split(":", 1) for line in procfile.read_text().splitlines() if ":" in line
        )
    finally:
        if before is None:
            procfile.unlink(missing_ok=True)
        else:
            procfile.write_text(before)
    return lines[process].strip()


def test_the_procfile_worker_line_bench_setup_writes_runs_a_celery_worker(bench, site, own_queue):
    line = procfile_line(bench, "worker")
    assert line.startswith("bench worker")  # bench's own line, not ours
    log = bench.path / "logs" / "worker.log"
    size_before = log.stat().st_size if log.exists() else 0
    # As honcho runs a Procfile line: a shell in the bench folder, bench on PATH.
    env = {**os.environ, "PATH": f"{Path(bench.cli).parent}:{os.environ['PATH']}"}
    env = {k: v for k, v in env.items() if not k.startswith("FRAPPE_CELERY_")}
    process = subprocess.Popen(["bash", "-c", line], cwd=bench.path, env=env,
                               start_new_session=True, stdin=subprocess.DEVNULL)  # fmt: skip
    try:
        # No --queue on that line: every queue of the bench, the custom one included.
        jobs = enqueue_records(site, own_queue, 2)
        wait_for(lambda: [job.get_status() for job in jobs] == ["finished"] * 2, 60)
        node = jobs[0].refresh()["worker"]
        assert node.startswith("short.default.long.")
        assert any(w["node"] == node for w in get_workers())
        # Its log lines went where the line sends stdout.
        wait_for(lambda: log.stat().st_size > size_before, 10)
        with log.open() as handle:
            handle.seek(size_before)
            assert f"{node} ready." in handle.read()
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(30)


# -- bench schedule -------------------------------------------------------------------------------


def test_bench_schedule_fires_the_sites_scheduled_job_types_into_celery(bench, scheduler_on):
    job_type, since = make_due(scheduler_on, DAILY, days_ago=2)
    env = {k: v for k, v in os.environ.items() if not k.startswith("FRAPPE_CELERY_")}
    process = subprocess.Popen([bench.cli, "schedule"], cwd=bench.path, env=env,
                               start_new_session=True, stdin=subprocess.DEVNULL,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
    try:
        # No RQ worker runs on this bench: a Complete log means a Celery worker ran it.
        wait_for(lambda: logs_since(scheduler_on, job_type, since) == ["Complete"], 90)
        rq_job_id = scheduler_on.get_doc("Scheduled Job Type", job_type).rq_job_id
        job_id = frappe_celery.create_job_id(rq_job_id)
        assert frappe_celery.get_job_status(job_id) == "finished"
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(30)


# -- diagnostics ----------------------------------------------------------------------------------


def test_bench_doctor_counts_the_celery_workers_and_their_pending_jobs(bench, site, own_queue):
    enqueue_records(site, own_queue, 2)
    result = bench.run("doctor")
    assert result.returncode == 0, result.stderr[-2000:]
    online = re.search(r"Workers online: (\d+)", result.stdout)
    assert online is not None, result.stdout
    assert int(online.group(1)) == len(get_workers()) >= 1
    assert f"Queue: {own_queue}" in result.stdout
    assert "Number of Jobs:  2" in result.stdout


def test_ready_for_migration_says_not_ready_while_a_job_waits_then_ready(bench, site, own_queue):
    jobs = enqueue_records(site, own_queue, 1)
    waiting = bench.run("ready-for-migration")
    assert waiting.returncode == 1, waiting.stdout + waiting.stderr[-2000:]
    assert f"NOT READY for migration: site {bench.site} has pending" in waiting.stdout
    jobs[0].cancel()
    ready = bench.run("ready-for-migration")
    assert ready.returncode == 0, ready.stdout + ready.stderr[-2000:]
    assert f"READY for migration: site {bench.site} does not have" in ready.stdout


def health_report(site: Any) -> Any:
    fresh(site)
    site.clear_cache()
    return site.get_doc("System Health Report")


def test_the_system_health_report_shows_celerys_workers_and_queues(
    bench, site, own_queue, celery_worker
):
    enqueue_records(site, own_queue, 3)
    failing = site.enqueue("celery_example.tasks.fail_after_write", queue="default",
                           label=f"health-{uuid.uuid4().hex[:6]}")  # fmt: skip
    wait_for(lambda: failing.get_status() == "failed", 60)
    report = health_report(site)
    assert report.background_jobs_check in ("queued", "finished")
    assert report.total_background_workers == len(get_workers()) >= 1
    assert sum(row.count for row in report.background_workers) == report.total_background_workers
    pending = {row.queue: row.pending_jobs for row in report.queue_status}
    assert pending[own_queue] == 3
    # The failed job counts for the group of workers of the one that ran it.
    ran_by = failing.refresh()["worker"]
    group = next(w["queues"] for w in get_workers() if w["node"] == ran_by)
    row = next(row for row in report.background_workers if row.queues == ",".join(group))
    assert row.failed_jobs >= 1


def test_the_health_reports_scheduler_is_found_when_a_celery_beat_leads(
    bench, site, scheduler_on, tmp_path
):
    if not hasattr(site.utils.scheduler, "is_schduler_process_running"):
        pytest.skip("Frappe 15's report shows the scheduler setting only, no process check")
    assert health_report(site).scheduler_status == "Process Not Found"
    beat = Beat(bench, tmp_path / "beat.log")
    try:
        wait_for(lambda: "is now the leader" in beat.output(), 60)
        assert health_report(site).scheduler_status == "Active"
    finally:
        beat.stop()


def bench_frappe_celery(bench: Bench, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FRAPPE_CELERY_")}
    return subprocess.run([str(bench.bin / "frappe-celery"), *args], cwd=bench.sites, env=env,
                          capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL)  # fmt: skip


def test_frappe_celery_doctor_in_a_bench_checks_the_switch(bench):
    healthy = bench_frappe_celery(bench, "doctor")
    assert "switch" not in healthy.stdout, healthy.stdout
    assert "frappe-celery switch disabled" in bench_frappe_celery(bench, "bench", "disable").stdout
    try:
        off = bench_frappe_celery(bench, "doctor")
        assert off.returncode == 1
        assert "the switch is off" in off.stdout
        assert f"{bench.path}/env/bin/frappe-celery bench enable" in off.stdout
    finally:
        enabled = bench_frappe_celery(bench, "bench", "enable")
        assert enabled.returncode == 0, enabled.stderr


def test_a_worker_running_another_frappe_celery_version_is_named_by_doctor(bench, tmp_path):
    # A worker whose installed metadata says 0.0.1, as one not restarted after an upgrade.
    old = tmp_path / "old" / "frappe_celery-0.0.1.dist-info"
    old.mkdir(parents=True)
    (old / "METADATA").write_text("Metadata-Version: 2.1\nName: frappe-celery\nVersion: 0.0.1\n")
    from ..support.frappe_bench import start_celery_worker

    worker = start_celery_worker(bench, tmp_path / "old-worker.log", queues=QUEUE,
                                 extra_env={"PYTHONPATH": str(old.parent)})  # fmt: skip
    try:
        problems = [p.what for p in admin.doctor()]
        named = [what for what in problems if worker.node in what]
        assert named and "runs frappe-celery 0.0.1" in named[0], problems
        assert not [what for what in problems if "runs frappe-celery" in what
                    and worker.node not in what]  # fmt: skip
    finally:
        worker.stop()


def pip(bench: Bench, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([bench.python, "-m", "pip", "--disable-pip-version-check", *args],
                          capture_output=True, text=True, timeout=300)  # fmt: skip


def test_uninstalled_with_the_switch_on_every_process_starts_cleanly_and_says_so_once(bench):
    log = bench.path / "logs" / "frappe-celery-switch.log"
    log.unlink(missing_ok=True)
    removed = pip(bench, "uninstall", "-y", "frappe-celery")
    assert removed.returncode == 0, removed.stderr
    try:
        for _ in range(2):
            ping = bench.run("execute", "frappe.ping")
            assert ping.returncode == 0, ping.stderr[-2000:]
            assert "pong" in ping.stdout
            assert "Traceback" not in ping.stderr and "Error processing line" not in ping.stderr
        assert log.read_text().count("frappe-celery switch orphaned") == 1
        # What doctor (from any Python that has frappe-celery) says about that bench.
        problems = admin.switch_problems(bench_of(bench), bench_of(bench).probe_env())
        assert problems and "the switch is orphaned" in problems[0].what
    finally:
        again = pip(bench, "install", "--quiet", "--no-deps", "-e",
                    str(PROJECT))  # fmt: skip
        assert again.returncode == 0, again.stderr[-3000:]
        log.unlink(missing_ok=True)
    assert bench_frappe_celery(bench, "bench", "status").returncode == 0


def bench_of(bench: Bench) -> Any:
    from frappe_celery.bench_files import Bench as ConfigBench

    return ConfigBench(bench.sites)


def test_doctor_reads_a_rebuilt_virtualenv_as_not_installed(bench, tmp_path):
    # `bench setup env` makes a fresh virtualenv: nothing of frappe-celery in it. A bench whose
    # env is such a virtualenv (built here, beside the real one) is reported with the fix.
    fake = tmp_path / "bench"
    (fake / "sites").mkdir(parents=True)
    (fake / "sites" / "common_site_config.json").write_text("{}")
    subprocess.run(["python3", "-m", "venv", "--without-pip", str(fake / "env")], check=True,
                   timeout=120)  # fmt: skip
    from frappe_celery.bench_files import Bench as ConfigBench

    problems = admin.switch_problems(ConfigBench(fake / "sites"),
                                     ConfigBench(fake / "sites").probe_env())  # fmt: skip
    assert problems and "not installed in the bench's virtualenv" in problems[0].what
    assert f"{fake}/env/bin/pip install frappe-celery" in problems[0].fix
