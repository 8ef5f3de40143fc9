// frappe-celery (integrations/frappe/desk.py): added after Frappe's own RQ Job list script.
// Actions > Retry enqueues the checked failed, stopped or canceled jobs again; a stuck job (still
// started past its hard time limit) shows a red "Stuck" instead of its status.
(function () {
	const settings = frappe.listview_settings["RQ Job"] || {};
	const frappes_onload = settings.onload;
	const frappes_get_indicator = settings.get_indicator;
	settings.get_indicator = function (doc) {
		if (doc.stuck) return [__("Stuck"), "red", "status,=,started"];
		if (frappes_get_indicator) return frappes_get_indicator(doc);
	};
	settings.onload = function (listview) {
		if (frappes_onload) frappes_onload(listview);
		if (!has_common(frappe.user_roles, ["Administrator", "System Manager"])) return;
		listview.page.add_actions_menu_item(
			__("Retry"),
			() => {
				const job_ids = listview.get_checked_items(true);
				if (!job_ids.length) {
					frappe.msgprint(__("Check the failed jobs to retry first."));
					return;
				}
				frappe
					.xcall("frappe.core.doctype.rq_job.rq_job.retry_jobs", { job_ids })
					.then((count) => {
						frappe.show_alert(__("{0} jobs enqueued again", [count]));
						listview.refresh();
					});
			},
			false
		);
	};
	frappe.listview_settings["RQ Job"] = settings;
})();
