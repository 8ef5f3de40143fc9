"""Job functions the test workers run. Each reports what it saw to Redis, under keys the test
chooses, so a test can assert what really happened inside a worker process."""

from __future__ import annotations

import gc
import json
import os
import select
import time
from pathlib import Path
from typing import Any

import redis
from celery.exceptions import SoftTimeLimitExceeded

import frappe_celery
from frappe_celery import JobContext, RetryBackgroundJobError
from frappe_celery.connection import get_redis, make_client

_client: redis.Redis | None = None


def conn() -> redis.Redis:
    global _client
    if _client is None:
        # make_client: the broker URL may be rediss:// or sentinel:// (test_tls, test_sentinel).
        _client = make_client(
            os.environ["FRAPPE_CELERY_BROKER_URL"], os.environ.get("FRAPPE_CELERY_SENTINEL_MASTER")
        )
    return _client


def push(key: str, value: Any) -> None:
    conn().rpush(key, json.dumps(value, default=str))


def add(a: int, b: int) -> int:
    return a + b


def _private_add(a: int, b: int) -> int:
    """A single-underscore job function, as Frappe's bulk_update._bulk_action."""
    return a + b


def record(key: str, value: Any = None) -> str:
    push(key, value)
    return f"recorded {value}"


def record_pid(key: str) -> None:
    push(key, os.getpid())


def describe(key: str, **kwargs: Any) -> dict[str, Any]:
    """Record the type and value of every argument, as the worker received them."""
    seen = {name: [type(value).__name__, str(value)] for name, value in kwargs.items()}
    push(key, seen)
    return kwargs


def only_a(a: int) -> int:
    return a


def sleep_then_record(key: str, seconds: float) -> None:
    time.sleep(seconds)
    push(key, "done")


def sleep_then_return(seconds: float, value: Any) -> Any:
    time.sleep(seconds)
    return value


def catch_soft_timeout(key: str, seconds: float) -> None:
    try:
        time.sleep(seconds)
    except SoftTimeLimitExceeded:
        push(key, "soft time limit seen")
        raise


def ignore_soft_timeout(key: str, seconds: float) -> None:
    """Swallow the soft time limit and keep running: only the hard limit can stop this."""
    deadline = time.monotonic() + seconds
    while True:
        # The whole loop inside the try: the signal may land between two sleeps.
        try:
            while time.monotonic() < deadline:
                time.sleep(0.1)
            break
        except SoftTimeLimitExceeded:
            push(key, "ignored soft time limit")
    push(key, "finished anyway")


def fail(message: str) -> None:
    raise ValueError(message)


def fail_at_length(size: int) -> None:
    """Raise a ValueError whose message is ``size`` characters between "start" and "the end"."""
    raise ValueError("start " + "x" * size + " the end")


def fail_after(message: str, seconds: float) -> None:
    time.sleep(seconds)
    raise ValueError(message)


def flaky(key: str, failures: int) -> str:
    """Fail with RetryBackgroundJobError ``failures`` times, then succeed."""
    attempt = int(conn().incr(key))
    push(key + ":attempts", {"attempt": attempt, "at": time.time()})
    if attempt <= failures:
        raise RetryBackgroundJobError(f"attempt {attempt} failed")
    return f"succeeded on attempt {attempt}"


class CustomRetryError(Exception):
    pass


def flaky_custom(key: str, failures: int) -> str:
    attempt = int(conn().incr(key))
    if attempt <= failures:
        raise CustomRetryError(f"attempt {attempt} failed")
    return f"succeeded on attempt {attempt}"


def on_success_record(job: Any, connection: Any, result: Any, *args: Any, **kwargs: Any) -> None:
    push(
        "test:callbacks",
        {
            "callback": "on_success",
            "job_id": job.id,
            "status": str(job.get_status()),
            "result": result,
            "connection": type(connection).__name__,
        },
    )


def on_failure_record(job: Any, connection: Any, type_: Any, value: Any, traceback: Any) -> None:
    push(
        "test:callbacks",
        {
            "callback": "on_failure",
            "job_id": job.id,
            "status": str(job.get_status()),
            "type": type_.__name__,
            "value": str(value),
        },
    )


