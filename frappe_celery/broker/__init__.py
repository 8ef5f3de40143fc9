"""What lives in Redis and how it is read and written, for every process: key names (keys.py),
the Lua scripts (scripts.py, lua/), the job message (wire.py, signing.py), kombu's transport
(transport.py), a dead worker's held messages (recovery.py), the job lock (lock.py) and the
workers' heartbeats (workers.py).

Imports only the shared modules at the top of the package, never caller/, worker/, ops/,
scheduler/, cli/ or integrations/ (tests/test_layers.py).
"""
