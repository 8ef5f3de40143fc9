"""What happens to a job inside a real worker: time limits, hooks and context, callbacks,
retries, import failures, in-process runs, enqueue_doc, and messages that must never run.

Every test uses a real redis-server and real ``celery -A frappe_celery worker`` processes (see
conftest.py); the job functions in tests/jobs.py report what they saw to Redis.
"""

from __future__ import annotations

import base64
import datetime
import decimal
import json
import os
import time
import uuid
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest

import frappe_celery as frappe
from frappe_celery.broker import keys

from . import jobs
from .support.broker_state import (
    all_queue_lists,
    assert_worker_alive,
    forge_from,
    record_of,
    signed,
    unique,
    wait_final,
    waiting_message,
)
from .support.processes import wait_for
from .support.settings import TEST_CONFIG

GRACE = 2  # time_limit_grace in conftest.TEST_CONFIG


# -- helpers -------------------------------------------------------------------------------------


def read_list(r, key: str) -> list[Any]:
    return [json.loads(item) for item in r.lrange(key, 0, -1)]


def message_headers(job: frappe.Job) -> dict[str, Any]:
    """The headers of the broker message of a job still waiting in its queue."""
    headers: dict[str, Any] = json.loads(waiting_message(job))["headers"]
    return headers


def callbacks_for(r, job_id: str) -> list[dict[str, Any]]:
    return [entry for entry in read_list(r, "test:callbacks") if entry["job_id"] == job_id]


class RunsShellOnUnpickle:
    """Unpickling this runs a shell command (what a malicious pickle message would carry)."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (self.command,))


# -- 1. time limits ------------------------------------------------------------------------------


def test_a_finished_jobs_message_is_settled_by_its_finish_script_not_by_a_second_call(
    r, start_worker
):
    """One Redis round trip per job less: finish.lua removes the message from kombu's unacked
    hash, and the worker's main process acks it without calling Redis (transport.QoS)."""
    import threading

    worker = start_worker("reports")
    seen: list[dict[str, Any]] = []
    monitor = r.monitor()
    monitor.connection.send_command("MONITOR")  # redis-py sends it on next_command otherwise
    assert monitor.connection.read_response() in (b"OK", "OK")

    def listen() -> None:
        while True:
            try:
                seen.append(monitor.next_command())
            except Exception:  # the connection closed below: done
                return

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    try:
        job = frappe.enqueue("tests.jobs.add", queue="reports", a=2, b=3)
        assert wait_final(job) == "finished"
        # The worker's ack follows the job's end: leave it time to happen, were it a call.
        wait_for(lambda: not r.hexists("unacked", job.record["delivery_tag"]), 10)
        time.sleep(1.0)
    finally:
        monitor.connection.disconnect()
        listener.join(5)
    tag = job.record["delivery_tag"]
    removals = [
        entry
        for entry in seen
        if entry["command"].startswith(("HDEL unacked", "ZREM unacked_index"))
        and tag in entry["command"]
    ]
    assert removals, f"no removal of {tag} seen (worker log: {worker.output()[-2000:]})"
    assert {entry["client_type"] for entry in removals} == {"lua"}, removals


def niceness(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat[stat.rindex(")") + 2 :].split()[16])


def test_workers_and_beat_lower_their_cpu_priority_by_background_process_niceness(
    tmp_path, start_worker, start_beat
):
    config = tmp_path / "common_site_config.json"
    config.write_text(json.dumps({**TEST_CONFIG, "background_process_niceness": 4}))
    env = {"FRAPPE_CELERY_CONFIG": str(config)}
    mine = niceness(os.getpid())
    worker = start_worker("reports", concurrency=1, **env)
    children = Path(f"/proc/{worker.process.pid}/task/{worker.process.pid}/children")
    child = int(children.read_text().split()[0])
    assert niceness(worker.process.pid) == niceness(child) == min(mine + 4, 19)
    beat = start_beat(**env)
    # Celery logs beat's ready line just before it sends beat_init.
    wait_for(lambda: niceness(beat.process.pid) == min(mine + 4, 19), 10)


def test_soft_time_limit_raises_inside_the_job_and_fails_it(r, shared_worker):
    key = unique("soft")
    job = frappe.enqueue("tests.jobs.catch_soft_timeout", timeout=1, key=key, seconds=30)

    assert wait_final(job) == "failed"
    assert read_list(r, key) == ["soft time limit seen"]
    assert record_of(r, job)["exc_type"] == "SoftTimeLimitExceeded"
    assert "SoftTimeLimitExceeded" in (job.exc_info or "")


