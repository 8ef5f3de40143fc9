"""Hooks with every kind of scheduler_events entry, for the mapping tests."""

scheduler_events = {
    "all": ["tests.jobs.sched.tick"],
    "hourly": ["tests.jobs.sched.tick"],
    "hourly_long": ["tests.jobs.sched.tick"],
    "hourly_short": ["tests.jobs.sched.tick"],
    "hourly_maintenance": ["tests.jobs.sched.tick"],
    "daily": ["tests.jobs.sched.tick"],
    "daily_long": ["tests.jobs.sched.tick"],
    "daily_maintenance": ["tests.jobs.sched.tick"],
    "weekly": ["tests.jobs.sched.tick"],
    "weekly_long": ["tests.jobs.sched.tick"],
    "monthly": ["tests.jobs.sched.tick"],
    "monthly_long": ["tests.jobs.sched.tick"],
    "yearly": ["tests.jobs.sched.tick"],
    "annual": ["tests.jobs.sched.tick"],
    "annual_long": ["tests.jobs.sched.tick"],
    "cron": {"*/15 * * * *": ["tests.jobs.sched.tick"], "@daily": ["tests.jobs.sched.other"]},
    "cron_long": {"0 2 * * *": ["tests.jobs.sched.tick"]},
    "cron_short": {"* * * * * */2": ["tests.jobs.sched.other"]},
}
