"""Scheduler cost: building the schedule for 1000 entries, and one beat tick over 1000 entries.

    python -m benchmarks.bench_scheduler            # prints a table (medians of repeated runs)

Targets from the scheduler issue: build < 200 ms, one tick < 50 ms on this machine. Three ticks
are timed: the common one (nothing due: leader lock renewal, switches, 1000 comparisons), the
first tick of a new leader (loads 1000 last runs), and the worst case (all 1000 entries due at
once: one claim script, then 1000 jobs published pipelined).
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from frappe_celery.broker.signing import generate_key
from frappe_celery.ops.embedded import EmbeddedRedis

ENTRIES = 1000
ROUNDS = 7


def hooks_source() -> str:
    """A hooks module with 1000 entries over every kind of key."""
    simple = ["hourly", "daily_long", "weekly", "monthly_long", "yearly", "hourly_maintenance"]
    events: dict[str, object] = {key: [] for key in simple}
    cron: dict[str, list[str]] = {}
    for i in range(ENTRIES):
        method = f"bench_hooks.noop_{i}"
        if i % 2:
            events[simple[i % len(simple)]].append(method)  # type: ignore[union-attr]
        else:
            cron.setdefault(f"{i % 60} {i % 24} * * *", []).append(method)
    events["cron_long"] = cron
    functions = "\n".join(f"def noop_{i}(): pass" for i in range(ENTRIES))
    return f"scheduler_events = {events!r}\n\n{functions}\n"


def median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


def main() -> int:
    workdir = Path(tempfile.mkdtemp(prefix="bench-scheduler-"))
    # The hooks module defines the 1000 job functions too (a hooks module's own functions may
    # run as jobs).
    (workdir / "bench_hooks.py").write_text(hooks_source())
    sys.path.insert(0, str(workdir))
    # All 1000 due at once would exceed the default max_queued_jobs (500) of a queue.
    config = workdir / "common_site_config.json"
    config.write_text(json.dumps({"max_queued_jobs": 0}))
    with EmbeddedRedis(workdir / "redis") as server:
        os.environ.update(
            {
                "FRAPPE_CELERY_BROKER_URL": server.url,
                "FRAPPE_CELERY_SIGNING_KEY": generate_key(),
                "FRAPPE_CELERY_HOOKS": "bench_hooks",
                "FRAPPE_CELERY_CONFIG": str(config),
            }
        )
        import frappe_celery as frappe
        from frappe_celery.broker import keys
        from frappe_celery.scheduler.beat import FrappeScheduler
        from frappe_celery.scheduler.entries import build_entries, load_events

        settings = frappe.reload_settings()
        events = load_events()
        build = []
        for _ in range(ROUNDS):
            started = time.perf_counter()
            entries = build_entries(events, settings)
            build.append(time.perf_counter() - started)
        assert len(entries) == ENTRIES, len(entries)

        client = frappe.connection.get_redis()
        idle, first, all_due = [], [], []
        for _ in range(ROUNDS):
            client.flushdb()
            scheduler = FrappeScheduler(frappe.app)
            now = time.time()
            started = time.perf_counter()
            scheduler.tick_at(now)  # becomes leader: reads and seeds 1000 last runs
            first.append(time.perf_counter() - started)
            started = time.perf_counter()
            scheduler.tick_at(now + 1)  # the usual tick: nothing due
            idle.append(time.perf_counter() - started)
            # Everything overdue: as after a long downtime, every entry fires once.
            client.hset(keys.SCHEDULER_LAST_RUNS, mapping=dict.fromkeys(scheduler.fields, 0))
            scheduler.next_due = [0.0] * len(scheduler.next_due)
            started = time.perf_counter()
            scheduler.tick_at(now + 2)
            all_due.append(time.perf_counter() - started)
            pending = sum(client.llen(k) for q in ("default", "long") for k in keys.queue_lists(q))
            assert pending == ENTRIES, pending
            scheduler.close()

    rows = [
        ("build the schedule (1000 entries)", median_ms(build), "< 200 ms"),
        ("tick, nothing due (the usual tick)", median_ms(idle), "< 50 ms"),
        ("tick, new leader loads 1000 last runs", median_ms(first), ""),
        ("tick, all 1000 entries due (1000 jobs published)", median_ms(all_due), ""),
    ]
    print(f"scheduler benchmark: {ENTRIES} entries, median of {ROUNDS} runs")
    for name, value, target in rows:
        print(f"  {name:<50} {value:8.2f} ms   {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
