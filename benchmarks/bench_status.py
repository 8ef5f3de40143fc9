"""`frappe-celery status` with 100,000 pending jobs and no worker online.

    python -m benchmarks.bench_status       # ~1 min; prints a table (medians of repeated runs)

The issue's target: under 1 s. Measured both in-process (the data collection `status` does)
and as the whole command in a subprocess (interpreter start and imports included). Also times
`jobs --limit 50` on the same backlog (it must not read the whole queue).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from frappe_celery.broker.signing import generate_key
from frappe_celery.ops.embedded import EmbeddedRedis

PENDING = 100_000
ROUNDS = 5
BATCH = 1000


def fill(frappe: object) -> None:
    """PENDING jobs on the default queue (1 in 10 at_front), published in pipelined batches."""
    from frappe_celery.caller.transaction import transaction_scope

    for start in range(0, PENDING, BATCH):
        with transaction_scope():
            for i in range(start, start + BATCH):
                frappe.enqueue(  # type: ignore[attr-defined]
                    "benchmarks.jobs.noop",
                    queue="default",
                    enqueue_after_commit=True,
                    at_front=(i % 10 == 0),
                    x=i,
                )


def main() -> int:
    workdir = Path(tempfile.mkdtemp(prefix="bench-status-"))
    config = workdir / "common_site_config.json"
    config.write_text(json.dumps({"max_queued_jobs": 0}))
    with EmbeddedRedis(workdir / "redis") as server:
        env = {
            "FRAPPE_CELERY_BROKER_URL": server.url,
            "FRAPPE_CELERY_SIGNING_KEY": generate_key(),
            "FRAPPE_CELERY_ALLOWED_MODULES": "benchmarks",
            "FRAPPE_CELERY_CONFIG": str(config),
        }
        os.environ.update(env)
        import frappe_celery as frappe
        from frappe_celery.cli.status import collect
        from frappe_celery.ops.monitor import list_jobs

        frappe.reload_settings()
        started = time.perf_counter()
        fill(frappe)
        filled = time.perf_counter() - started
        pending = sum(q["pending"] for q in collect()["queues"])
        assert pending == PENDING, pending

        in_process, listing, command = [], [], []
        for _ in range(ROUNDS):
            t = time.perf_counter()
            collect()
            in_process.append(time.perf_counter() - t)
            t = time.perf_counter()
            list_jobs(limit=50)
            listing.append(time.perf_counter() - t)
            t = time.perf_counter()
            subprocess.run(
                [str(Path(sys.executable).parent / "frappe-celery"), "status"],
                env={**os.environ, **env},
                check=True,
                capture_output=True,
                timeout=60,
            )
            command.append(time.perf_counter() - t)

    print(f"status with {PENDING:,} pending jobs, no worker online (median of {ROUNDS} runs)")
    print(f"  filling the queue (pipelined after-commit batches of {BATCH}): {filled:.1f} s")
    rows = [
        ("status: data collection, in-process", in_process),
        ("jobs --limit 50: data collection, in-process", listing),
        ("`frappe-celery status` as a command (with start-up)", command),
    ]
    for name, samples in rows:
        print(f"  {name:<55} {statistics.median(samples) * 1000:8.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
