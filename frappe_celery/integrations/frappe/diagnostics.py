"""Frappe's own diagnostics, telling the truth on a switched bench.

* ``bench doctor`` counts workers with its own ``rq.Worker.all`` (``frappe/utils/doctor.py``):
  :func:`install_doctor` makes it count the Celery workers (their heartbeats), one per worker
  process, as the Desk's RQ Worker list shows them; its pending jobs already come from the
  switched ``get_queue``.
* The System Health Report (and ``frappe.utils.scheduler.is_schduler_process_running``, so
  anything else that asks) sees a scheduler only when ``bench schedule`` holds its file lock on
  this host: :func:`install_scheduler` also counts a ``celery -A frappe_celery beat`` that holds
  the leader lock, on any host.

``frappe_celery_switch`` calls these right after Frappe's modules load.
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType

from frappe_celery.errors import BrokerUnreachable
from frappe_celery.integrations.frappe import rq_compat
from frappe_celery.scheduler import state


def beat_leads() -> bool:
    """Whether a ``celery -A frappe_celery beat`` holds the leader lock (False: Redis away)."""
    try:
        return state.current_leader() is not None
    except BrokerUnreachable:
        return False


def install_doctor(module: ModuleType) -> None:
    module.get_workers = rq_compat.get_workers  # type: ignore[attr-defined]


def scheduler_running(original: Callable[[], bool]) -> Callable[[], bool]:
    def is_schduler_process_running() -> bool:
        """``bench schedule`` runs on this host (Frappe's own check), or a Celery beat leads."""
        return original() or beat_leads()

    is_schduler_process_running.frappe_celery = True  # type: ignore[attr-defined]
    return is_schduler_process_running


def install_scheduler(module: ModuleType) -> None:
    # Frappe 15 has no such check: its report shows the scheduler's enabled setting only.
    original = getattr(module, "is_schduler_process_running", None)
    if original is not None and not getattr(original, "frappe_celery", False):
        module.is_schduler_process_running = scheduler_running(original)  # type: ignore[attr-defined]
