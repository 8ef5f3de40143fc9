"""Frappe's retention rules: results 600 s, failures 7 days, newest N failed jobs per queue,
and the max_queued_jobs backpressure, each configurable with Frappe's names."""

from __future__ import annotations

import json
import os
import signal
import time

import pytest

import frappe_celery as frappe
from frappe_celery import records
from frappe_celery.broker import keys
from frappe_celery.broker.workers import GONE_WORKER_KEPT

from .support.processes import wait_for
from .support.settings import TEST_CONFIG


@pytest.fixture
def config_with(tmp_path):
    """Write a config file = the test config + overrides; return the env that selects it.
    Settings of this process are restored afterwards."""
    original = os.environ["FRAPPE_CELERY_CONFIG"]

    def make(**overrides: object) -> dict[str, str]:
        path = tmp_path / "override_config.json"
        path.write_text(json.dumps({**TEST_CONFIG, **overrides}))
        return {"FRAPPE_CELERY_CONFIG": str(path)}

    yield make
    os.environ["FRAPPE_CELERY_CONFIG"] = original
    frappe.reload_settings()


def test_failed_registry_keeps_only_the_newest_failed_jobs(r, start_worker, config_with):
    start_worker("reports", concurrency=1, **config_with(rq_failed_jobs_limit=3))
    jobs = [
        frappe.enqueue("tests.jobs.fail", queue="reports", message=f"boom {i}") for i in range(5)
    ]
    wait_for(lambda: all(job.get_status() is None or job.is_failed for job in jobs[2:]), 30)
    wait_for(
        lambda: (
            r.zcard(keys.failed_registry("reports")) == 3 and not r.exists(keys.job(jobs[1].id))
        ),
        30,
    )

    kept = [member.decode() for member in r.zrange(keys.failed_registry("reports"), 0, -1)]
    assert kept == [job.id for job in jobs[2:]]
    # The trimmed failures are gone entirely, traceback included; the newest keep theirs.
    assert not r.exists(keys.job(jobs[0].id)) and not r.exists(keys.job(jobs[1].id))
    assert "boom 4" in jobs[4].exc_info


def test_result_and_failure_ttls_follow_frappes_config_names(r, start_worker, config_with):
    start_worker(
        "reports", concurrency=1, **config_with(rq_results_ttl=42, rq_job_failure_ttl=4242)
    )
    ok = frappe.enqueue("tests.jobs.add", queue="reports", a=1, b=1)
    bad = frappe.enqueue("tests.jobs.fail", queue="reports", message="x")
    wait_for(lambda: ok.is_finished and bad.is_failed, 30)
    assert 30 < r.ttl(keys.job(ok.id)) <= 42
    assert 4000 < r.ttl(keys.job(bad.id)) <= 4242


def test_max_queued_jobs_is_configurable(r, config_with):
    os.environ.update(config_with(max_queued_jobs=3))
    frappe.reload_settings()
    for i in range(3):
        frappe.enqueue("tests.jobs.add", queue="batch", a=i, b=i)
    with pytest.raises(frappe.QueueOverloaded, match="batch") as caught:
        frappe.enqueue("tests.jobs.add", queue="batch", a=9, b=9, job_id="one-too-many")
    assert (caught.value.pending, caught.value.limit) == (3, 3)
    assert frappe.get_job("one-too-many") is None


def test_max_queued_jobs_zero_disables_the_check(r, config_with):
    os.environ.update(config_with(max_queued_jobs=0))
    frappe.reload_settings()
    for i in range(600):
        frappe.enqueue("tests.jobs.add", queue="batch", a=i, b=i)
    assert sum(r.llen(key) for key in keys.queue_lists("batch")) == 600


def test_a_job_given_its_own_retention_keeps_it_when_it_ends(r, shared_worker):
    # RQ's per-job result_ttl / failure_ttl (Frappe passes frappe.conf's with every job).
    key, release = "test:retention:own", "test:retention:own:release"
    r.delete(key, release)
    held = frappe.enqueue("tests.jobs.wait_for_release", queue="short", key=key,
                          release_key=release)  # fmt: skip
    failing = frappe.enqueue("tests.jobs.fail", queue="reports", message="never runs")

    assert held.keep_for(results_ttl=4321) and failing.keep_for(failure_ttl=777)
    assert (held.result_ttl, failing.failure_ttl) == (4321, 777)
    r.set(release, 1)
    wait_for(lambda: held.is_finished, 30)
    failing.cancel()  # a canceled job keeps its failure TTL too

    assert 4300 < r.ttl(keys.job(held.id)) <= 4321
    assert 700 < r.ttl(keys.job(failing.id)) <= 777
    # A job that ended before it was given its own retention gets it then.
    late = frappe.enqueue("tests.jobs.add", queue="short", a=1, b=1)
    wait_for(lambda: late.is_finished, 30)
    assert late.keep_for(results_ttl=999)
    assert 990 < r.ttl(keys.job(late.id)) <= 999
    # A vanished job is not brought back by it.
    r.delete(keys.job(held.id))
    assert held.keep_for(results_ttl=5) is False and not r.exists(keys.job(held.id))