def test_soft_and_hard_time_limits_fire_within_a_second_of_their_settings(r, shared_worker):
    key = unique("limits")
    timeout = 2
    job = frappe.enqueue("tests.jobs.note_time_limits", timeout=timeout, key=key, seconds=30)

    assert wait_final(job) == "failed"
    events = {e["event"]: e["at"] for e in map(json.loads, r.lrange(key, 0, -1))}
    record = record_of(r, job)
    started = float(record["started_at"])
    soft_late = events["soft"] - started - timeout
    # The hard kill is recorded by the worker's main process (JobRequest.on_timeout).
    hard_late = float(record["ended_at"]) - started - (timeout + GRACE)
    print(f"soft limit {soft_late:+.3f} s, hard limit {hard_late:+.3f} s after their settings")
    # Celery arms both timers as the task is handed to the pool child, a moment before the job's
    # START script records started_at: a few milliseconds early is on time.
    assert -0.2 < soft_late < 1
    assert -0.2 < hard_late < 1
    assert record["exc_type"] == "TimeLimitExceeded"


def test_hard_time_limit_kills_a_job_that_ignores_the_soft_limit(r, shared_worker):
    key = unique("hard")
    seconds = 6
    enqueued = time.monotonic()
    job = frappe.enqueue("tests.jobs.ignore_soft_timeout", timeout=1, key=key, seconds=seconds)

    assert wait_final(job) == "failed"
    record = record_of(r, job)
    assert record["exc_type"] == "TimeLimitExceeded"
    # hard limit = timeout + time_limit_grace
    assert f"hard time limit ({1 + GRACE} s)" in record["exc_info"]
    # The soft limit did fire (and was swallowed); only the hard kill stopped the job.
    assert "ignored soft time limit" in read_list(r, key)

    # Had the job survived, it would record "finished anyway" after `seconds`: wait past that.
    time.sleep(max(0.0, enqueued + seconds + 1.5 - time.monotonic()))
    assert "finished anyway" not in read_list(r, key)
    assert job.get_status() == "failed"
    assert record_of(r, job)["exc_type"] == "TimeLimitExceeded"


def test_on_failure_is_called_for_a_job_killed_by_the_hard_time_limit(r, shared_worker):
    key = unique("hard-callback")
    job = frappe.enqueue(
        "tests.jobs.ignore_soft_timeout",
        timeout=1,
        key=key,
        seconds=30,
        on_failure="tests.jobs.on_failure_record",
    )

    assert wait_final(job) == "failed"
    assert record_of(r, job)["exc_type"] == "TimeLimitExceeded"
    entries = wait_for(lambda: callbacks_for(r, job.id), 10)
    assert [(entry["callback"], entry["status"]) for entry in entries] == [("on_failure", "failed")]
    assert "hard time limit" in entries[0]["value"]


@pytest.mark.parametrize(
    ("queue", "expected"),
    [("short", 300), ("default", 300), ("long", 1500), ("reports", 120), ("batch", 300)],
)
def test_timeout_none_uses_the_queue_default_timeout(r, shared_worker, queue, expected):
    key = unique("limits")
    job = frappe.enqueue("tests.jobs.push_time_limits", queue=queue, key=key)

    assert job.timeout == expected
    assert frappe.get_job(job.id).timeout == expected
    assert float(record_of(r, job)["timeout"]) == expected
    assert job.job_kwargs["timeout"] == expected
    if queue in ("reports", "batch"):
        # No worker consumes these queues here: the limits are read from the waiting message.
        assert message_headers(job)["timelimit"] == [expected + GRACE, expected]
    else:
        # The shared worker takes the job at once: the run itself reports what it received.
        assert wait_final(job) == "finished"
        assert read_list(r, key) == [[expected + GRACE, expected]]


def test_time_limits_travel_in_the_message_timelimit_header(r):
    job = frappe.enqueue("tests.jobs.add", queue="reports", timeout=42, a=1, b=1)

    headers = message_headers(job)
    assert headers["timelimit"] == [42 + GRACE, 42]  # [hard, soft]
    assert job.timeout == 42
    assert frappe.get_job(job.id).timeout == 42


# -- 2. hooks and job context --------------------------------------------------------------------


