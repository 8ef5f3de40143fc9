"""Imported by ``celery -A frappe_celery worker`` started in a bench (Celery's ``imports``).

It runs in the worker's main process before the pool forks: Frappe is loaded once, so each pool
child starts warm, and the switch is applied, so what a job enqueues (``frappe.enqueue``,
``queue_action``) goes to Celery too, whether or not the bench's ``.pth`` switch is enabled.
"""

from __future__ import annotations

import frappe
import frappe.model.document  # noqa: F401

from .switch import apply

apply()
