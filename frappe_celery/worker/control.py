"""A worker remote-control command to stop one running job without revoking its id.

Celery's ``revoke(terminate=True)`` also puts the task id in every worker's revoked set (kept
for hours), and job ids are reused by design (retries, scheduled jobs, job_id dedup): every
later run of that id would be thrown away. ``frappe_celery_stop`` terminates only the request
running now; the worker then announces it revoked, which records the job canceled
(worker/task.py's record_revoked).
"""

from __future__ import annotations

from typing import Any

from celery.platforms import signals as platform_signals
from celery.worker import state as worker_state
from celery.worker.control import control_command

from frappe_celery.broker.workers import STOP_COMMAND, STOP_SIGNAL


@control_command(name=STOP_COMMAND, args=[("job_id", str)], signature="<job_id>")
def frappe_celery_stop(state: Any, job_id: str, **_: Any) -> dict[str, str]:
    for request in list(worker_state.active_requests):
        if request.id == job_id:
            request.terminate(state.consumer.pool, signal=platform_signals.signum(STOP_SIGNAL))
            return {"ok": f"stopping {job_id}"}
    return {"ok": f"{job_id} is not running here"}
