"""Opt-in retries with exponential backoff and jitter (frappe_celery/retries.py): declared on
the function (a decorator) or in a job_retries mapping, never through enqueue's keywords; run by
real workers; every failed attempt's traceback kept on the record."""

from __future__ import annotations

import json
import random

import pytest

import frappe_celery as frappe
from frappe_celery.errors import ConfigError, InvalidArgumentError
from frappe_celery.ops.monitor import list_failed
from frappe_celery.retries import RetryPolicy, make_policy, retry_policy

from .support.cli import invoke, ok
from .support.processes import wait_for
from .support.settings import config_env, enqueuing_as, settings_env

FINAL = ("finished", "failed")


def starts(r, key: str) -> list[float]:
    return [json.loads(v) for v in r.lrange(key, 0, -1)]


@pytest.mark.unit
def test_the_backoff_doubles_up_to_its_cap_and_jitter_keeps_the_upper_half():
    policy = RetryPolicy(max_retries=6, backoff=10, max_backoff=60, jitter=False)
    assert [policy.delay(n) for n in range(5)] == [10, 20, 40, 60, 60]
    jittered = RetryPolicy(max_retries=6, backoff=10, max_backoff=60)
    rng = random.Random(1)
    for n, full in enumerate([10, 20, 40, 60, 60]):
        waits = [jittered.delay(n, rng) for _ in range(200)]
        assert full / 2 <= min(waits) and max(waits) <= full
        assert max(waits) - min(waits) > full / 4  # spread, not one value


@pytest.mark.unit
def test_a_policy_covers_exceptions_by_name_dotted_path_or_class():
    class Flaky(ConnectionError):
        pass

    assert make_policy("t", {"on": ["ConnectionError"]}).covers(Flaky())
    assert make_policy("t", {"on": "builtins.ConnectionError"}).covers(Flaky())
    assert make_policy("t", {"on": [TimeoutError]}).covers(TimeoutError())
    assert not make_policy("t", {"on": [TimeoutError]}).covers(KeyError())
    assert make_policy("t", {}).covers(KeyError())  # by default, every Exception


@pytest.mark.unit
@pytest.mark.parametrize(
    ("given", "named"),
    [
        ({"max_retries": 0}, "max_retries: got 0; a whole number from 1 to 50"),
        ({"max_retries": True}, "max_retries: got True"),
        ({"backoff": -1}, "backoff: got -1; seconds, more than 0"),
        ({"max_backoff": 10**9}, "max_backoff: got 1000000000"),
        ({"jitter": "yes"}, "jitter: got 'yes'; true or false"),
        ({"on": [3]}, "on: got [3]; exception classes"),
        ({"retries": 3}, "retries: got {'retries': 3}; settings: max_retries, backoff"),
    ],
)
def test_bad_settings_are_refused_naming_the_setting(given, named):
    with pytest.raises(InvalidArgumentError, match=named.replace("[", r"\[").replace("(", r"\(")):
        make_policy("retry_policy", given)
    with pytest.raises(InvalidArgumentError, match="max_retries"):
        retry_policy(max_retries=-2)


def test_a_decorated_function_is_retried_with_backoff_then_finishes(r, shared_worker):
    key = "test:retries:flaky"
    job = frappe.enqueue("tests.jobs.flaky_connection", queue="short", key=key, failures=2)
    wait_for(lambda: job.get_status() in FINAL, 30)
    assert job.get_status() == "finished" and job.return_value() == "connected"
    runs = starts(r, key)
    assert len(runs) == 3
    # backoff 1 s, doubled, equal jitter: [0.5, 1] then [1, 2] s, plus the worker's pickup.
    first, second = runs[1] - runs[0], runs[2] - runs[1]
    assert 0.5 <= first <= 1 + 1.0, first
    assert 1.0 <= second <= 2 + 1.0, second
    record = job.refresh()
    assert record["retries"] == "2"
    attempts = json.loads(record["attempts"])
    assert [a["attempt"] for a in attempts] == [0, 1]
    assert all(a["exc_type"] == "ConnectionError" for a in attempts)
    assert "refused, run 1" in attempts[0]["traceback"]
    assert "refused, run 2" in attempts[1]["traceback"]


