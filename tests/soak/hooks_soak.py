"""Hooks for the soak (tests/soak/test_soak.py): one scheduled entry every 5 seconds (6 cron
fields, seconds last), fired by a real beat through the same enqueue path as every job."""

scheduler_events = {"cron": {"* * * * * */5": ["tests.soak.jobs.tick"]}}
