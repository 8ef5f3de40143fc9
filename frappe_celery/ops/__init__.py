"""Tools that read and steer a running system, for the CLI, the Desk and apps: reads
(monitor.py), changes (admin.py), a Redis ACL user's needs (acl.py) and an embedded
redis-server (embedded.py).

They read broker/ and the records, never the worker's code (tests/test_layers.py): workers are
seen through their heartbeats (broker/workers.py).
"""
