"""The hooks module the test workers load (FRAPPE_CELERY_HOOKS)."""

before_job = ["tests.jobs.hook_before"]
after_job = ["tests.jobs.hook_after"]