def test_hooks_and_context_run_in_order_around_a_successful_job(r, shared_worker, monkeypatch):
    monkeypatch.setattr(jobs, "CURRENT_USER", "alice@example.com")
    trace = unique("trace")
    job = frappe.enqueue("tests.jobs.traced", trace_key=trace)

    assert wait_final(job) == "finished", job.exc_info
    assert read_list(r, trace) == [
        "setup:test.site:alice@example.com",
        "before_job:tests.jobs.traced:job",
        "method",
        "commit",
        "after_job:traced-result",
    ]
    assert job.user == "alice@example.com"
    assert job.return_value() == "traced-result"


def test_a_failing_job_is_rolled_back_and_after_job_sees_no_result(r, shared_worker):
    trace = unique("trace")
    job = frappe.enqueue("tests.jobs.traced", trace_key=trace, should_fail=True)

    assert wait_final(job) == "failed"
    assert read_list(r, trace) == [
        "setup:test.site:None",
        "before_job:tests.jobs.traced:job",
        "method",
        "rollback",
        "after_job:None",
    ]
    assert record_of(r, job)["exc_type"] == "ValueError"
    assert "traced job failed" in (job.exc_info or "")


# -- 3. callbacks --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "callback", [jobs.on_success_record, "tests.jobs.on_success_record"], ids=["function", "path"]
)
def test_on_success_is_called_in_the_worker_with_the_result(r, shared_worker, callback):
    job = frappe.enqueue("tests.jobs.add", a=2, b=5, on_success=callback)

    assert wait_final(job) == "finished", job.exc_info
    entries = wait_for(lambda: callbacks_for(r, job.id), 10)
    assert entries == [
        {
            "callback": "on_success",
            "job_id": job.id,
            "status": "finished",
            "result": 7,
            "connection": "Redis",
        }
    ]


@pytest.mark.parametrize(
    "callback", [jobs.on_failure_record, "tests.jobs.on_failure_record"], ids=["function", "path"]
)
def test_on_failure_is_called_in_the_worker_with_the_exception(r, shared_worker, callback):
    job = frappe.enqueue("tests.jobs.fail", message="boom", on_failure=callback)

    assert wait_final(job) == "failed"
    entries = wait_for(lambda: callbacks_for(r, job.id), 10)
    assert entries == [
        {
            "callback": "on_failure",
            "job_id": job.id,
            "status": "failed",
            "type": "ValueError",
            "value": "boom",
        }
    ]


def test_on_success_is_not_called_for_a_failed_job(r, shared_worker):
    job = frappe.enqueue(
        "tests.jobs.fail",
        message="boom",
        on_success="tests.jobs.on_success_record",
        on_failure="tests.jobs.on_failure_record",
    )

    assert wait_final(job) == "failed"
    entries = wait_for(lambda: callbacks_for(r, job.id), 10)
    assert [entry["callback"] for entry in entries] == ["on_failure"]


def test_a_raising_on_success_callback_is_logged_and_the_job_stays_finished(r, shared_worker):
    job = frappe.enqueue("tests.jobs.add", a=1, b=2, on_success="tests.jobs.raising_callback")

    logged = f"job {job.id}: callback tests.jobs.raising_callback raised"
    wait_for(lambda: logged in shared_worker.output(), 20)
    assert "callback blew up" in shared_worker.output()
    assert job.get_status() == "finished"
    assert job.return_value() == 3
    assert "exc_type" not in record_of(r, job)


def test_a_raising_on_failure_callback_is_logged_and_the_job_stays_failed(r, shared_worker):
    job = frappe.enqueue("tests.jobs.fail", message="boom", on_failure=jobs.raising_callback)

    logged = f"job {job.id}: callback tests.jobs.raising_callback raised"
    wait_for(lambda: logged in shared_worker.output(), 20)
    assert job.get_status() == "failed"
    record = record_of(r, job)
    assert record["exc_type"] == "ValueError"
    assert "boom" in record["exc_info"]


# -- 4. retries ----------------------------------------------------------------------------------


def test_retry_background_job_error_retries_until_the_job_succeeds(r, shared_worker):
    key = unique("flaky")
    job = frappe.enqueue("tests.jobs.flaky", key=key, failures=2)

    assert wait_final(job, 30) == "finished", job.exc_info
    assert job.return_value() == "succeeded on attempt 3"
    assert job.retries == 2
    attempts = read_list(r, key + ":attempts")
    assert [a["attempt"] for a in attempts] == [1, 2, 3]
    # Celery countdowns of 1 s then 2 s separate the attempts.
    gaps = [later["at"] - earlier["at"] for earlier, later in pairwise(attempts)]
    assert gaps[0] >= 0.9, gaps
    assert gaps[1] >= 1.9, gaps