def test_an_exception_the_policy_does_not_cover_fails_at_once(r, shared_worker):
    key = "test:retries:wrong"
    job = frappe.enqueue("tests.jobs.wrong_kind", queue="short", key=key)
    wait_for(lambda: job.get_status() in FINAL, 30)
    assert job.get_status() == "failed" and len(starts(r, key)) == 1
    assert "attempts" not in job.refresh()


def test_a_job_retries_mapping_retries_an_undecorated_function_then_keeps_every_traceback(
    r, start_worker, tmp_path
):
    env = config_env(tmp_path, job_retries={
        "tests.jobs.fail_counting": {"max_retries": 2, "backoff": 0.2, "jitter": False,
                                     "on": ["TimeoutError"]},
    })  # fmt: skip
    start_worker("reports", **env)
    key = "test:retries:mapped"
    job = frappe.enqueue("tests.jobs.fail_counting", queue="reports", key=key)
    wait_for(lambda: job.get_status() in FINAL, 30)
    assert job.get_status() == "failed"
    assert len(starts(r, key)) == 3  # the first attempt and 2 retries
    record = job.refresh()
    assert [a["attempt"] for a in json.loads(record["attempts"])] == [0, 1]
    assert "timed out, run 3" in record["exc_info"]  # the last failure's traceback
    failed = [row for row in list_failed("reports") if row.id == job.id]
    assert failed and failed[0].exc.startswith("TimeoutError")


def test_a_bad_job_retries_mapping_is_refused_at_start_naming_the_method(tmp_path):
    from frappe_celery.config import load_settings

    env = config_env(tmp_path, job_retries={"myapp.sync": {"max_retries": 0}})
    with pytest.raises(ConfigError, match=r"job_retries\['myapp.sync'\]: max_retries: got 0"):
        load_settings(env)


def test_retry_replays_the_failed_jobs_a_filter_picks_keeping_site_and_user(r, shared_worker):
    with enqueuing_as(user="alice@x.com"):
        mine = [frappe.enqueue("tests.jobs.fail_counting", queue="short", key=f"test:replay:{i}")
                for i in range(2)]  # fmt: skip
    disk = frappe.enqueue("tests.jobs.fail", queue="short", message="disk full")
    with enqueuing_as(site="other.site"):
        theirs = frappe.enqueue("tests.jobs.fail_counting", queue="short", key="test:replay:o")
    everything = [*mine, disk, theirs]
    wait_for(lambda: all(job.get_status() == "failed" for job in everything), 30)
    ended = {job.id: job.refresh()["ended_at"] for job in everything}

    with settings_env(FRAPPE_CELERY_SITES="test.site,other.site"):
        listed = ok("failed", "--method", "tests.jobs.fail_counting", "--site", "test.site")
        assert {job.id for job in mine} <= set(listed.output.split()) and theirs.id not in (
            listed.output
        )
        replayed = ok("retry", "--method", "tests.jobs.fail_counting", "--site", "test.site")
        assert "Enqueued 2 failed jobs again" in replayed.output
        # Replayed, run and failed again: a second start each; the other site's not touched.
        wait_for(lambda: all(len(starts(r, f"test:replay:{i}")) == 2 for i in range(2)), 30)
        wait_for(lambda: all(job.get_status() == "failed" for job in mine), 30)
        assert len(starts(r, "test:replay:o")) == 1
        for job in mine:
            record = job.refresh()
            assert record["user"] == "alice@x.com" and record["site"] == "test.site"
            assert record["ended_at"] != ended[job.id]
            assert "retries" not in record  # a new attempt count
        assert disk.refresh()["ended_at"] == ended[disk.id]

        assert "Enqueued 1 failed jobs again" in ok("retry", "--exception", "disk full").output
        wait_for(lambda: disk.refresh().get("ended_at") not in (None, ended[disk.id]), 30)

        # Its id queued again by someone else: a replay leaves it alone (one run per id).
        with enqueuing_as(site="other.site"):
            # enqueue takes the caller's id and namespaces it, as Frappe's does.
            caller_id = theirs.id.split("||", 1)[1]
            frappe.enqueue("tests.jobs.add", queue="batch", job_id=caller_id, a=1, b=1)
        assert "Enqueued 0 failed jobs again" in ok("retry", "--site", "other.site").output


def test_retry_wants_a_job_id_or_a_choice_of_jobs(r):
    assert invoke("retry").exit_code == 2
    assert invoke("retry", "some-id", "--queue", "short").exit_code == 2
    assert invoke("retry", "--queue", "nope").exit_code == 2
