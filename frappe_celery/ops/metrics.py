"""Prometheus metrics: what Redis already holds, read at each scrape.

Two sources, neither costing a job anything extra:

* the state the enqueue and worker sides keep anyway, read in a few round trips per scrape:
  queue lists and registries (pending, running, retry countdowns, the dead-letter), pending jobs
  per site (counted inside Redis by pending_sites.lua, at most ``SITE_SCAN_LIMIT`` messages per
  queue), the workers' heartbeats, the leading beat's last pass over each site;
* the counters and histograms the Lua scripts that record a job's steps keep as they go
  (broker/counters.py): outcomes, the wait before the first start, the run time.

So one exporter per bench (per Redis) sees everything, whichever process serves it:
`frappe-celery metrics --port N`, or the ``metrics_port`` setting, which makes the main process
of a worker or beat serve it too (never a pool child). Metric names follow Prometheus' rules:
the ``frappe_celery_`` prefix, base units (seconds), ``_total`` counters. Labels are bounded:
queues and sites are the bench's, methods the first counters.METHOD_LABELS seen (then "other").
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from frappe_celery.broker import counters, keys, scripts
from frappe_celery.broker.workers import read_workers
from frappe_celery.config import get_settings
from frappe_celery.connection import as_text, broker_errors, get_redis
from frappe_celery.errors import BrokerUnreachable
from frappe_celery.records import stuck_margin
from frappe_celery.scheduler import state

logger = logging.getLogger(__name__)

PREFIX = "frappe_celery_"
# How many pending messages of each queue are read to count them by site: what is beyond is
# counted under site "other". pending_sites.lua reads them inside Redis, about 1 ms per 1000.
SITE_SCAN_LIMIT = 10_000
# The port `frappe-celery metrics` serves on by default (celery-exporter has 9808).
DEFAULT_PORT = 9850
# Every metric the endpoint exports (a test checks the dashboard and the alert rules use only
# these), without the prefix: name -> (type, help).
METRICS: dict[str, tuple[str, str]] = {
    "broker_up": ("gauge", "1 when Redis answered this scrape, else 0 (and nothing else is read)"),
    "queue_pending_jobs": ("gauge", "Jobs waiting in the queue, per site"),
    "queue_oldest_pending_age_seconds": (
        "gauge",
        "Age of the oldest job waiting in the queue, per site",
    ),
    "queue_timeout_seconds": ("gauge", "The queue's default job timeout"),
    "queue_started_jobs": ("gauge", "Jobs running from the queue (busy worker slots)"),
    "queue_scheduled_jobs": ("gauge", "Jobs of the queue waiting for a retry countdown"),
    "queue_stuck_jobs": (
        "gauge",
        "Jobs of the queue started and not ended past their hard time limit plus a grace",
    ),
    "dead_letter_jobs": ("gauge", "Failed jobs kept in the queue's failed registry"),
    "workers_online": ("gauge", "Workers with a fresh heartbeat that consume the queue"),
    "worker_slots": ("gauge", "Concurrency summed over the online workers consuming the queue"),
    "jobs_total": ("counter", "Jobs by outcome (finished, failed, timed_out, stopped, ...)"),
    "job_wait_seconds": ("histogram", "Wait from enqueue to a job's first start"),
    "job_run_seconds": ("histogram", "Run time of a job's last attempt, start to end"),
    "scheduler_leader": ("gauge", "1 while a beat holds the leader lock"),
    "scheduler_last_pass_timestamp_seconds": (
        "gauge",
        "When the leading beat last passed over the site",
    ),
    "scheduler_pass_interval_seconds": ("gauge", "The leading beat's seconds between passes"),
    "scheduler_site_active": (
        "gauge",
        "1 when the site's scheduler was active at the last pass, 0 when it was skipped",
    ),
    "scheduler_site_skipped": (
        "gauge",
        "1 for the reason the site was skipped at the last pass (paused, disabled, ...)",
    ),
    "scheduler_due_jobs": (
        "gauge",
        "Scheduled job types due at the last pass (fired then, or kept back: an inactive site, "
        "or their last run still queued or running)",
    ),
    "scheduler_job_lag_seconds": (
        "gauge",
        "How long past its due time each scheduled job type due at the last pass was",
    ),
}


@dataclass
class QueueReading:
    name: str
    timeout: int
    pending: int = 0
    started: int = 0
    scheduled: int = 0
    stuck: int = 0
    dead_letter: int = 0
    # site -> (pending, oldest enqueued_at or None)
    sites: dict[str, tuple[int, float | None]] = field(default_factory=dict)


@dataclass
class Reading:
    """Everything one scrape reads from Redis."""

    at: float
    queues: list[QueueReading]
    workers: list[dict[str, Any]]
    outcomes: dict[bytes, bytes]
    wait: dict[bytes, bytes]
    run: dict[bytes, bytes]
    leader: bool
    passes: dict[str, state.SitePass]


def read(queue_names: list[str] | None = None, site_scan_limit: int = SITE_SCAN_LIMIT) -> Reading:
    """One scrape's reading (of ``queue_names``, by default every queue; pending jobs counted by
    site among the first ``site_scan_limit`` of each queue). Raises BrokerUnreachable."""
    settings = get_settings()
    names = queue_names or list(settings.queues)
    now = time.time()
    client = get_redis()
    queues = [QueueReading(name, settings.queues.get(name, 0)) for name in names]
    separator = "::" if settings.job_id_style == "v15" else "||"
    with broker_errors():
        pipe = client.pipeline(transaction=False)
        for q in queues:
            for key in keys.queue_lists(q.name):
                pipe.llen(key)
            pipe.zcard(keys.started_registry(q.name))
            pipe.zcard(keys.scheduled_registry(q.name))
            # The started registry is scored by each job's hard deadline.
            pipe.zcount(keys.started_registry(q.name), "-inf", now - stuck_margin())
            pipe.zcard(keys.failed_registry(q.name))
        pipe.hgetall(keys.METRICS_OUTCOMES)
        pipe.hgetall(keys.METRICS_LATENCY)
        pipe.hgetall(keys.METRICS_RUN_TIME)
        pipe.exists(keys.SCHEDULER_LEADER)
        replies = iter(pipe.execute())
        for q in queues:
            q.pending = sum(int(next(replies)) for _ in keys.queue_lists(q.name))
            q.started, q.scheduled, q.stuck, q.dead_letter = (int(next(replies)) for _ in range(4))
        outcomes, wait, run = next(replies), next(replies), next(replies)
        leader = bool(next(replies))
        for q in queues:
            if q.pending:
                q.sites = _pending_sites(client, q, separator, site_scan_limit)
    return Reading(now, queues, read_workers(), outcomes, wait, run, leader, state.read_passes())


def _pending_sites(
    client: Any, queue: QueueReading, separator: str, limit: int
) -> dict[str, tuple[int, float | None]]:
    reply = scripts.PENDING_SITES(
        client, keys.queue_lists(queue.name), [limit, separator, keys.JOB_PREFIX]
    )
    read_count, rest = int(reply[0]), reply[1:]
    sites: dict[str, tuple[int, float | None]] = {}
    for i in range(0, len(rest), 3):
        enqueued_at = as_text(rest[i + 2])
        sites[as_text(rest[i])] = (int(rest[i + 1]), float(enqueued_at) if enqueued_at else None)
    # Pushed since the lists were counted, or beyond the scan: the total stays the queue's.
    unread = queue.pending - read_count
    if unread > 0:
        count, oldest_at = sites.get(counters.OTHER, (0, None))
        sites[counters.OTHER] = (count + unread, oldest_at)
    return sites


def families(reading: Reading) -> Iterator[Metric]:
    """The Prometheus metric families of one reading."""

    def gauge(name: str, labels: list[str]) -> GaugeMetricFamily:
        return GaugeMetricFamily(PREFIX + name, METRICS[name][1], labels=labels)

    up = gauge("broker_up", [])
    up.add_metric([], 1)
    yield up

    pending = gauge("queue_pending_jobs", ["queue", "site"])
    oldest = gauge("queue_oldest_pending_age_seconds", ["queue", "site"])
    per_queue = {
        name: gauge(name, ["queue"])
        for name in ("queue_timeout_seconds", "queue_started_jobs", "queue_scheduled_jobs",
                     "queue_stuck_jobs", "dead_letter_jobs", "workers_online", "worker_slots")
    }  # fmt: skip
    for q in reading.queues:
        for site, (count, enqueued_at) in sorted(q.sites.items()):
            pending.add_metric([q.name, site], count)
            if enqueued_at is not None:
                oldest.add_metric([q.name, site], max(0.0, reading.at - enqueued_at))
        online = [w for w in reading.workers if q.name in w.get("queues", [])]
        for name, value in (
            ("queue_timeout_seconds", q.timeout),
            ("queue_started_jobs", q.started),
            ("queue_scheduled_jobs", q.scheduled),
            ("queue_stuck_jobs", q.stuck),
            ("dead_letter_jobs", q.dead_letter),
            ("workers_online", len(online)),
            ("worker_slots", sum(int(w.get("concurrency") or 0) for w in online)),
        ):
            per_queue[name].add_metric([q.name], value)
    yield pending
    yield oldest
    yield from per_queue.values()

    jobs = CounterMetricFamily(
        PREFIX + "jobs", METRICS["jobs_total"][1], labels=["queue", "site", "method", "outcome"]
    )
    for raw, total in sorted(reading.outcomes.items()):
        parts = as_text(raw).split(counters.SEPARATOR)
        if len(parts) == 4:
            jobs.add_metric(parts, int(total))
    yield jobs
    yield _histogram("job_wait_seconds", ["queue", "site"], reading.wait)
    yield _histogram("job_run_seconds", ["queue", "method"], reading.run)
    yield from _scheduler(reading)


def _histogram(name: str, labels: list[str], raw: dict[bytes, bytes]) -> HistogramMetricFamily:
    """A histogram from its hash: per label set, each bucket's own count (made cumulative here)
    and the sum."""
    counts: dict[tuple[str, ...], list[int]] = defaultdict(
        lambda: [0] * (len(counters.BUCKETS) + 1)
    )
    sums: dict[tuple[str, ...], float] = defaultdict(float)
    for field_name, value in raw.items():
        *label_values, slot = as_text(field_name).split(counters.SEPARATOR)
        if len(label_values) != len(labels):
            continue
        key = tuple(label_values)
        if slot == "sum":
            sums[key] = float(value)
        elif slot.isdigit() and 1 <= int(slot) <= len(counters.BUCKETS) + 1:
            counts[key][int(slot) - 1] += int(value)
    family = HistogramMetricFamily(PREFIX + name, METRICS[name][1], labels=labels)
    bounds = [*(_bound(b) for b in counters.BUCKETS), "+Inf"]
    for key in sorted(counts):
        cumulative, buckets = 0, []
        for bound, count in zip(bounds, counts[key], strict=True):
            cumulative += count
            buckets.append((bound, cumulative))
        family.add_metric(list(key), buckets, sums.get(key, 0.0))
    return family


def _bound(value: float) -> str:
    return str(int(value)) if value == int(value) else str(value)


def _scheduler(reading: Reading) -> Iterator[Metric]:
    def gauge(name: str, labels: list[str]) -> GaugeMetricFamily:
        return GaugeMetricFamily(PREFIX + name, METRICS[name][1], labels=labels)

    leader = gauge("scheduler_leader", [])
    leader.add_metric([], 1 if reading.leader else 0)
    yield leader
    last = gauge("scheduler_last_pass_timestamp_seconds", ["site"])
    interval = gauge("scheduler_pass_interval_seconds", ["site"])
    active = gauge("scheduler_site_active", ["site"])
    skipped = gauge("scheduler_site_skipped", ["site", "reason"])
    due = gauge("scheduler_due_jobs", ["site"])
    lag = gauge("scheduler_job_lag_seconds", ["site", "job_type"])
    for site, passed in sorted(reading.passes.items()):
        last.add_metric([site], passed.at)
        interval.add_metric([site], passed.interval)
        active.add_metric([site], 1 if passed.state == "active" else 0)
        for reason in state.SITE_STATES[1:]:
            skipped.add_metric([site, reason], 1 if passed.state == reason else 0)
        due.add_metric([site], len(passed.lags))
        for job_type, seconds in sorted(passed.lags.items()):
            lag.add_metric([site, job_type], seconds)
    yield from (last, interval, active, skipped, due, lag)


class JobsCollector(Collector):
    """Reads Redis at each scrape. With Redis unreachable, only ``broker_up 0``."""

    def collect(self) -> Iterator[Metric]:
        try:
            reading = read()
        except BrokerUnreachable as exc:
            logger.warning("metrics: %s", exc)
            down = GaugeMetricFamily(PREFIX + "broker_up", METRICS["broker_up"][1])
            down.add_metric([], 0)
            yield down
            return
        yield from families(reading)


def registry() -> CollectorRegistry:
    """A registry of the jobs' metrics only (not this process's own: one exporter per bench
    speaks for the bench, whichever process serves it)."""
    found = CollectorRegistry(auto_describe=False)
    found.register(JobsCollector())
    return found


def serve(port: int, address: str = "127.0.0.1") -> None:
    """Serve /metrics on ``address:port`` in a daemon thread (prometheus_client's). Raises
    OSError when the port is taken."""
    start_http_server(port, addr=address, registry=registry())


def serve_beside(process: str) -> None:
    """The ``metrics_port`` setting: serve from this worker's or beat's main process. The port
    is the bench's: the first process to bind it serves, the others say so and go on."""
    port = get_settings().metrics_port
    if not port:
        return
    address = get_settings().metrics_address
    try:
        serve(port, address)
    except OSError as exc:
        logger.info(
            "metrics: %s:%s is taken (%s); another process of this bench serves them",
            address, port, exc,
        )  # fmt: skip
        return
    logger.info("metrics: this %s serves http://%s:%s/metrics", process, address, port)


# The files shipped beside this module (also in docs/monitoring/): name -> file.
SHIPPED = {"alerts": "alerts.yml", "dashboard": "dashboard.json"}


def shipped_file(name: str) -> str:
    """The text of a shipped monitoring file: the alert rules or the Grafana dashboard."""
    from importlib.resources import files

    return (files("frappe_celery.ops") / "monitoring" / SHIPPED[name]).read_text("utf-8")


def render() -> str:
    """The exposition text of one scrape, as the endpoint serves it."""
    from prometheus_client import generate_latest

    return generate_latest(registry()).decode()


__all__ = ["METRICS", "JobsCollector", "read", "registry", "render", "serve", "serve_beside"]
