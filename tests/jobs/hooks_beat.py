"""Hooks for the real-beat tests: one entry every 2 seconds (6 fields, seconds last)."""

scheduler_events = {"cron": {"* * * * * */2": ["tests.jobs.sched.tick"]}}
