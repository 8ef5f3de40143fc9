"""Job functions for tests/bench/test_rq_api.py: RQ's Job and Queue API on a bench switched to
frappe-celery."""

import frappe


def add(a, b, scale=1):
	"""Enqueued RQ's way, with positional arguments (get_queue(...).enqueue(add, 2, 3))."""
	return (a + b) * scale


def current_job_facts():
	"""The running job as rq.get_current_job() shows it to the job itself, as apps read it."""
	from rq import get_current_job

	job = get_current_job()
	return {"id": job.get_id(), "site": job.kwargs.get("site"), "user": frappe.session.user}