def test_a_job_that_always_asks_for_a_retry_runs_six_times_then_fails(r, shared_worker):
    key = unique("always")
    job = frappe.enqueue("tests.jobs.flaky", key=key, failures=100)

    # Countdowns 1+2+3+4+5 = 15 s between the six attempts.
    assert wait_final(job, 60) == "failed"
    assert int(r.get(key)) == 6
    assert job.retries == 5
    record = record_of(r, job)
    assert record["exc_type"] == "RetryBackgroundJobError"
    assert "attempt 6 failed" in record["exc_info"]
    attempts = read_list(r, key + ":attempts")
    gaps = [later["at"] - earlier["at"] for earlier, later in pairwise(attempts)]
    # Celery countdowns of 1, 2, 3, 4 and 5 s separate the six attempts.
    assert len(gaps) == 5
    assert all(gap >= n - 0.1 for n, gap in enumerate(gaps, start=1)), gaps


def test_a_configured_retry_exception_also_retries_the_job(r, shared_worker):
    key = unique("custom")
    job = frappe.enqueue("tests.jobs.flaky_custom", key=key, failures=1)

    assert wait_final(job, 30) == "finished", job.exc_info
    assert job.return_value() == "succeeded on attempt 2"
    assert int(r.get(key)) == 2
    assert job.retries == 1


def test_a_retried_attempt_keeps_the_enqueuing_user_and_site(r, shared_worker, monkeypatch):
    monkeypatch.setattr(jobs, "CURRENT_USER", "bob@example.com")
    key = unique("retry-context")
    job = frappe.enqueue("tests.jobs.flaky_context", key=key, failures=1)

    assert wait_final(job, 30) == "finished", job.exc_info
    assert read_list(r, key + ":context") == ["setup:test.site:bob@example.com"] * 2
    assert job.user == "bob@example.com"
    assert job.site == "test.site"


# -- 5. a method the worker cannot import --------------------------------------------------------


def test_an_unimportable_method_fails_its_job_and_the_worker_keeps_running(r, shared_worker):
    job = frappe.enqueue("tests.jobs.does_not_exist", x=1)

    assert wait_final(job) == "failed"
    record = record_of(r, job)
    assert record["exc_type"] == "ImportError"
    assert "does_not_exist" in (job.exc_info or "")
    assert_worker_alive(shared_worker)


# -- 6. is_async=False ---------------------------------------------------------------------------


def test_is_async_false_runs_in_this_process_through_the_worker_path(r):
    # The batch queue has no consumer in this session: a pushed message would stay in its list.
    job_id = uuid.uuid4().hex
    trace = unique("inproc")
    job = frappe.enqueue(
        "tests.jobs.traced", queue="batch", is_async=False, job_id=job_id, trace_key=trace
    )

    assert isinstance(job, frappe.Job)
    assert job.id == frappe.create_job_id(job_id)
    assert job.get_status() == "finished"
    assert job.return_value() == "traced-result"
    # Hooks and the job context ran here, in the test process.
    assert jobs.CONTEXT_EVENTS == ["setup:test.site:None", "commit"]
    assert read_list(r, trace) == [
        "setup:test.site:None",
        "before_job:tests.jobs.traced:job",
        "method",
        "commit",
        "after_job:traced-result",
    ]
    record = frappe.get_job(job_id).record
    assert record["status"] == "finished"
    assert record["method"] == "tests.jobs.traced"
    assert record["worker"].startswith("in-process@")
    assert float(record["timeout"]) == 300
    assert "message" not in record
    # Nothing was pushed onto any broker list.
    assert [name for name in all_queue_lists() if r.llen(name)] == []


def test_is_async_false_pushes_nothing_onto_the_default_queue(r):
    job = frappe.enqueue("tests.jobs.add", is_async=False, a=4, b=5)

    assert job.return_value() == 9
    assert [r.llen(name) for name in keys.queue_lists("default")] == [0, 0, 0, 0]
    record = record_of(r, job)
    assert "list" not in record  # set only when a message is pushed
    assert "message" not in record
    assert record["worker"].startswith("in-process@")