def raising_callback(*args: Any, **kwargs: Any) -> None:
    raise RuntimeError("callback blew up")


# -- hooks and context (configured by tests/jobs/hooks.py and FRAPPE_CELERY_JOB_CONTEXT) --

CONTEXT_EVENTS: list[str] = []
CURRENT_USER: str | None = None


class RecordingContext(JobContext):
    """Remembers what the worker did around the job, for the trace below."""

    def current_user(self) -> str | None:
        return CURRENT_USER

    def setup(self, site: str, user: str | None) -> None:
        CONTEXT_EVENTS.clear()
        CONTEXT_EVENTS.append(f"setup:{site}:{user}")

    def commit(self) -> None:
        CONTEXT_EVENTS.append("commit")

    def rollback(self) -> None:
        CONTEXT_EVENTS.append("rollback")


def hook_before(method: str, kwargs: dict[str, Any], transaction_type: str) -> None:
    trace = kwargs.get("trace_key")
    if trace:
        for event in CONTEXT_EVENTS:
            push(trace, event)
        push(trace, f"before_job:{method}:{transaction_type}")


def hook_after(method: str, kwargs: dict[str, Any], result: Any) -> None:
    trace = kwargs.get("trace_key")
    if trace:
        for event in CONTEXT_EVENTS[1:]:
            push(trace, event)
        push(trace, f"after_job:{result}")


def traced(trace_key: str, should_fail: bool = False) -> str:
    push(trace_key, "method")
    if should_fail:
        raise ValueError("traced job failed")
    return "traced-result"


class Document:
    """What a document loader returns in the enqueue_doc test."""

    def __init__(self, doctype: str, name: str | None) -> None:
        self.doctype = doctype
        self.name = name

    def submit_later(self, key: str, note: str) -> str:
        push(key, [self.doctype, self.name, note])
        return f"{self.doctype}/{self.name}: {note}"


def load_document(doctype: str, name: str | None) -> Document:
    return Document(doctype, name)


class Holder:
    @staticmethod
    def static_job(key: str) -> None:
        push(key, "static")


# -- used by tests/test_enqueue_contract.py --


def wait_for_release(key: str, release_key: str, limit: float = 30) -> str:
    """Record "started", then wait (at most ``limit`` s) until the test sets ``release_key``."""
    push(key, "started")
    deadline = time.monotonic() + limit
    while not conn().exists(release_key) and time.monotonic() < deadline:
        time.sleep(0.05)
    push(key, "released")
    return "released"


def echo_kwargs(**kwargs: Any) -> dict[str, Any]:
    """Return every keyword argument it was given (writes nothing)."""
    return kwargs


# -- added for tests/test_worker_execution.py ---------------------------------------------------

# A standard-library function re-exported from an allowed module: a message naming
# "tests.jobs.reexported_system" must still be refused (it is os.system, defined in posix).
reexported_system = os.system


def flaky_context(key: str, failures: int) -> str:
    """Like flaky, and record the context (site and user) each attempt was set up with."""
    attempt = int(conn().incr(key))
    push(key + ":context", CONTEXT_EVENTS[0] if CONTEXT_EVENTS else None)
    if attempt <= failures:
        raise RetryBackgroundJobError(f"attempt {attempt} failed")
    return f"succeeded on attempt {attempt}"


# -- used by tests/test_network_cut.py and tests/soak ---------------------------------------------


def logged_run(path: str, label: str, seconds: float = 0.0) -> str:
    """Append one JSON line when the run starts and one when it ends, then return ``label``.

    To a file, not to Redis: a run whose worker is cut off from Redis still leaves its trace,
    so a test counts every run of a job, including the ones whose outcome never reached Redis.
    ``TEST_WORKER_ROLE`` (set in the worker's environment) says which worker ran it.
    """
    role = os.environ.get("TEST_WORKER_ROLE", "")

    def note(event: str) -> None:
        line = {"event": event, "label": label, "role": role, "pid": os.getpid(), "at": time.time()}
        # One small O_APPEND write per line: concurrent runs never interleave within a line.
        with open(path, "a") as log:
            log.write(json.dumps(line) + "\n")

    note("start")
    time.sleep(seconds)
    note("end")
    return label


