"""Bulk enqueue: ``frappe_celery.enqueue_many`` against a loop of ``enqueue`` and against RQ's
``Queue.enqueue_many`` (the one bulk path RQ has; Frappe has none).

Run from the repository root (``pip install -e ".[bench]"`` for RQ)::

    python -m benchmarks.bench_enqueue_many            # 1000 jobs, 5 rounds
    python -m benchmarks.bench_enqueue_many --quick    # smoke run: 50 jobs, 2 rounds

One redis-server on a free loopback port, started here and stopped at the end. Each round runs
every variant once, in a rotating order, on a cleared Redis; the figure is jobs/s for N jobs
(the call or loop that publishes them, no worker consuming), reported as min / median / max over
the rounds, and the median ratio of enqueue_many to each other variant. Each variant publishes
the same no-op job with one keyword argument; RQ's jobs carry Frappe's payload (site, user,
method, kwargs), as Frappe's enqueue builds it. Nothing is asserted: numbers for humans.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis

from benchmarks.common import use_broker
from frappe_celery.ops.embedded import EmbeddedRedis

NOOP = "benchmarks.jobs.noop"
QUEUE = "default"
RQ_PAYLOAD = {"site": "bench_site", "user": "Administrator", "method": NOOP, "event": None,
              "job_name": NOOP, "is_async": True}  # fmt: skip

Publish = Callable[[int], Any]


def rq_job(i: int) -> dict[str, Any]:
    """Job i as Frappe's enqueue hands it to RQ (its execute_job, Frappe's payload, its TTLs)."""
    return {"func": "benchmarks.jobs.execute_job", "kwargs": {**RQ_PAYLOAD, "kwargs": {"x": i}},
            "timeout": 300, "result_ttl": 600, "failure_ttl": 7 * 24 * 3600}  # fmt: skip


def frappe_celery_loop(n: int) -> Any:
    import frappe_celery

    return [frappe_celery.enqueue(NOOP, queue=QUEUE, x=i) for i in range(n)]


def frappe_celery_many(n: int) -> Any:
    import frappe_celery

    return frappe_celery.enqueue_many([{"method": NOOP, "queue": QUEUE, "x": i} for i in range(n)])


def rq_many(url: str) -> Publish:
    from rq import Queue

    queue = Queue(QUEUE, connection=redis.Redis.from_url(url))

    def publish(n: int) -> Any:
        jobs = [Queue.prepare_data(**rq_job(i)) for i in range(n)]
        return queue.enqueue_many(jobs)

    return publish


def rq_loop(url: str) -> Publish:
    from rq import Queue

    queue = Queue(QUEUE, connection=redis.Redis.from_url(url))

    def publish(n: int) -> Any:
        return [queue.enqueue_call(**rq_job(i)) for i in range(n)]

    return publish


def run(url: str, n: int, rounds: int) -> dict[str, list[float]]:
    admin = redis.Redis.from_url(url)
    variants: dict[str, Publish] = {
        "frappe_celery.enqueue_many": frappe_celery_many,
        "frappe_celery.enqueue, in a loop": frappe_celery_loop,
    }
    try:
        variants["RQ Queue.enqueue_many"] = rq_many(url)
        variants["RQ enqueue_call, in a loop"] = rq_loop(url)
    except ImportError:
        print("rq is not installed (pip install -e '.[bench]'): RQ variants left out")
    rates: dict[str, list[float]] = {name: [] for name in variants}
    names = list(variants)
    for name in names:  # warm every path once (imports, scripts loaded), untimed
        variants[name](10)
    for round_ in range(rounds):
        order = names[round_ % len(names) :] + names[: round_ % len(names)]
        for name in order:
            admin.flushdb()
            start = time.perf_counter()
            variants[name](n)
            rates[name].append(n / (time.perf_counter() - start))
    return rates


def report(rates: dict[str, list[float]], n: int, rounds: int) -> str:
    many = statistics.median(rates["frappe_celery.enqueue_many"])
    lines = [
        f"{n} jobs per call or loop, {rounds} rounds, variants interleaved; jobs/s",
        "",
        "| variant | min | median | max | enqueue_many / this (median) |",
        "|---|---|---|---|---|",
    ]
    for name, values in rates.items():
        median = statistics.median(values)
        lines.append(
            f"| {name} | {min(values):,.0f} | {median:,.0f} | {max(values):,.0f} | "
            f"{many / median:.2f}x |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--jobs", type=int, default=1000)
    parser.add_argument("-r", "--rounds", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="smoke run: 50 jobs, 2 rounds")
    parser.add_argument("--json", type=Path, help="also write the jobs/s of every round here")
    args = parser.parse_args(argv)
    n, rounds = (50, 2) if args.quick else (args.jobs, args.rounds)
    with tempfile.TemporaryDirectory(prefix="bench-many-") as workdir:
        server = EmbeddedRedis(Path(workdir) / "redis")
        server.start()
        try:
            use_broker(server.url, Path(workdir), 10_000_000)
            import frappe_celery

            frappe_celery.reload_settings()
            rates = run(server.url, n, rounds)
            print(report(rates, n, rounds))
            if args.json:
                args.json.write_text(json.dumps({"jobs": n, "rounds": rounds, "jobs_per_s": rates}))
        finally:
            server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
