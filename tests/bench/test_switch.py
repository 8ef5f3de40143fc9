"""The switch: every process of the bench sends Frappe's own enqueue call sites to Celery,
and one step gives the bench back to RQ."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import uuid

import pytest

import frappe_celery
from frappe_celery.integrations.frappe import rq_compat, switch

from ..support.frappe_bench import fresh, wait_for_status
from ..support.processes import wait_for

SWITCHED = [
    "enqueue", "enqueue_doc", "is_job_enqueued", "get_job", "get_job_status", "get_jobs",
    "get_workers", "get_queue", "get_queue_list", "get_queues_timeout", "create_job_id",
    "validate_queue",
]  # fmt: skip

# Frappe modules that bind one of those names at import time.
IMPORTED_AT_IMPORT_TIME = [
    ("frappe.core.doctype.data_import.data_import", "enqueue"),
    ("frappe.core.doctype.data_import.data_import", "is_job_enqueued"),
    ("frappe.core.doctype.scheduled_job_type.scheduled_job_type", "is_job_enqueued"),
    ("frappe.email.doctype.email_account.email_account", "get_jobs"),
    ("frappe.integrations.doctype.webhook.webhook", "get_queues_timeout"),
    ("frappe.utils.safe_exec", "enqueue"),
]
RQ_CURRENT_JOB_USERS = [
    "frappe.core.doctype.prepared_report.prepared_report",
    "frappe.core.doctype.submission_queue.submission_queue",
]


def test_every_frappe_name_in_this_process_is_frappe_celerys():
    import frappe.utils.background_jobs as background_jobs
    import rq

    assert switch.is_enabled(), "the bench's switch is off: frappe-celery bench enable"
    for name in SWITCHED:
        assert getattr(background_jobs, name) is switch.REPLACEMENTS[name], name
    for module_name, name in IMPORTED_AT_IMPORT_TIME:
        module = importlib.import_module(module_name)
        assert getattr(module, name) is switch.REPLACEMENTS[name], f"{module_name}.{name}"
    assert rq.get_current_job.__module__ == rq_compat.__name__
    for module_name in RQ_CURRENT_JOB_USERS:
        module = importlib.import_module(module_name)
        assert module.get_current_job is rq.get_current_job, module_name


def test_frappe_enqueue_and_enqueue_doc_return_celery_jobs(site):
    # Frappe 16 binds frappe.enqueue to background_jobs.enqueue at import; Frappe 15 defines a
    # wrapper that looks it up at each call. Either way the job is frappe-celery's.
    job = site.enqueue("frappe.ping", job_id=f"switch-{uuid.uuid4().hex[:8]}")
    assert isinstance(job, frappe_celery.Job)
    assert job.get_status() in ("queued", "started", "finished")
    doc_job = site.enqueue_doc("User", "Administrator", "get_fullname", queue="short")
    assert isinstance(doc_job, frappe_celery.Job)


def test_revert_gives_frappe_its_own_functions_back_and_apply_again_is_idempotent():
    import frappe
    import frappe.utils.background_jobs as background_jobs

    assert switch.revert() is True
    try:
        for name in SWITCHED:
            assert getattr(background_jobs, name).__module__ == "frappe.utils.background_jobs"
        assert frappe.enqueue is not switch.REPLACEMENTS["enqueue"]
    finally:
        assert switch.apply() is True
    assert switch.apply() is False
    assert background_jobs.enqueue is switch.REPLACEMENTS["enqueue"]


@pytest.mark.usefixtures("celery_worker")
def test_frappe_enqueue_from_bench_execute_runs_on_a_celery_worker(bench):
    import frappe

    job_id = f"bench-execute-{uuid.uuid4().hex[:8]}"
    result = bench.run("execute", "frappe.enqueue", "--args", '["frappe.ping"]',
                       "--kwargs", json.dumps({"job_id": job_id}))  # fmt: skip
    if int(frappe.__version__.split(".")[0]) >= 16:
        # Frappe 16 prints the returned handle as JSON (frappe_celery.Job.__json__); Frappe 15's
        # JSON encoder knows no __json__ and fails to print it, as it does for RQ's Job.
        assert result.returncode == 0, result.stderr[-2000:]
        printed = json.loads(result.stdout.strip().splitlines()[-1])
        assert printed["id"] == frappe_celery.create_job_id(job_id)
    done = wait_for_status(job_id, ("finished", "failed"))
    assert done.return_value() == "pong"


def test_enable_twice_is_a_no_op_and_says_so(bench):
    command = [str(bench.bin / "frappe-celery"), "bench", "enable"]
    first = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert first.returncode == 0, first.stderr
    assert "already enabled" in first.stdout
    assert switch.pth_path().read_text() == switch.pth_line(switch.pth_path())


@pytest.mark.usefixtures("celery_worker")
def test_switch_undone_the_same_site_runs_on_rq_again(bench, site):
    frappe_celery_cli = str(bench.bin / "frappe-celery")
    name = f"bench-test-rq-{uuid.uuid4().hex[:8]}"
    off = subprocess.run([frappe_celery_cli, "bench", "disable"], capture_output=True, text=True)
    assert off.returncode == 0, off.stderr
    try:
        status = subprocess.run([frappe_celery_cli, "bench", "status"], capture_output=True)
        assert status.returncode == 1
        bench.run("execute", "frappe.enqueue", "--args", '["celery_example.tasks.record"]',
                  "--kwargs", json.dumps({"label": name}))  # fmt: skip
        # Not a Celery job: the Celery worker never sees it...
        assert not fresh(site).exists("ToDo", {"description": ["like", f"{name}|%"]})
        # ...and RQ's own worker runs it.
        rq = bench.run("worker", "--queue", "default", "--burst", timeout=120)
        assert rq.returncode == 0, rq.stderr[-2000:]
        wait_for(lambda: fresh(site).exists("ToDo", {"description": ["like", f"{name}|%"]}), 30)
    finally:
        on = subprocess.run([frappe_celery_cli, "bench", "enable"], capture_output=True, text=True)
        assert on.returncode == 0, on.stderr


def test_job_ids_are_spelled_as_the_installed_frappe_spells_them(site):
    # Frappe 15: "{site}::{id}"; Frappe 16: "{site}||{id}" with ":" replaced. Frappe's own
    # create_job_id is the judge.
    frappes_own = switch._originals[(switch.BACKGROUND_JOBS, "create_job_id")]
    for job_id in ("plain", "with:colon"):
        assert frappe_celery.create_job_id(job_id) == frappes_own(job_id)
    job = site.enqueue("frappe.ping", job_id="spelled:id")
    assert job.id == frappes_own("spelled:id")
    assert frappe_celery.get_job("spelled:id").id == job.id


def test_a_bench_worker_preloads_the_database_driver_of_every_sites_db_type(tmp_path):
    """What the worker's main process imports before forking (integrations/frappe/worker.py):
    Frappe's default driver, plus each db_type the bench or a site names."""
    from frappe_celery.bench_files import Bench
    from frappe_celery.integrations.frappe.worker import database_types

    both, broken = tmp_path / "both", tmp_path / "broken"
    sites = {both: {"a.local": json.dumps({"db_type": "postgres"}), "b.local": "{not json"},
             broken: {"b.local": "{not json"}}  # fmt: skip
    for sites_path, configs in sites.items():
        sites_path.mkdir()
        (sites_path / "common_site_config.json").write_text(json.dumps({"db_type": "mariadb"}))
        for site, text in configs.items():
            (sites_path / site).mkdir()
            (sites_path / site / "site_config.json").write_text(text)
    assert database_types(Bench(both)) == {"mariadb", "postgres"}
    assert database_types(Bench(broken)) == {"mariadb"}


def test_a_bench_worker_loads_frappes_own_prefork_modules_before_forking(bench):
    """A Celery worker started in sites/ imports what Frappe imports before forking its own
    workers (integrations/frappe/worker.py), so no pool child pays for it on its first job."""
    script = (
        "import json, sys\n"
        "import frappe_celery\n"
        "frappe_celery.app.loader.import_default_modules()  # what the worker does at start\n"
        "from frappe_celery.integrations.frappe.worker import FRAPPE_PRELOADS\n"
        "print(json.dumps([m for m in FRAPPE_PRELOADS if m not in sys.modules]))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("FRAPPE_CELERY_")}
    out = subprocess.run([bench.python, "-c", script], cwd=bench.sites, env=env,
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []
