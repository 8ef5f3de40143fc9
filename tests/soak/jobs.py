"""The soak's jobs. Each run appends a start line and an end line to the run log (a file named by
SOAK_RUN_LOG in the worker's environment, so it survives a Redis restart), from which the soak
counts runs and finds overlapping runs of one job id."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from frappe_celery import RetryBackgroundJobError, get_current_job

from ..jobs import CustomRetryError


def _job_id() -> str | None:
    job = get_current_job()
    return job.id if job is not None else None


def _note(event: str, label: str, **extra: object) -> None:
    line = {"event": event, "label": label, "job_id": _job_id(), "pid": os.getpid(),
            "at": time.time(), **extra}  # fmt: skip
    # One small O_APPEND write per line: concurrent runs never interleave within a line.
    with open(os.environ["SOAK_RUN_LOG"], "a") as log:
        log.write(json.dumps(line) + "\n")


def _attempt(label: str) -> int:
    """This run's attempt number for ``label`` (1, 2, ...), counted in a file: a retried job must
    count its attempts even while Redis is down."""
    counter = Path(os.environ["SOAK_RUN_LOG"] + ".attempts") / label
    counter.parent.mkdir(exist_ok=True)
    with open(counter, "ab") as file:
        file.write(b".")
        return file.tell()


def run(label: str, seconds: float, fail: bool = False, retry_failures: int = 0,
        custom_retry: bool = False) -> str:  # fmt: skip
    """Sleep ``seconds``; then fail (``fail``), or raise a retryable error on the first
    ``retry_failures`` attempts, or return ``label``."""
    _note("start", label)
    try:
        time.sleep(seconds)
        if fail:
            raise ValueError(f"{label}: failing as designed")
        attempt = _attempt(label) if retry_failures else 0
        if attempt and attempt <= retry_failures:
            error = CustomRetryError if custom_retry else RetryBackgroundJobError
            raise error(f"{label}: attempt {attempt} fails as designed")
        return label
    finally:
        _note("end", label)


def tick() -> None:
    """The scheduled entry (hooks_soak.py). Its end line is written in a ``finally``, as
    ``run``'s is: a tick the worker terminates when Redis dies (acks-late jobs are terminated on
    connection loss) ended then, and without that line the soak would count it running forever
    and every later tick as overlapping it."""
    _note("start", "tick")
    try:
        time.sleep(0.2)
    finally:
        _note("end", "tick")