def test_a_failing_is_async_false_job_reraises_and_is_recorded_failed(r):
    job_id = uuid.uuid4().hex
    with pytest.raises(ValueError, match="in-process boom"):
        frappe.enqueue("tests.jobs.fail", is_async=False, job_id=job_id, message="in-process boom")

    assert frappe.get_job_status(job_id) == "failed"
    record = frappe.get_job(job_id).record
    assert record["exc_type"] == "ValueError"
    assert "in-process boom" in record["exc_info"]


def test_a_failing_is_async_false_job_with_on_failure_returns_the_failed_handle(r):
    job = frappe.enqueue(
        "tests.jobs.fail",
        is_async=False,
        message="handled",
        on_failure="tests.jobs.on_failure_record",
    )

    assert isinstance(job, frappe.Job)
    assert job.get_status() == "failed"
    assert "handled" in (job.exc_info or "")
    assert callbacks_for(r, job.id) == [
        {
            "callback": "on_failure",
            "job_id": job.id,
            "status": "failed",
            "type": "ValueError",
            "value": "handled",
        }
    ]


# -- 7. enqueue_doc ------------------------------------------------------------------------------


def test_enqueue_doc_runs_the_document_method_in_the_worker(r, shared_worker):
    key = unique("doc")
    job = frappe.enqueue_doc("Sales Invoice", "SINV-1", "submit_later", key=key, note="x")

    assert wait_final(job) == "finished", job.exc_info
    assert job.return_value() == "Sales Invoice/SINV-1: x"
    assert read_list(r, key) == [["Sales Invoice", "SINV-1", "x"]]
    assert job.timeout == 300


def test_enqueue_doc_timeout_defaults_to_the_queue_timeout(r, shared_worker):
    key = unique("doc-long")
    job = frappe.enqueue_doc(
        "Sales Invoice", "SINV-1", "submit_later", queue="long", key=key, note="x"
    )

    assert job.timeout == 1500  # the message's time limits follow it (test above)
    assert wait_final(job) == "finished", job.exc_info
    assert frappe.get_job(job.id).timeout == 1500
    assert read_list(r, key) == [["Sales Invoice", "SINV-1", "x"]]


def test_enqueue_doc_now_returns_the_method_value(r):
    key = unique("doc-now")
    value = frappe.enqueue_doc(
        "Sales Invoice", "SINV-2", "submit_later", now=True, key=key, note="y"
    )

    assert value == "Sales Invoice/SINV-2: y"
    assert read_list(r, key) == [["Sales Invoice", "SINV-2", "y"]]
    assert [name for name in all_queue_lists() if r.llen(name)] == []


# -- 8. forged and disallowed messages -----------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "make_kwargs"),
    [
        ("os.system", lambda marker: {"command": f"touch {marker}"}),
        ("subprocess.run", lambda marker: {"args": ["touch", str(marker)]}),
        ("tests.jobs.reexported_system", lambda marker: {"command": f"touch {marker}"}),
        ("builtins.eval", lambda marker: {"source": f"open({str(marker)!r}, 'w')"}),
        ("builtins.exec", lambda marker: {"source": f"open({str(marker)!r}, 'w')"}),
        ("importlib.import_module", lambda marker: {"name": "antigravity"}),
        ("pickle.loads", lambda marker: {"data": "not really a pickle"}),
    ],
    ids=[
        "os.system",
        "subprocess.run",
        "reexported-os.system",
        "builtins.eval",
        "builtins.exec",
        "importlib.import_module",
        "pickle.loads",
    ],
)
def test_a_forged_message_naming_a_disallowed_function_never_runs(
    r, shared_worker, tmp_path: Path, method, make_kwargs
):
    marker = tmp_path / "forged-ran"
    # A valid job on a queue nothing consumes provides a genuine message (and record) to forge.
    template = frappe.enqueue("tests.jobs.record", queue="reports", key=unique("unused"))
    forge_from(r, template, "default", {"method": method, "kwargs": make_kwargs(marker)})

    assert wait_final(template) == "failed"
    record = record_of(r, template)
    assert record["exc_type"] == "MethodNotAllowed"
    assert method in record["exc_info"]
    assert not marker.exists()
    assert_worker_alive(shared_worker)
    assert not marker.exists()


