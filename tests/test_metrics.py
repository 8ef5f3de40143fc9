"""Prometheus metrics (ops/metrics.py): what the endpoint exports after real jobs ran on real
workers, the same numbers through a real Prometheus server scraping the endpoint, the endpoint
served beside a worker, and the scheduler's pass over each site."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

import frappe_celery as frappe
from frappe_celery.broker.workers import read_workers
from frappe_celery.errors import QueueOverloaded
from frappe_celery.ops import metrics
from frappe_celery.ops.embedded import free_port
from frappe_celery.scheduler import state

from .support.broker_state import wait_final
from .support.cli import CLI, cli_env, ok
from .support.processes import ROOT, stop_process, wait_for
from .support.settings import TEST_CONFIG, enqueuing_as, settings_env


def scrape() -> dict[str, list[tuple[dict[str, str], float]]]:
    """One scrape through the command, as Prometheus reads it: sample name -> [(labels, value)]."""
    text = ok("metrics", "--once").output
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((sample.labels, sample.value))
    return samples


def value(samples: dict[str, Any], name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels``."""
    return sum(
        v for found, v in samples.get(name, []) if all(found.get(k) == w for k, w in labels.items())
    )


def test_every_outcome_and_both_histograms_count_the_jobs_that_ran(r, shared_worker, tmp_path):
    ran = [frappe.enqueue("tests.jobs.add", queue="short", a=i, b=1) for i in range(3)]
    ran.append(frappe.enqueue("tests.jobs.fail", queue="short", message="boom"))
    # Its soft time limit (1 s) raises inside it: a failure by a time limit.
    ran.append(
        frappe.enqueue("tests.jobs.sleep_then_record", queue="short", timeout=1,
                       key="test:metrics:slow", seconds=3)
    )  # fmt: skip
    # Fails once, retried (1 s later), then finishes: one retry, one finish.
    ran.append(frappe.enqueue("tests.jobs.flaky", queue="short", key="test:metrics:flaky",
                              failures=1))  # fmt: skip
    assert [wait_final(job) for job in ran] == ["finished"] * 3 + ["failed", "failed", "finished"]

    # Enqueue-time outcomes, on the batch queue nobody consumes.
    waiting = frappe.enqueue("tests.jobs.add", queue="batch", job_id="m-dedup", deduplicate=True,
                             a=1, b=1)  # fmt: skip
    assert (
        frappe.enqueue(
            "tests.jobs.add", queue="batch", job_id="m-dedup", deduplicate=True, a=1, b=1
        )
        is None
    )
    waiting.cancel()
    config = tmp_path / "overloaded.json"
    config.write_text(json.dumps({**TEST_CONFIG, "max_queued_jobs": 1}))
    with settings_env(FRAPPE_CELERY_CONFIG=str(config)):
        frappe.enqueue("tests.jobs.add", queue="batch", a=1, b=1)
        with pytest.raises(QueueOverloaded):
            frappe.enqueue("tests.jobs.add", queue="batch", a=2, b=2)

    samples = scrape()
    jobs = "frappe_celery_jobs_total"
    assert value(samples, jobs, method="tests.jobs.add", outcome="finished") == 3
    assert value(samples, jobs, method="tests.jobs.flaky", outcome="finished") == 1
    assert value(samples, jobs, method="tests.jobs.flaky", outcome="retried") == 1
    assert value(samples, jobs, method="tests.jobs.fail", outcome="failed") == 1
    assert value(samples, jobs, method="tests.jobs.sleep_then_record", outcome="timed_out") == 1
    assert value(samples, jobs, outcome="failed") == 1  # the timed-out one is not also failed
    assert value(samples, jobs, queue="batch", outcome="deduplicated") == 1
    assert value(samples, jobs, queue="batch", outcome="canceled") == 1
    assert value(samples, jobs, queue="batch", outcome="overloaded") == 1
    assert value(samples, jobs, site="test.site") == value(samples, jobs)

    # One wait per job that started (a retry's second start is not a new wait); one run time
    # per job that ended running.
    assert value(samples, "frappe_celery_job_wait_seconds_count", queue="short") == 6
    assert value(samples, "frappe_celery_job_wait_seconds_count", queue="batch") == 0
    assert value(samples, "frappe_celery_job_run_seconds_count", queue="short") == 6
    slow = {"queue": "short", "method": "tests.jobs.sleep_then_record"}
    assert value(samples, "frappe_celery_job_run_seconds_sum", **slow) >= 1.0
    # Cumulative buckets: none of the slow job's runs within 0.5 s, all within +Inf.
    assert value(samples, "frappe_celery_job_run_seconds_bucket", le="0.5", **slow) == 0
    assert value(samples, "frappe_celery_job_run_seconds_bucket", le="+Inf", **slow) == 1


