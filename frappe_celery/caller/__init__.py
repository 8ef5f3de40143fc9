"""What a process that enqueues needs (a web request, a console, beat, a job enqueueing more):
validate and encode a call (enqueue.py), push it with its record (publish.py), after the
transaction commits (transaction.py), under fresh ids (ids.py).

Imports the shared modules and broker/, never worker/ (tests/test_layers.py): a web process
loads none of the worker's code. The one exception is ``enqueue(..., is_async=False)``, which
runs the worker's attempt (worker/attempt.py) in the caller, imported on that branch only.
"""