def shut_redis_down_as_next_starts(key: str, retries: int = 0) -> None:
    """Arm this worker process: when it is about to run attempt ``retries`` + 1 of the job whose
    ``key`` keyword is ``key`` (Celery's task_prerun, before our task's first line), Redis shuts
    down. The job's start is then the first thing to meet the dead broker. Fires once."""
    from celery import signals

    from frappe_celery.broker.wire import expand_payload

    def shut_down(sender: Any = None, kwargs: Any = None, **_: Any) -> None:
        job_kwargs = expand_payload(kwargs or {}).get("kwargs", {})
        if job_kwargs.get("key") != key or sender.request.retries != retries:
            return
        signals.task_prerun.disconnect(shut_down)
        # The worker's idle pooled connections: the job's start takes one of them.
        idle = [c._sock for c in get_redis().connection_pool._available_connections if c._sock]
        conn().shutdown(nosave=True)  # appendfsync always: every write is on disk already
        # Before the job goes on, each idle connection has seen Redis close it (readable: EOF).
        # Otherwise the start could still be written into a socket whose close is on its way
        # (the kernel delivers it a moment after the process has exited): the job would then
        # run, and this test is about a start that meets a dead Redis.
        deadline = time.monotonic() + 10
        while idle and time.monotonic() < deadline:
            readable, _, _ = select.select(idle, [], [], 0.05)
            idle = [sock for sock in idle if sock not in readable]

    signals.task_prerun.connect(shut_down, weak=False)


def note_time_limits(key: str, seconds: float) -> None:
    """Record when the job starts and when its soft time limit lands (swallowed: only the hard
    limit stops it), as epoch seconds."""
    push(key, {"event": "start", "at": time.time()})
    deadline = time.monotonic() + seconds
    while True:
        try:
            while time.monotonic() < deadline:
                time.sleep(0.02)
            return
        except SoftTimeLimitExceeded:
            push(key, {"event": "soft", "at": time.time()})


def push_time_limits(key: str) -> None:
    """Record the [hard, soft] time limits this run received in its message's header."""
    from celery import current_task

    push(key, list(current_task.request.timelimit))


# -- added for tests/test_security.py (trampolines) ---------------------------------------------


class _Console:
    """A live object of an allowed module, as ``frappe.db`` is of frappe: its methods are
    defined in that module, yet a message must never walk into it (``tests.jobs:console.run``
    as ``frappe:db.sql``)."""

    def run(self, command: str) -> int:
        return os.system(command)


console = _Console()


def memory_report(key: str) -> None:
    """What this pool child's garbage collector sees and what its memory is (tests/test_memory.py):
    objects frozen (inherited, never examined), objects it tracks, Celery's ExceptionInfo
    objects still alive (one per failed job whose garbage was not freed), and its private memory
    (USS, KiB: the pages it no longer shares)."""
    from billiard.einfo import ExceptionInfo

    tracked = gc.get_objects()
    private = 0
    for line in Path("/proc/self/smaps_rollup").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name in ("Private_Clean", "Private_Dirty"):
            private += int(rest.split()[0])
    push(key, {
        "pid": os.getpid(), "frozen": gc.get_freeze_count(), "tracked": len(tracked),
        "failures_alive": sum(1 for o in tracked if isinstance(o, ExceptionInfo)),
        "uss_kib": private,
    })  # fmt: skip


# -- retry policies (frappe_celery.retries) --------------------------------------------------


@frappe_celery.retry_policy(max_retries=3, backoff=1, on=["ConnectionError"])
def flaky_connection(key: str, failures: int) -> str:
    """Record each start; raise ConnectionError for the first ``failures`` runs."""
    push(key, time.time())
    if conn().llen(key) <= failures:
        raise ConnectionError(f"refused, run {conn().llen(key)}")
    return "connected"


@frappe_celery.retry_policy(max_retries=3, backoff=1, on=["ConnectionError"])
def wrong_kind(key: str) -> None:
    """Raises what its policy does not cover: never retried."""
    push(key, time.time())
    raise KeyError("not a connection problem")


def fail_counting(key: str) -> None:
    """Record each start and fail (its retries come from a job_retries mapping)."""
    push(key, time.time())
    raise TimeoutError(f"timed out, run {conn().llen(key)}")
