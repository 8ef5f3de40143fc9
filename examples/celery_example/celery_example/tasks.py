"""Background jobs of the example app, written as any Frappe app writes them."""

import datetime
import decimal

import frappe
from frappe.model.document import Document


def before_job(method=None, kwargs=None, transaction_type=None):
	# Seen by the job itself: proves the hook ran first, in the job's own context.
	frappe.flags.celery_example_before_job = method


def after_job(method=None, kwargs=None, result=None):
	label = (kwargs or {}).get("label")
	if label:
		frappe.cache.set_value(f"celery_example:after_job:{label}", repr(result), expires_in_sec=600)


def record(label, **kwargs):
	"""Insert a ToDo saying who ran the job and what the before_job hook saw."""
	seen = frappe.flags.celery_example_before_job
	description = f"{label}|user={frappe.session.user}|before_job={seen}"
	todo = frappe.get_doc({"doctype": "ToDo", "description": description}).insert(ignore_permissions=True)
	frappe.local.job.after_job.add(lambda: frappe.cache.set_value(f"celery_example:callback:{label}", "ran"))
	return todo.name


def fail_after_write(label):
	"""Write, then fail: Frappe rolls the write back and keeps an Error Log."""
	frappe.get_doc({"doctype": "ToDo", "description": f"{label}|should be rolled back"}).insert(
		ignore_permissions=True
	)
	raise ValueError(f"{label}: failing on purpose")


def retry_then_succeed(label, failures=2):
	"""Raise frappe.RetryBackgroundJobError until it has failed ``failures`` times."""
	attempts = frappe.cache.incr(f"celery_example:attempts:{label}")
	if attempts <= failures:
		raise frappe.RetryBackgroundJobError(f"{label}: attempt {attempts}")
	return record(label)


def describe_arguments(label, doc, options, when, amount, items, pair, callback):
	"""Record the types the job received: they must be the ones the caller passed."""
	kinds = {
		"doc": isinstance(doc, Document) and f"{doc.doctype}:{doc.name}:{doc.description}",
		"options": type(options).__name__ + ":" + str(options.get("mode")),
		"when": isinstance(when, datetime.datetime) and when.isoformat(),
		"amount": isinstance(amount, decimal.Decimal) and str(amount),
		"items": type(items[0]).__name__,
		"pair": type(pair).__name__,
		"callback": callback(),
	}
	frappe.cache.set_value(f"celery_example:arguments:{label}", frappe.as_json(kinds), expires_in_sec=600)
	return kinds


def answer():
	return "from a callable argument"


def every_five_minutes():
	record("scheduled every_five_minutes")


def hourly_long():
	record("scheduled hourly_long")


def daily():
	record("scheduled daily")


def every_ten_minutes_long():
	record("scheduled every_ten_minutes_long")


def daily_short():
	record("scheduled daily_short")


def current_job_info(label):
	"""What Frappe's own modules read from rq.get_current_job() while a job runs."""
	import rq

	job = rq.get_current_job()
	info = {"id": job.id, "timeout": job.timeout, "enqueued_at": job.enqueued_at.isoformat()}
	info["method"] = job.kwargs["method"]
	frappe.cache.set_value(f"celery_example:current_job:{label}", frappe.as_json(info), expires_in_sec=600)
	return info


def update_locked(label, todo):
	"""Update a row another transaction holds: waits at most 1 s, then Frappe raises
	QueryTimeoutError (a lock wait timeout), which is retried."""
	frappe.db.sql("set session innodb_lock_wait_timeout = 1")
	frappe.db.set_value("ToDo", todo, "description", f"{label}|updated")


def sleep_for(label, seconds=60):
	"""A long job, to be stopped from the Desk."""
	import time

	time.sleep(seconds)


