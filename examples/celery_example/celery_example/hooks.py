app_name = "celery_example"
app_title = "Celery Example"
app_publisher = "frappe-celery"
app_description = "Background jobs of an ordinary Frappe app, run on Celery"
app_email = "dev@localhost"
app_license = "MIT"

# Run around every background job, as Frappe's execute_job runs them.
before_job = ["celery_example.tasks.before_job"]
after_job = ["celery_example.tasks.after_job"]

scheduler_events = {
	"cron": {
		"*/5 * * * *": ["celery_example.tasks.every_five_minutes"],
	},
	# frappe-celery's keys: a cron job on the long queue, a daily one on short.
	"cron_long": {
		"*/10 * * * *": ["celery_example.tasks.every_ten_minutes_long"],
	},
	"hourly_long": ["celery_example.tasks.hourly_long"],
	"daily": ["celery_example.tasks.daily"],
	"daily_short": ["celery_example.tasks.daily_short"],
}

# frappe-celery's opt-in retries for a function (not a Frappe hook: frappe-celery reads it).
job_retries = {
	"celery_example.tasks.flaky_io": {"max_retries": 2, "backoff": 0.5, "on": ["ConnectionError"]},
}
