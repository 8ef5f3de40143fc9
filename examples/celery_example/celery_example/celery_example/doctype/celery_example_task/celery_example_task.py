import frappe
from frappe.model.document import Document


class CeleryExampleTask(Document):
	@frappe.whitelist()
	def process_in_background(self, note=None):
		"""Run :meth:`process` in a worker (Frappe's enqueue_doc); returns the job's id."""
		job = frappe.enqueue_doc(self.doctype, self.name, "process", queue="short", note=note)
		return job.id

	def process(self, note=None):
		self.db_set("result", f"processed by {frappe.session.user}: {note}")

	@frappe.whitelist()
	def submit_in_background(self):
		"""Submit in a worker after this request commits (Document.queue_action)."""
		self.queue_action("submit")

	def on_submit(self):
		self.db_set("result", f"submitted in background by {frappe.session.user}")

	@frappe.whitelist()
	def bulk_mark(self, names: list):
		"""The shape of HRMS's hrms/hr/doctype/shift_assignment_tool/shift_assignment_tool.py
		(bulk_assign_shift): a tool form's unsaved values, a private bound method enqueued."""
		frappe.enqueue(self._bulk_mark, timeout=3000, names=names)

	def _bulk_mark(self, names: list):
		# self is the form as it was in memory when enqueued: never saved.
		for name in names:
			frappe.db.set_value(
				"Celery Example Task", name, "result", f"marked by {self.title} at {self.posting_time}"
			)
