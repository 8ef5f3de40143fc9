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
