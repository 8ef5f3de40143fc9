"""job_lock: the token-checked lock apps use instead of hand-rolled SET NX."""

from __future__ import annotations

import threading
import time

import pytest

import frappe_celery as frappe
from frappe_celery.broker import keys
from frappe_celery.broker.lock import JobLock


def test_a_held_lock_refuses_a_second_holder_with_a_clear_error(r):
    held = "'ledger' is held by another job; it expires in"
    with (
        frappe.job_lock("ledger", timeout=30),
        pytest.raises(frappe.LockHeld, match=held),
        frappe.job_lock("ledger", timeout=30),
    ):
        pass
    # Released on exit: free again.
    with frappe.job_lock("ledger", timeout=30):
        assert r.exists(keys.lock("ledger"))
    assert not r.exists(keys.lock("ledger"))


def test_the_decorator_holds_the_lock_while_the_function_runs(r):
    seen = []

    @frappe.job_lock("nightly", timeout=30)
    def nightly() -> str:
        seen.append(r.exists(keys.lock("nightly")))
        return "ran"

    assert nightly() == "ran"
    assert seen == [1]
    assert not r.exists(keys.lock("nightly"))


def test_only_one_of_many_concurrent_holders_gets_the_lock(r):
    winners = []
    barrier = threading.Barrier(20)

    def contend() -> None:
        barrier.wait(10)
        try:
            with frappe.job_lock("race", timeout=30):
                winners.append(1)
                time.sleep(0.5)
        except frappe.LockHeld:
            pass

    threads = [threading.Thread(target=contend) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(15)
    assert winners == [1]


def test_an_expired_holder_cannot_release_the_next_holders_lock(r):
    first = JobLock("short-lived", timeout=0.2, wait=0)
    first.acquire()
    time.sleep(0.4)  # expired by itself: a dead holder does not wedge the lock
    second = JobLock("short-lived", timeout=30, wait=0)
    second.acquire()
    assert first.release() is False
    assert r.exists(keys.lock("short-lived"))
    assert second.release() is True


def test_wait_polls_until_the_lock_is_free(r):
    holder = JobLock("queue-me", timeout=0.5, wait=0)
    holder.acquire()
    with frappe.job_lock("queue-me", timeout=30, wait=5) as lock:
        assert r.get(keys.lock("queue-me")).decode() == lock.token


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [
        ({"name": "", "timeout": 1}, "name"),
        ({"name": "x", "timeout": 0}, "timeout"),
        ({"name": "x", "timeout": "10"}, "timeout"),
        ({"name": "x", "timeout": 1, "wait": -1}, "wait"),
    ],
)
def test_bad_arguments_name_the_argument(r, kwargs, argument):
    with pytest.raises(frappe.InvalidArgumentError, match=f"^{argument}: got"):
        frappe.job_lock(**kwargs)
    assert not list(r.scan_iter(keys.lock("*")))
