"""scheduler_events on Celery beat: entries (what fires when), state (Redis), beat (the loop)."""