@pytest.mark.parametrize("value", [0, -1, True, "60"])
def test_own_retention_must_be_a_positive_number_of_seconds(r, value):
    job = frappe.enqueue("tests.jobs.add", queue="reports", a=1, b=1)
    with pytest.raises(frappe.InvalidArgumentError) as raised:
        job.keep_for(results_ttl=value)
    assert raised.value.argument == "results_ttl"
    job.cancel()


def test_canceled_registry_keeps_only_the_newest_canceled_jobs(r, config_with):
    os.environ.update(config_with(rq_failed_jobs_limit=3))
    frappe.reload_settings()
    registry = keys.canceled_registry("batch")
    # An entry past the longest failure TTL points at an expired record.
    r.zadd(registry, {"long-expired": 1.0})
    jobs = [frappe.enqueue("tests.jobs.add", queue="batch", a=i, b=i) for i in range(5)]
    for job in jobs:
        job.cancel()

    kept = [member.decode() for member in r.zrange(registry, 0, -1)]
    assert kept == [job.id for job in jobs[2:]]
    # The trimmed records are gone with the copies of their messages; the kept ones keep theirs
    # (a retry enqueues the arguments again).
    assert not r.exists(keys.job(jobs[0].id)) and not r.exists(keys.job(jobs[1].id))
    assert r.hget(keys.job(jobs[4].id), "message")


def test_jobs_failed_by_the_reaper_are_trimmed_as_failed_jobs_are(r, start_worker, config_with):
    env = config_with(rq_failed_jobs_limit=2)
    os.environ.update(env)
    frappe.reload_settings()
    registry = keys.failed_registry("reports")
    worker = start_worker("reports", concurrency=1, **env)
    failed = [frappe.enqueue("tests.jobs.fail", queue="reports", message=f"boom {i}")
              for i in range(2)]  # fmt: skip
    wait_for(lambda: all(job.is_failed for job in failed), 30)
    r.zadd(registry, {"long-expired": 1.0})
    # A job whose worker is killed and whose message the broker lost: the reaper fails it.
    stuck = frappe.enqueue("tests.jobs.tx.run_once", queue="reports", timeout=1,
                           key="test:retention:stuck", seconds=30)  # fmt: skip
    wait_for(lambda: stuck.get_status() == "started", 20)
    os.killpg(worker.process.pid, signal.SIGKILL)
    worker.process.wait(10)
    r.delete(keys.KOMBU_UNACKED)
    # Past its hard deadline (timeout 1 + grace 2): the first look notes the message missing,
    # the next one after lost_message_grace (1 s) fails the job.
    time.sleep(3.5)
    records.reap_abandoned()
    time.sleep(1.2)
    records.reap_abandoned()

    assert stuck.get_status() == "failed"
    kept = [member.decode() for member in r.zrange(registry, 0, -1)]
    assert kept == [failed[1].id, stuck.id]
    assert not r.exists(keys.job(failed[0].id))


def test_the_heartbeat_of_a_worker_gone_for_a_day_is_pruned(r, start_worker):
    # Left behind by workers killed without their shutdown (SIGKILL), under names no worker
    # takes again.
    now = time.time()
    for node, seen in (("celery@killed-yesterday", now - GONE_WORKER_KEPT - 60),
                       ("celery@killed-an-hour-ago", now - 3600)):  # fmt: skip
        r.hset(keys.WORKERS, node, json.dumps({"node": node, "last_heartbeat": seen}))
    start_worker("reports", concurrency=1)

    wait_for(lambda: not r.hexists(keys.WORKERS, "celery@killed-yesterday"), 30)
    assert r.hexists(keys.WORKERS, "celery@killed-an-hour-ago")


def test_a_failed_jobs_traceback_is_capped_keeping_its_start_and_end(r, shared_worker):
    job = frappe.enqueue("tests.jobs.fail_at_length", queue="short", size=10 * 1024 * 1024)
    wait_for(lambda: job.is_failed, 60)

    kept = r.hget(keys.job(job.id), "exc_info")
    assert len(kept) <= records.MAX_EXC_INFO_BYTES
    text = kept.decode()
    assert text.startswith("Traceback (most recent call last):")
    assert "ValueError: start xxx" in text and text.rstrip().endswith("xxx the end")
    assert "bytes cut" in text
    assert job.get_status() == "failed" and r.hget(keys.job(job.id), "exc_type") == b"ValueError"
