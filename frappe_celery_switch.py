"""Loaded by ``frappe_celery_switch.pth`` at the start of every Python process of a bench.

``frappe-celery bench enable`` writes that one-line ``.pth`` file into the bench's
virtualenv. This module must cost nothing in processes that never import Frappe (pip, bench's
own tools): it only registers an import hook, and imports frappe-celery when, and only when,
``frappe.utils.background_jobs`` is loaded. Right after that module runs, and before any other
module can import a name from it, the hook applies the switch
(``frappe_celery.integrations.frappe.switch.apply``); likewise, right after Frappe's Scheduled
Job Type module runs, its sync and queue choice learn ``cron_long`` and the ``*_short`` keys
(``frappe_celery.integrations.frappe.scheduled_jobs.install``), the Desk's RQ Job and RQ
Worker controllers read Celery's jobs and workers (``...frappe.desk``), and ``bench doctor``
and the System Health Report count Celery's workers and beat (``...frappe.diagnostics``), and
``frappe.publish_progress`` inside a job records the progress on the job (``...frappe.progress``),
and the RQ Job form and list get Retry buttons and show progress (``...frappe.desk``).
``FRAPPE_CELERY_SWITCH=off`` in a process's environment leaves that one process on RQ.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import os
import sys
from collections.abc import Sequence
from types import ModuleType
from typing import Any

TARGET = "frappe.utils.background_jobs"
SCHEDULED_JOB_TYPE = "frappe.core.doctype.scheduled_job_type.scheduled_job_type"
RQ_JOB = "frappe.core.doctype.rq_job.rq_job"
RQ_WORKER = "frappe.core.doctype.rq_worker.rq_worker"
DOCTOR = "frappe.utils.doctor"
SCHEDULER = "frappe.utils.scheduler"
REALTIME = "frappe.realtime"
FORM_META = "frappe.desk.form.meta"


def _switch(module: ModuleType) -> None:
    from frappe_celery.integrations.frappe.switch import apply

    apply()


def _scheduled_jobs(module: ModuleType) -> None:
    from frappe_celery.integrations.frappe.scheduled_jobs import install

    install(module)


def _rq_job(module: ModuleType) -> None:
    from frappe_celery.integrations.frappe.desk import install_rq_job

    install_rq_job(module)


def _rq_worker(module: ModuleType) -> None:
    from frappe_celery.integrations.frappe.desk import install_rq_worker

    install_rq_worker(module)


def _doctor(module: ModuleType) -> None:
    from frappe_celery.integrations.frappe.diagnostics import install_doctor

    install_doctor(module)


def _scheduler(module: ModuleType) -> None:
    from frappe_celery.integrations.frappe.diagnostics import install_scheduler

    install_scheduler(module)


def _realtime(module: ModuleType) -> None:
    from frappe_celery.integrations.frappe.progress import install

    install(module)


def _form_meta(module: ModuleType) -> None:
    from frappe_celery.integrations.frappe.desk import install_form_meta

    install_form_meta(module)


# Module -> what to do right after it has run.
AFTER_IMPORT = {
    TARGET: _switch,
    SCHEDULED_JOB_TYPE: _scheduled_jobs,
    RQ_JOB: _rq_job,
    RQ_WORKER: _rq_worker,
    DOCTOR: _doctor,
    SCHEDULER: _scheduler,
    REALTIME: _realtime,
    FORM_META: _form_meta,
}


class _SwitchingLoader(importlib.abc.Loader):
    def __init__(self, loader: Any) -> None:
        self.loader = loader

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self.loader.create_module(spec)  # type: ignore[no-any-return]

    def exec_module(self, module: ModuleType) -> None:
        self.loader.exec_module(module)
        AFTER_IMPORT[module.__name__](module)


class _SwitchFinder(importlib.abc.MetaPathFinder):
    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in AFTER_IMPORT:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None:
            return None
        spec.loader = _SwitchingLoader(spec.loader)
        return spec


def install() -> None:
    """Register the import hook (once)."""
    if os.environ.get("FRAPPE_CELERY_SWITCH", "").lower() in ("off", "0", "false", "no"):
        return
    # Modules Frappe loaded before this ran: act now.
    for name, after_import in AFTER_IMPORT.items():
        if name in sys.modules:
            after_import(sys.modules[name])
    if not any(isinstance(finder, _SwitchFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, _SwitchFinder())


install()
