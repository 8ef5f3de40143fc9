"""The job counters and histograms kept in Redis by the Lua scripts that record each job's
steps, so that counting costs no round trip of its own: enqueue.lua counts deduplicated and
refused enqueues, start.lua the wait from enqueue to a job's first start, finish.lua, requeue.lua,
cancel.lua and reap.lua each job's outcome and run time. ops/metrics.py reads them for
Prometheus.

What a label may hold is bounded, so the series stay few whatever the jobs: queues and sites are
the bench's; a method has a label of its own only among the first METHOD_LABELS methods seen
(every other one counts as OTHER). First seen, not top by count: a label, once given, stays, so a
counter never moves from one series to another between two scrapes.
"""

from __future__ import annotations

from enum import Enum

from frappe_celery.broker import keys

# Upper bounds (seconds) of the histograms' buckets, for both the wait before the first start and
# the run time: from a short-queue job's hundredths of a second up to a long-queue hour.
BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
           1800.0, 3600.0)  # fmt: skip

# How many methods get a label of their own.
METHOD_LABELS = 100
OTHER = "other"

# Between the labels in a counter's hash field (a unit separator: in no queue, site or method).
SEPARATOR = "\x1f"

# The exception classes a time limit raises: a failure by one of them counts as timed out.
# Celery's hard and soft limits (the worker records a hard kill as TimeLimitExceeded), and
# Frappe's own (raised by its job timeout handler under RQ, kept by apps that raise it).
TIMEOUT_EXCEPTIONS = ("TimeLimitExceeded", "SoftTimeLimitExceeded", "JobTimeoutException")


class Outcome(str, Enum):
    """What one job came to, counted once each (mutually exclusive)."""

    FINISHED = "finished"
    FAILED = "failed"  # raised (not a time limit); also a message refused as malformed
    TIMED_OUT = "timed_out"  # failed by a time limit (TIMEOUT_EXCEPTIONS)
    STOPPED = "stopped"  # killed while running (stop, the Desk's Stop)
    CANCELED = "canceled"  # taken off its queue before it ran
    RETRIED = "retried"  # an attempt that raised a retryable error: the job runs again
    ABANDONED = "abandoned"  # failed by the reaper: its worker and its message are gone
    DEDUPLICATED = "deduplicated"  # an enqueue not published: its id was queued or running
    OVERLOADED = "overloaded"  # an enqueue refused: its queue held max_queued_jobs


def lua_constants() -> str:
    """The Lua lines lib_metrics.lua starts with: these constants and the key names, from here
    and keys.py, so that they are written in one place."""

    def text(value: str) -> str:
        return '"' + "".join(f"\\{ord(c):03d}" for c in value) + '"'

    lines = [
        f"local METRICS_OUTCOMES = {text(keys.METRICS_OUTCOMES)}",
        f"local METRICS_LATENCY = {text(keys.METRICS_LATENCY)}",
        f"local METRICS_RUN_TIME = {text(keys.METRICS_RUN_TIME)}",
        f"local METRICS_METHODS = {text(keys.METRICS_METHODS)}",
        f"local METRICS_SEP = {text(SEPARATOR)}",
        f"local METRICS_OTHER = {text(OTHER)}",
        f"local METRICS_METHOD_LABELS = {METHOD_LABELS}",
        "local METRICS_BUCKETS = {" + ", ".join(repr(b) for b in BUCKETS) + "}",
        "local METRICS_TIMEOUTS = {"
        + ", ".join(f"[{text(name)}] = true" for name in TIMEOUT_EXCEPTIONS)
        + "}",
    ]
    return "\n".join(lines) + "\n"
