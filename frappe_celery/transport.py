"""Alias of :mod:`frappe_celery.broker.transport`, kept because its class paths may be named in
settings: ``broker_transport = "frappe_celery.transport:Transport"`` (or
``...:SentinelTransport``) in a celeryconfig or a kombu ``Connection(transport=...)`` written
for an earlier version."""

from __future__ import annotations

from frappe_celery.broker.transport import Channel, SentinelTransport, Transport

__all__ = ["Channel", "SentinelTransport", "Transport"]