def test_pending_jobs_and_the_oldest_age_are_per_queue_and_site(r, shared_worker):
    for i in range(3):
        frappe.enqueue("tests.jobs.add", queue="batch", a=i, b=0)
    with enqueuing_as(site="other.site"):
        for i in range(2):
            frappe.enqueue("tests.jobs.add", queue="batch", a=i, b=0, at_front=True)
    time.sleep(1.1)
    # The `r` fixture cleared the heartbeats: the shared worker writes its own every 5 s.
    wait_for(read_workers, 10)

    samples = scrape()
    pending = "frappe_celery_queue_pending_jobs"
    assert value(samples, pending, queue="batch", site="test.site") == 3
    assert value(samples, pending, queue="batch", site="other.site") == 2
    assert value(samples, pending, queue="short") == 0
    oldest = "frappe_celery_queue_oldest_pending_age_seconds"
    assert value(samples, oldest, queue="batch", site="test.site") >= 1.0
    assert value(samples, oldest, queue="batch", site="other.site") >= 1.0
    assert value(samples, "frappe_celery_queue_timeout_seconds", queue="batch") == 300
    # The shared worker consumes short, default and long with 2 slots; nobody consumes batch.
    assert value(samples, "frappe_celery_workers_online", queue="short") >= 1
    assert value(samples, "frappe_celery_worker_slots", queue="short") >= 2
    assert value(samples, "frappe_celery_workers_online", queue="batch") == 0
    assert value(samples, "frappe_celery_broker_up") == 1

    # Past the scan limit, the rest is counted under site "other": the queue's total holds.
    reading = metrics.read(["batch"], site_scan_limit=2)
    (batch,) = reading.queues
    assert batch.pending == 5
    assert sum(count for count, _ in batch.sites.values()) == 5
    assert batch.sites["other"][0] == 3


