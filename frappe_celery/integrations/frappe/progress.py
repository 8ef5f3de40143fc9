"""``frappe.publish_progress`` inside a job also lands on the job's record.

Frappe's ``publish_progress(percent, title, doctype, docname, description, ...)`` sends a
realtime event to the browser and nothing else, so under RQ a job's progress is seen only by the
page that asked for it. Right after Frappe loads ``frappe.realtime`` (frappe_celery_switch.py),
:func:`install` wraps it: the event still goes out exactly as Frappe sends it, then, inside a
job, the percent and the note (the description, else the title) are recorded on the job's record,
where `frappe-celery jobs`, `status`, `top` and the Desk's RQ Job form show them. Outside a job
the wrapper only sends the event.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable
from types import ModuleType
from typing import Any

from frappe_celery.job import get_current_job

logger = logging.getLogger(__name__)

_INSTALLED = "__frappe_celery_progress__"


def recording(original: Callable[..., Any]) -> Callable[..., Any]:
    """``original`` (Frappe's publish_progress), also recording the progress on the job."""
    signature = inspect.signature(original)

    @functools.wraps(original)
    def publish_progress(*args: Any, **kwargs: Any) -> Any:
        result = original(*args, **kwargs)
        job = get_current_job()
        if job is not None:
            try:
                given = signature.bind(*args, **kwargs).arguments
                note = given.get("description") or given.get("title")
                job.set_progress(float(given["percent"]), str(note) if note else None)
            except Exception:
                # The event went out; a progress the record cannot take never fails the job.
                logger.warning("job %s: progress not recorded", job.id, exc_info=True)
        return result

    setattr(publish_progress, _INSTALLED, True)
    return publish_progress


def install(module: ModuleType) -> bool:
    """Wrap ``module.publish_progress`` (``frappe.realtime``'s); False if done already."""
    current = module.publish_progress
    if getattr(current, _INSTALLED, False):
        return False
    module.publish_progress = recording(current)  # type: ignore[attr-defined]
    return True
