"""Hooks with every kind of scheduler_events entry, for the mapping tests."""

scheduler_events = {
    "all": ["tests.jobs_sched.tick"],
    "hourly": ["tests.jobs_sched.tick"],
    "hourly_long": ["tests.jobs_sched.tick"],
    "hourly_short": ["tests.jobs_sched.tick"],
    "hourly_maintenance": ["tests.jobs_sched.tick"],
    "daily": ["tests.jobs_sched.tick"],
    "daily_long": ["tests.jobs_sched.tick"],
    "daily_maintenance": ["tests.jobs_sched.tick"],
    "weekly": ["tests.jobs_sched.tick"],
    "weekly_long": ["tests.jobs_sched.tick"],
    "monthly": ["tests.jobs_sched.tick"],
    "monthly_long": ["tests.jobs_sched.tick"],
    "yearly": ["tests.jobs_sched.tick"],
    "annual": ["tests.jobs_sched.tick"],
    "annual_long": ["tests.jobs_sched.tick"],
    "cron": {"*/15 * * * *": ["tests.jobs_sched.tick"], "@daily": ["tests.jobs_sched.other"]},
    "cron_long": {"0 2 * * *": ["tests.jobs_sched.tick"]},
    "cron_short": {"* * * * * */2": ["tests.jobs_sched.other"]},
}
