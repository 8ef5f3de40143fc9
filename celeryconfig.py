"""Celery settings you may override (loaded by frappe-celery after its own derived settings).

frappe-celery derives the reliable defaults from its own configuration (see README,
"Configuration"): JSON-only messages, acks late + reject on worker lost, prefetch multiplier 1,
strict queue order, priorities, and a visibility timeout longer than the longest hard time limit.
Set any other Celery setting here, by its lowercase name. These cannot be set here (they are
frappe-celery's): broker_url (use FRAPPE_CELERY_BROKER_URL), task_serializer, accept_content,
result_serializer, result_accept_content; a visibility_timeout at or below the longest hard time
limit is refused at start-up.

Point FRAPPE_CELERY_CELERYCONFIG at another module name to use a different file.
"""

# Restart a pool child after this many jobs (Frappe's RQ_MAX_JOBS plays this role): bounds the
# memory a leaky job can hold on to.
worker_max_tasks_per_child = 5000

# Dict settings are merged key by key with frappe-celery's, e.g. this keeps the derived
# visibility timeout and only changes how often workers look for messages to restore:
# broker_transport_options = {"unacked_restore_interval": 10, "unacked_restore_throttle": 1}

# Examples:
# worker_concurrency = 4
# worker_send_task_events = True        # for Flower or celery events, if you use them
