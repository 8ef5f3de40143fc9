"""The retry rule and the outcome an attempt comes to (worker/attempt.py's ``decide``), the one
place the worker and ``enqueue(is_async=False)`` take it from. Pure: no Redis."""

from __future__ import annotations

import pytest

from frappe_celery.config import MAX_RETRIES
from frappe_celery.errors import RetryBackgroundJobError
from frappe_celery.worker.attempt import decide

pytestmark = pytest.mark.unit  # pure: no Redis, no worker


def raised(exc: BaseException) -> BaseException:
    try:
        raise exc
    except BaseException as caught:
        return caught


def test_an_attempt_that_returns_finishes_with_its_value():
    outcome = decide(0, result={"rows": 3})
    assert (outcome.status, outcome.result, outcome.exc) == ("finished", {"rows": 3}, None)


@pytest.mark.parametrize("attempt", range(MAX_RETRIES))
def test_a_retry_request_with_attempts_left_is_retried_one_second_later_per_attempt(attempt):
    outcome = decide(attempt, exc=raised(RetryBackgroundJobError("busy")))
    assert outcome.status == "retry"
    assert outcome.retry_in == attempt + 1  # Frappe's 1, 2, ... 5 s


def test_the_last_attempt_fails_even_when_it_asks_for_a_retry():
    outcome = decide(MAX_RETRIES, exc=raised(RetryBackgroundJobError("still busy")))
    assert outcome.status == "failed"
    assert outcome.exc_type == "RetryBackgroundJobError"
    assert "still busy" in outcome.traceback


def test_any_other_exception_fails_at_once_with_its_class_and_traceback():
    outcome = decide(0, exc=raised(ValueError("bad row 7")))
    assert (outcome.status, outcome.exc_type) == ("failed", "ValueError")
    assert outcome.traceback.startswith("Traceback") and "bad row 7" in outcome.traceback