class Mailer:
	"""A plain object of the app with a bound method enqueued, as Frappe's QueueBuilder
	(frappe/email/doctype/email_queue/email_queue.py: frappe.enqueue(self.send_emails, ...))."""

	def __init__(self, subject, recipients, sent_at, attachment):
		self.subject = subject
		self._recipients = recipients
		self.sent_at = sent_at
		self._attachment = attachment

	def queue(self, label):
		return frappe.enqueue(self.send, label=label, queue="short")

	def send(self, label):
		state = {
			"type": type(self).__name__,
			"subject": self.subject,
			"recipients": sorted(self._recipients),
			"recipients_type": type(self._recipients).__name__,
			"sent_at": isinstance(self.sent_at, datetime.timedelta) and self.sent_at.total_seconds(),
			"attachment": isinstance(self._attachment, bytes) and self._attachment.hex(),
		}
		frappe.cache.set_value(f"celery_example:mailer:{label}", frappe.as_json(state), expires_in_sec=600)


def describe_values(label, **values):
	"""Record each value's type name and repr: they must be exactly what the caller passed."""
	seen = {name: [type(value).__name__, repr(value)] for name, value in values.items()}
	frappe.cache.set_value(f"celery_example:values:{label}", frappe.as_json(seen), expires_in_sec=600)


def describe_document(label, doc):
	"""Record a Document argument's child rows and Time values as the job received them."""
	seen = {
		"doctype": doc.doctype,
		"posting_time": [type(doc.posting_time).__name__, str(doc.posting_time)],
		"items": [
			[row.doctype, type(row).__name__, row.item, type(row.at_time).__name__, str(row.at_time)]
			for row in doc.items
		],
	}
	frappe.cache.set_value(f"celery_example:document:{label}", frappe.as_json(seen), expires_in_sec=600)


def resumable_repost(label, seconds=30):
	"""ERPNext's erpnext/stock/doctype/repost_item_valuation/repost_item_valuation.py treats
	RQ's JobTimeoutException as recoverable (the repost resumes next hour); Frappe's
	data_import.py marks the import "Timed Out" on it."""
	import time

	from celery.exceptions import SoftTimeLimitExceeded
	from rq.timeouts import JobTimeoutException

	try:
		time.sleep(seconds)
	except JobTimeoutException as exc:
		seen = {"rq": True, "celery": isinstance(exc, SoftTimeLimitExceeded)}
		frappe.cache.set_value(f"celery_example:timeout:{label}", frappe.as_json(seen), expires_in_sec=600)
		return "will resume"
	return "finished in time"


def insert_todo(label):
	"""A ToDo saying who ran this and what the before_job hook saw; runs inside a job or not."""
	seen = frappe.flags.celery_example_before_job
	description = f"{label}|user={frappe.session.user}|before_job={seen}"
	todo = frappe.get_doc({"doctype": "ToDo", "description": description})
	return todo.insert(ignore_permissions=True).name


def report_progress(label, percent=42):
	"""Report progress as Frappe code does (frappe.publish_progress), then return."""
	frappe.publish_progress(percent, title="celery_example", description=label)
	return label


def fail_first_time(label):
	"""Fail the first run of ``label``, succeed (recording a ToDo) when run again. The mark is a
	file: a failed job's database writes are rolled back."""
	import tempfile
	from pathlib import Path

	mark = Path(tempfile.gettempdir()) / f"celery_example-failed-once-{label}"
	if not mark.exists():
		mark.touch()
		raise Exception(f"{label}: failing the first time")
	return record(label)


def flaky_io(label, failures=2):
	"""Raise ConnectionError on the first ``failures`` runs of ``label`` (counted in a file: a
	failed job's database writes are rolled back), then record a ToDo."""
	import tempfile
	from pathlib import Path

	runs = Path(tempfile.gettempdir()) / f"celery_example-flaky-{label}"
	count = int(runs.read_text()) + 1 if runs.exists() else 1
	runs.write_text(str(count))
	if count <= failures:
		raise ConnectionError(f"{label}: run {count} refused")
	return record(label)
