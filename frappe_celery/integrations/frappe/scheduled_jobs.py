"""``cron_long``, ``cron_short`` and the ``*_short`` keys of ``scheduler_events`` in a bench.

Frappe's Scheduled Job Type knows a fixed set of frequencies and sends every ``Cron`` job to
the ``default`` queue, where it is killed at 300 s (frappe/frappe#32631). Its sync (``bench
migrate``, ``install-app``) treats any dict-valued key as ``cron`` and then deletes those rows
again, since they are not under ``cron``; a ``daily_short`` list fails validation and stops the
migrate. frappe-celery's table (``scheduler/entries.py``) has those keys, so two Frappe
functions are wrapped, nothing else:

* ``sync_jobs`` gets ``scheduler_events`` in Frappe's own terms: ``cron_long`` / ``cron_short``
  folded into ``cron``, and a key whose frequency Frappe lacks (``daily_short``, ``yearly_long``)
  into its frequency without the suffix. Frappe's keys, and keys no table knows, pass as they are
  (Frappe reports those itself).
* ``ScheduledJobType.get_queue_name`` answers the queue of the key an app declared the method
  under, when that key names one (``_long``, ``_short``, ``cron_long``, ``cron_short``);
  otherwise Frappe's own answer.

Installed by the bench switch when Frappe loads the Scheduled Job Type module
(``frappe_celery_switch.py``), and by the bench's beat (``beat.py``).
"""

from __future__ import annotations

import functools
import importlib
import sys
from typing import Any

from frappe_celery.integrations.frappe import _frappe
from frappe_celery.scheduler.entries import CRON_KEYS, base_event, known_event_keys, queue_for

MODULE = "frappe.core.doctype.scheduled_job_type.scheduled_job_type"
_INSTALLED = "__frappe_celery_wrapped__"


def frappe_frequency(key: str) -> str:
    """The Scheduled Job Type frequency Frappe's sync derives from a ``scheduler_events`` key."""
    return key.replace("_", " ").title()


def in_frappes_terms(events: dict[str, Any], frequencies: set[str]) -> dict[str, Any]:
    """``events`` with the keys Frappe lacks folded into the ones it has (see the module)."""
    ours = set(known_event_keys())
    folded: dict[str, Any] = {}
    for key, value in events.items():
        if key in CRON_KEYS and isinstance(value, dict):
            crons = folded.setdefault("cron", {})
            for expression, methods in value.items():
                crons[expression] = [*crons.get(expression, []), *methods]
            continue
        target = key
        if key in ours and frappe_frequency(key) not in frequencies:
            target = base_event(key)
        if isinstance(value, list) and isinstance(folded.get(target), list):
            folded[target] = [*folded[target], *value]
        else:
            folded[target] = value
    return folded


def declared_queue(events: dict[str, Any], method: str, cron_format: str | None) -> str | None:
    """The queue of the suffixed key ``method`` is declared under (None: no such key)."""
    for key, value in events.items():
        if base_event(key) == key:  # no queue suffix: Frappe's own queue choice stands
            continue
        if isinstance(value, dict):
            if method in value.get(cron_format or "", []):
                return queue_for(key)
        elif isinstance(value, list | tuple) and method in value:
            return queue_for(key)
    return None


def _frequencies() -> set[str]:
    meta = _frappe().get_meta("Scheduled Job Type")
    return set((meta.get_field("frequency").options or "").split("\n"))


def install(module: Any = None) -> bool:
    """Wrap the module's ``sync_jobs`` and ``ScheduledJobType.get_queue_name`` (once); False if
    they already were. Imports the module when not given."""
    if module is None:
        module = sys.modules.get(MODULE) or importlib.import_module(MODULE)
    if getattr(module.sync_jobs, _INSTALLED, False):
        return False
    frappe_sync = module.sync_jobs
    frappe_queue_name = module.ScheduledJobType.get_queue_name

    @functools.wraps(frappe_sync)
    def sync_jobs(hooks: dict[str, Any] | None = None) -> Any:
        events = hooks or _frappe().get_hooks("scheduler_events")
        return frappe_sync(in_frappes_terms(dict(events), _frequencies()))

    def get_queue_name(self: Any) -> str:
        events = _frappe().get_hooks("scheduler_events")
        queue = declared_queue(events, self.method, self.cron_format)
        return queue or str(frappe_queue_name(self))

    setattr(sync_jobs, _INSTALLED, True)
    module.sync_jobs = sync_jobs
    module.ScheduledJobType.get_queue_name = get_queue_name
    return True
