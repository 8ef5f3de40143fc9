"""What a ``celery -A frappe_celery worker`` process runs: the one task (task.py) around one
attempt of a job (attempt.py), the worker's classes (process.py), the stop command
(control.py), the heartbeat and reaper (maintenance.py), memory at fork (memory.py) and the
--burst / --queue-order steps (options.py).

task.py, control.py, maintenance.py and memory.py register a task and signal handlers: a worker
and beat import them as they start (celery_app.WORKER_MODULES), nothing else does.
"""
