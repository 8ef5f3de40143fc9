"""Jobs queued by the previous layout (flat modules) run on this one.

tests/legacy/queued_by_0_1_flat.json holds every Redis key the flat layout's enqueue wrote for
two jobs: an ``enqueue_doc`` job, whose method travels as ``frappe_celery.jobs.run_doc_method``
(now an alias of ``frappe_celery.builtin_jobs``), and a plain one. They are put back as written
(each message signed again with this session's key, as its caller would have signed it with
the shared key), and a worker of this layout runs them (tests/legacy/generate.py made the file).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

import frappe_celery as frappe
from frappe_celery.broker import signing

from .support.processes import wait_for

FIXTURE = Path(__file__).resolve().parent / "legacy" / "queued_by_0_1_flat.json"


def put_back(client, written: dict, key: str) -> None:
    for name, entry in written.items():
        kind, value, pttl = entry["type"], entry["value"], entry["pttl"]
        if kind == "hash":
            client.hset(name, mapping=value)
        elif kind == "list":
            client.rpush(name, *[resign(item, key) for item in value])
        else:
            raise AssertionError(f"{name}: a {kind} in the fixture")
        if pttl > 0:
            client.pexpire(name, pttl)


def resign(item: str, key: str) -> str:
    """A queued message, signed with ``key``; any other list item as it is."""
    try:
        envelope = json.loads(item)
    except ValueError:
        return item
    if not isinstance(envelope, dict) or "headers" not in envelope:
        return item
    headers = envelope["headers"]
    headers[signing.SIGNATURE_HEADER] = signing.sign(key, headers, envelope["body"])
    return json.dumps(envelope)


def test_jobs_queued_by_the_flat_layout_run_on_this_layout(r, start_worker):
    fixture = json.loads(FIXTURE.read_text())
    doc_job, plain_job = fixture["jobs"]
    assert "frappe_celery.jobs.run_doc_method" in json.dumps(fixture["keys"])
    put_back(r, fixture["keys"], os.environ[signing.KEY_ENV])
    # Run by this layout's worker: a dedicated one, or the session's shared worker, which may
    # take them first (it consumes default too).
    start_worker("default")

    statuses = lambda: {frappe.get_job_status(doc_job), frappe.get_job_status(plain_job)}  # noqa: E731
    wait_for(lambda: statuses() <= {"finished", "failed"}, 30)
    assert statuses() == {"finished"}, [frappe.get_job(job).exc_info for job in fixture["jobs"]]
    pushed = [json.loads(value) for value in r.lrange("test:legacy", 0, -1)]
    assert ["Legacy Doc", "LD-1", "queued by the flat layout"] in pushed
    assert "plain job queued by the flat layout" in pushed
    assert frappe.get_job(doc_job).return_value() == "Legacy Doc/LD-1: queued by the flat layout"


@pytest.mark.unit
def test_the_aliases_name_the_same_objects():
    """The paths that travel in messages and settings name what the new modules define."""
    import frappe_celery.builtin_jobs
    import frappe_celery.jobs
    import frappe_celery.transport
    from frappe_celery.broker import transport

    assert frappe_celery.jobs.run_doc_method is frappe_celery.builtin_jobs.run_doc_method
    assert frappe_celery.jobs.run_bound_method is frappe_celery.builtin_jobs.run_bound_method
    assert frappe_celery.transport.Transport is transport.Transport
    assert frappe_celery.transport.SentinelTransport is transport.SentinelTransport