def test_a_real_prometheus_scraping_the_endpoint_counts_every_job_run(r, shared_worker, tmp_path):
    binary = shutil.which("prometheus")
    if binary is None:
        if os.environ.get("CI"):
            pytest.fail("prometheus is not installed (Debian's package; .ci/run installs it)")
        pytest.skip("prometheus is not installed (apt-get install prometheus)")
    port, prom_port = free_port(), free_port()
    exporter = subprocess.Popen(
        [CLI, "metrics", "--port", str(port)], cwd=ROOT, env=cli_env(),
        stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        "scrape_configs:\n"
        f"  - job_name: frappe_celery\n    static_configs: [{{targets: ['127.0.0.1:{port}']}}]\n"
    )
    log = (tmp_path / "prometheus.log").open("w")
    server = subprocess.Popen(
        [binary, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
         f"--web.listen-address=127.0.0.1:{prom_port}"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    api = f"http://127.0.0.1:{prom_port}/api/v1/query?"

    def query(expr: str) -> float | None:
        try:
            with urllib.request.urlopen(
                api + urllib.parse.urlencode({"query": expr}), timeout=5
            ) as reply:
                result = json.loads(reply.read())["data"]["result"]
        except OSError:
            return None
        return float(result[0]["value"][1]) if result else None

    try:
        wait_for(lambda: query("frappe_celery_broker_up") == 1.0, 60, interval=0.5)
        jobs = [frappe.enqueue("tests.jobs.add", queue="short", a=i, b=i) for i in range(20)]
        assert [wait_final(job) for job in jobs] == ["finished"] * 20
        wait_for(lambda: query("sum(frappe_celery_job_wait_seconds_count)") == 20.0, 30, 0.5)
        assert query('sum(frappe_celery_jobs_total{outcome="finished"})') == 20.0
        assert query("sum(frappe_celery_job_run_seconds_count)") == 20.0
        p95 = query("histogram_quantile(0.95, sum by (le) (frappe_celery_job_wait_seconds_bucket))")
        assert p95 is not None and 0 < p95 <= 60
    finally:
        stop_process(server)
        stop_process(exporter)
        log.close()


def test_a_worker_serves_the_metrics_with_the_metrics_port_setting(r, start_worker):
    port = free_port()
    first = start_worker("short", FRAPPE_CELERY_METRICS_PORT=str(port))
    url = f"http://127.0.0.1:{port}/metrics"

    def served() -> str | None:
        try:
            with urllib.request.urlopen(url, timeout=5) as reply:
                return str(reply.read().decode())
        except OSError:
            return None

    text = wait_for(served, 30)
    assert "frappe_celery_broker_up 1.0" in str(text)
    # A second process of the bench finds the port taken, says so and runs on.
    second = start_worker("short", FRAPPE_CELERY_METRICS_PORT=str(port))
    wait_for(lambda: "another process of this bench serves them" in second.output(), 20)
    assert second.process.poll() is None and first.process.poll() is None
    job = frappe.enqueue("tests.jobs.add", queue="short", a=1, b=2)
    assert wait_final(job) == "finished"


def test_the_scheduler_pass_says_when_each_site_was_seen_and_why_it_was_skipped(
    r, shared_worker, start_beat
):
    start_beat(FRAPPE_CELERY_HOOKS="tests.jobs.hooks,tests.jobs.hooks_beat")
    wait_for(lambda: "test.site" in state.read_passes(), 30)
    samples = scrape()
    assert value(samples, "frappe_celery_scheduler_leader") == 1
    assert value(samples, "frappe_celery_scheduler_site_active", site="test.site") == 1
    assert value(samples, "frappe_celery_scheduler_pass_interval_seconds", site="test.site") == 10
    assert (
        time.time()
        - value(samples, "frappe_celery_scheduler_last_pass_timestamp_seconds", site="test.site")
        < 15
    )

    state.set_switch("paused", True, ["test.site"])
    try:
        # The next pass finds the site paused, its every-2-s entry due and not fired.
        wait_for(lambda: state.read_passes()["test.site"].state == "paused", 15)
        wait_for(lambda: state.read_passes()["test.site"].lags, 15)
        samples = scrape()
    finally:
        state.set_switch("paused", False, ["test.site"])
    assert value(samples, "frappe_celery_scheduler_site_active", site="test.site") == 0
    assert value(samples, "frappe_celery_scheduler_site_skipped", site="test.site",
                 reason="paused") == 1  # fmt: skip
    assert value(samples, "frappe_celery_scheduler_site_skipped", site="test.site",
                 reason="disabled") == 0  # fmt: skip
    assert value(samples, "frappe_celery_scheduler_due_jobs", site="test.site") >= 1
    assert value(samples, "frappe_celery_scheduler_job_lag_seconds", site="test.site") > 0


def test_with_redis_down_a_scrape_says_broker_up_0_and_nothing_else(redis_server):
    with settings_env(FRAPPE_CELERY_BROKER_URL=f"redis://127.0.0.1:{free_port()}/0"):
        text = metrics.render()
    names = {s.name for f in text_string_to_metric_families(text) for s in f.samples}
    assert names == {"frappe_celery_broker_up"}
    assert "frappe_celery_broker_up 0.0" in text


def test_the_endpoint_exports_exactly_the_documented_metric_names(r, shared_worker):
    frappe.enqueue("tests.jobs.add", queue="batch", a=1, b=1)
    text = metrics.render()
    exported = {f.name for f in text_string_to_metric_families(text)}
    documented = {metrics.PREFIX + name.removesuffix("_total") for name in metrics.METRICS}
    assert exported == documented