def test_a_pickle_message_on_the_queue_is_never_executed(r, shared_worker, tmp_path: Path):
    marker = tmp_path / "unpickled"
    key = unique("pickle")
    template = frappe.enqueue("tests.jobs.record", queue="reports", key=key, value="template")
    # An allowed job whose arguments also carry a payload that runs a shell command when
    # unpickled: the worker must neither unpickle the body nor run the job.
    refusal = "invalid task message: Refusing to deserialize untrusted content of type pickle"
    refusals_before = shared_worker.output().count(refusal)
    target = forge_from(
        r,
        template,
        "default",
        {},
        pickled_kwargs={"key": key, "value": RunsShellOnUnpickle(f"touch {marker}")},
    )

    # The worker takes the message off the list; give it a few seconds to (not) act on it.
    wait_for(lambda: r.llen(target) == 0, 20)
    wait_for(
        lambda: (
            shared_worker.output().count(refusal) > refusals_before
            or marker.exists()
            or r.llen(key)
        ),
        20,
    )
    time.sleep(2)
    assert not marker.exists(), "the pickle payload was unpickled"
    assert r.llen(key) == 0, "the pickled job ran"
    assert template.get_status() == "queued"  # the record was never touched by a worker
    assert shared_worker.output().count(refusal) == refusals_before + 1
    assert_worker_alive(shared_worker)
    assert not marker.exists()
    assert r.llen(key) == 0


def poisoned(tag: dict[str, Any]) -> str:
    """A well-formed kombu envelope with ``tag`` among its headers."""
    return json.dumps({"body": "e30=", "headers": {"id": "x", "poison": tag}, "properties": {
        "delivery_tag": "t", "body_encoding": "base64",
        "delivery_info": {"exchange": "default", "routing_key": "default"}}})  # fmt: skip


@pytest.mark.parametrize(
    "raw",
    [
        "this is not JSON",
        "[1, 2, 3]",
        json.dumps({"body": "e30=", "headers": {}}),  # no properties, no task
        json.dumps({"body": "!!not base64!!", "content-type": "application/json",
                    "content-encoding": "utf-8", "headers": {"task": "frappe_celery.execute_job",
                    "id": "x"}, "properties": {"delivery_tag": "t", "body_encoding": "base64",
                    "delivery_info": {"exchange": "default", "routing_key": "default"}}}),
        # kombu's type tags that its decoder raises on (not ValueError): TypeError,
        # decimal.InvalidOperation, AttributeError.
        *(poisoned({"__type__": kind, "__value__": value})
          for kind, value in (("datetime", 1), ("decimal", "not a number"), ("bytes", 1))),
    ],
    ids=["not-json", "json-list", "no-properties", "body-not-base64", "tag-datetime-int",
         "tag-decimal-text", "tag-bytes-int"],
)  # fmt: skip
def test_a_malformed_message_is_dropped_and_the_worker_takes_the_next_job(r, shared_worker, raw):
    target = keys.queue_list("default", 3)
    r.lpush(target, raw)
    wait_for(lambda: r.llen(target) == 0, 20)
    assert_worker_alive(shared_worker)
    assert "that is not a kombu message" in shared_worker.output()
    # Not held for a redelivery that would fail again after the visibility timeout.
    assert r.hlen(keys.KOMBU_UNACKED) == 0


@pytest.mark.parametrize("where", ["headers", "body"])
def test_a_poisoned_job_message_is_dropped_and_its_record_failed(r, start_worker, where):
    """A job's own message with a kombu type tag its decoder raises on (TypeError), in the
    envelope's headers (the transport drops it) or in the body Celery decodes later (its
    consumer drops it, and left the record queued for a week before): the worker lives, the
    message is not held for a redelivery, and the job is recorded failed, saying why."""
    template = frappe.enqueue("tests.jobs.record", queue="reports", key=unique("poison"))
    list_name = template.refresh()["list"]
    raw = waiting_message(template)
    envelope = json.loads(raw)
    poison = {"__type__": "datetime", "__value__": 1}
    if where == "headers":
        envelope["headers"]["poison"] = poison
    else:
        body = json.loads(base64.b64decode(envelope["body"]))
        body[1]["kwargs"] = {"key": poison}
        envelope["body"] = base64.b64encode(json.dumps(body).encode()).decode()
    r.lrem(list_name, 0, raw)
    r.lpush(list_name, signed(envelope))
    # Two workers: a message that killed one went back to the front and killed the next.
    workers = [start_worker("reports", concurrency=1) for _ in range(2)]
    wait_for(lambda: r.llen(list_name) == 0, 20)
    wait_for(lambda: template.get_status() == "failed", 10)
    assert template.refresh()["exc_type"] == "MalformedMessage"
    assert "malformed job message" in str(template.exc_info)
    if where == "body":
        assert "cannot be decoded (DecodeError)" in str(template.exc_info)
    for worker in workers:
        assert worker.process.poll() is None, worker.output()[-3000:]
    assert r.hlen(keys.KOMBU_UNACKED) == 0


