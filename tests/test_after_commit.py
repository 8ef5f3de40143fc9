"""enqueue_after_commit: published when the transaction commits, dropped when it rolls back."""

from __future__ import annotations

import json
import os

import pytest

import frappe_celery as frappe
from frappe_celery.broker import keys
from frappe_celery.caller.transaction import begin, commit, rollback, transaction_scope

from .support.processes import wait_for


def pending(r, queue: str) -> list[dict]:
    messages = [json.loads(m) for key in keys.queue_lists(queue) for m in r.lrange(key, 0, -1)]
    return [m["headers"]["id"] for m in reversed(messages)]


def after_commit(job_id: str, queue: str = "reports", **kwargs):
    return frappe.enqueue(
        "tests.jobs.add", queue=queue, job_id=job_id, enqueue_after_commit=True, a=1, b=2, **kwargs
    )


def test_outside_any_transaction_the_job_is_published_at_once(r):
    assert after_commit("now") is None
    assert frappe.get_job_status("now") == "queued"


def test_jobs_are_published_on_commit_in_order(r):
    with transaction_scope():
        for i in range(5):
            assert after_commit(f"tx-{i}") is None
        # Nothing is visible before the commit, as Frappe's own test asserts.
        assert frappe.get_job_status("tx-0") is None
        assert pending(r, "reports") == []
    assert pending(r, "reports") == [frappe.create_job_id(f"tx-{i}") for i in range(5)]


def test_jobs_are_dropped_when_the_transaction_rolls_back(r):
    with pytest.raises(RuntimeError), transaction_scope():
        after_commit("gone")
        raise RuntimeError("the request failed")
    assert frappe.get_job_status("gone") is None
    assert pending(r, "reports") == []


def test_explicit_begin_commit_and_rollback(r):
    begin()
    after_commit("kept")
    begin()
    after_commit("dropped")
    rollback()
    assert frappe.get_job_status("kept") is None
    published = commit()
    assert [job.id for job in published] == [frappe.create_job_id("kept")]
    assert pending(r, "reports") == [frappe.create_job_id("kept")]
    with pytest.raises(frappe.FrappeCeleryError, match="without begin"):
        commit()


def test_bad_input_still_raises_at_the_call(r):
    with transaction_scope(), pytest.raises(frappe.InvalidArgumentError, match="queue"):
        frappe.enqueue("tests.jobs.add", queue="nope", enqueue_after_commit=True, a=1, b=2)


def test_a_failed_publish_is_reported_and_the_others_are_published(r, tmp_path):
    from .support.settings import TEST_CONFIG

    original = os.environ["FRAPPE_CELERY_CONFIG"]
    path = tmp_path / "small_queue.json"
    path.write_text(json.dumps({**TEST_CONFIG, "max_queued_jobs": 2}))
    os.environ["FRAPPE_CELERY_CONFIG"] = str(path)
    frappe.reload_settings()
    try:
        with pytest.raises(frappe.PublishError) as caught, transaction_scope():
            for i in range(3):
                after_commit(f"full-{i}", queue="batch")
    finally:
        os.environ["FRAPPE_CELERY_CONFIG"] = original
        frappe.reload_settings()
    error = caught.value
    assert [job_id for job_id, _ in error.failures] == [frappe.create_job_id("full-2")]
    assert isinstance(error.failures[0][1], frappe.QueueOverloaded)
    assert pending(r, "batch") == [frappe.create_job_id("full-0"), frappe.create_job_id("full-1")]


@pytest.mark.parametrize(("should_fail", "child_runs"), [(False, True), (True, False)])
def test_inside_a_job_after_commit_jobs_wait_for_the_job_to_succeed(
    r, shared_worker, should_fail, child_runs
):
    child_key = f"test:child:{should_fail}"
    parent = frappe.enqueue(
        "tests.jobs.tx.enqueue_child_after_commit",
        queue="default",
        child_key=child_key,
        should_fail=should_fail,
    )
    wait_for(lambda: parent.get_status() in ("finished", "failed"), 20)
    if child_runs:
        wait_for(lambda: r.llen(child_key) == 1, 20)
    else:
        # Give a wrongly published child every chance to run before asserting it did not.
        frappe.enqueue("tests.jobs.record", queue="short", key=child_key + ":probe")
        wait_for(lambda: r.llen(child_key + ":probe") == 1, 20)
        assert r.llen(child_key) == 0
        assert pending(r, "short") == []


def test_sqlalchemy_rows_and_jobs_are_committed_together_or_not_at_all(r, tmp_path):
    from sqlalchemy import Column, Integer, String, create_engine, select
    from sqlalchemy.orm import Session, declarative_base

    from frappe_celery.integrations.sqlalchemy import track_session

    Base = declarative_base()

    class Invoice(Base):
        __tablename__ = "invoice"
        id = Column(Integer, primary_key=True)
        name = Column(String, unique=True)

    engine = create_engine(f"sqlite:///{tmp_path / 'app.db'}")
    Base.metadata.create_all(engine)

    with Session(engine) as session, track_session(session):
        session.add(Invoice(name="INV-1"))
        after_commit("inv-1")
        assert frappe.get_job_status("inv-1") is None
        session.commit()
    assert frappe.get_job_status("inv-1") == "queued"

    with Session(engine) as session, track_session(session):
        session.add(Invoice(name="INV-2"))
        after_commit("inv-2")
        session.rollback()
    # Closing with the transaction still open is a rollback too.
    with Session(engine) as session, track_session(session):
        session.add(Invoice(name="INV-3"))
        session.flush()
        after_commit("inv-3")

    with Session(engine) as session:
        names = session.scalars(select(Invoice.name)).all()
    assert names == ["INV-1"]
    assert frappe.get_job_status("inv-2") is None
    assert frappe.get_job_status("inv-3") is None
    assert pending(r, "reports") == [frappe.create_job_id("inv-1")]
