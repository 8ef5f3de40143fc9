// frappe-celery (integrations/frappe/desk.py): added after Frappe's own RQ Job form script.
// Progress and a stuck job are shown on the form; a failed, stopped or canceled job can be
// retried (System Manager only; the server checks it again).
frappe.ui.form.on("RQ Job", {
	refresh(frm) {
		const doc = frm.doc;
		if (doc.progress) {
			frm.dashboard.add_comment(
				__("Progress: {0}% {1}", [doc.progress, doc.progress_message || ""]),
				"blue",
				true
			);
		}
		if (doc.stuck) {
			frm.dashboard.add_comment(doc.stuck, "red", true);
		}
		if (
			["failed", "stopped", "canceled"].includes(doc.status) &&
			has_common(frappe.user_roles, ["Administrator", "System Manager"])
		) {
			frm.add_custom_button(__("Retry"), () => {
				frappe
					.xcall("frappe.core.doctype.rq_job.rq_job.retry_job", { job_id: doc.name })
					.then(() => {
						frappe.show_alert(__("Job enqueued again"));
						frm.reload_doc();
					});
			});
		}
	},
});