@pytest.mark.parametrize(
    "change",
    [{"task": "no.such.task"}, {"task": ""}, {"task": "celery.accumulate"},
     {"task": "celery.map"}, {"task": "celery.backend_cleanup"}],
    ids=["unknown-task", "empty-task-name", "celery.accumulate", "celery.map",
         "celery.backend_cleanup"],
)  # fmt: skip
def test_a_message_for_another_task_never_runs_and_the_worker_goes_on(r, shared_worker, change):
    """Celery's own built-in tasks included: frappe-celery unregisters them (celery_app.py)."""
    template = frappe.enqueue("tests.jobs.record", queue="reports", key=unique("task"))
    envelope = json.loads(waiting_message(template))
    envelope["headers"].update(change)
    envelope["properties"]["delivery_info"]["routing_key"] = "default"
    target = keys.queue_list("default", int(envelope["properties"]["priority"]))
    r.lpush(target, signed(envelope))
    wait_for(lambda: r.llen(target) == 0, 20)
    assert_worker_alive(shared_worker)
    assert template.get_status() == "queued"  # its record was never touched
    if change["task"]:
        output = shared_worker.output()
        assert f"unregistered task of type '{change['task']}'" in output
        assert f"Task {change['task']}[" not in output  # never received as a known task


@pytest.mark.parametrize(
    "change",
    [
        lambda payload: payload.pop("token"),
        lambda payload: payload.pop("method"),
        lambda payload: payload.update(unexpected="field"),
        lambda payload: payload.update(kwargs="not a dict"),
    ],
    ids=["missing-token", "missing-method", "extra-field", "kwargs-not-a-dict"],
)
def test_a_payload_of_the_wrong_shape_is_failed_with_the_reason_and_never_runs(
    r, shared_worker, change
):
    key = unique("shape")
    template = frappe.enqueue("tests.jobs.record", queue="reports", key=key)
    envelope = json.loads(waiting_message(template))
    args, payload, embed = json.loads(base64.b64decode(envelope["body"]))
    change(payload)
    payload["queue"] = "default"
    envelope["body"] = base64.b64encode(json.dumps([args, payload, embed]).encode()).decode()
    envelope["properties"]["delivery_info"]["routing_key"] = "default"
    target = keys.queue_list("default", int(envelope["properties"]["priority"]))
    r.lpush(target, signed(envelope))
    if "token" in payload:  # the message names its record: failed with the reason
        assert wait_final(template) == "failed"
        assert record_of(r, template)["exc_type"] == "MalformedMessage"
        assert "malformed job message" in str(template.exc_info)
    wait_for(lambda: "malformed job message" in shared_worker.output(), 20)
    assert_worker_alive(shared_worker)
    assert r.llen(key) == 0  # the job never ran
    if "token" not in payload:
        assert template.get_status() == "queued"  # no token, no write


def test_a_users_dict_shaped_like_a_kombu_type_tag_travels_as_data(r, shared_worker):
    """kombu's decoder reads any {"__type__", "__value__"} dict as a type tag: a user's own data
    of that shape turned into a Decimal, or failed to decode and left the job never run."""
    when = datetime.datetime(2026, 12, 6, 9, 30, tzinfo=datetime.timezone.utc)
    shaped = {"__type__": "decimal", "__value__": "1.5"}
    poison = {"__type__": "datetime", "__value__": 1}
    arguments = {
        "shaped": shaped,
        "poison": poison,
        "nested": [
            {"inner": dict(shaped)},
            {"__type__": "x", "__value__": {"__type__": "y", "__value__": [when]}},
        ],
        "when": when,
        "amount": decimal.Decimal("2.50"),
    }
    job = frappe.enqueue("tests.jobs.echo_kwargs", **arguments)
    assert wait_final(job) == "finished", job.exc_info
    assert job.return_value() == arguments
    # The record's copy of the payload reads back as it was given, too.
    job = frappe.Job.fetch(job.id)
    assert job.kwargs == arguments
