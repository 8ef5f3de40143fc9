"""The Desk's RQ Job and RQ Worker lists, backed by Celery's jobs and workers.

Both are virtual DocTypes whose controllers read RQ's registries directly
(``frappe/core/doctype/rq_job/rq_job.py``, ``rq_worker/rq_worker.py``). The bench switch
replaces, right after Frappe loads each module (``frappe_celery_switch.py``), the controller
class with a subclass reading frappe-celery's job records and worker heartbeats, and the
module's whitelisted ``stop_job`` / ``remove_failed_jobs`` with ours, as an app's
``override_doctype_class`` would, but for every site of the bench at once. What the Desk shows
and does then: each job of the current site with its queue, status, method, times, arguments
and traceback (``frappe.get_doc("RQ Job", id)``, ``frappe.get_all("RQ Job", filters)``); stop
a running job (recorded ``stopped``, as RQ records it); delete a queued or ended job (its
record too, as RQ's delete); remove the site's failed jobs; the online Celery workers with
their queues, pid, state and current job.
"""

from __future__ import annotations

import functools
import importlib
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from frappe_celery import records
from frappe_celery.config import get_settings
from frappe_celery.errors import InvalidJobOperation
from frappe_celery.integrations.frappe import _frappe, rq_compat
from frappe_celery.job import Job, JobStatus, is_site_job
from frappe_celery.ops import admin, monitor

RQ_JOB = "frappe.core.doctype.rq_job.rq_job"
RQ_WORKER = "frappe.core.doctype.rq_worker.rq_worker"
_INSTALLED = "__frappe_celery_desk__"
STATUSES = [str(status) for status in JobStatus]
# The most rows one list call returns: the Desk's largest page (its list view offers 20, 100,
# 500 and 2500). A call through frappe.desk.reportview.get names any page_length; each row is
# a record fetched and serialized with its arguments (whole documents, at times), so a larger
# number would have one web request read every job record of the site.
MAX_PAGE_LENGTH = 2500
# Who sees jobs, their arguments and tracebacks: Frappe's RQ Job form and actions allow this
# role only (rq_job.py's check_permissions); the list must not show more than the form.
JOB_VIEWER_ROLE = "System Manager"


def _system_time(timestamp: float | None) -> Any:
    """A UTC timestamp as Frappe shows datetimes: naive, in the system time zone."""
    if not timestamp:
        return ""
    from frappe.utils import convert_utc_to_system_timezone

    return convert_utc_to_system_timezone(datetime.fromtimestamp(timestamp, timezone.utc))


def _timestamp(value: datetime | None) -> float | None:
    return value.timestamp() if value else None


def _for_current_site(job: Job) -> bool:
    return bool(job.site == _frappe().local.site)


def serialize_job(job: Job, listed: bool = False, stuck: records.StuckJob | None = None) -> Any:
    """What Frappe's ``serialize_job`` gives the RQ Job form (and, ``listed``, each row of its
    list: there a waiting job's arguments are shown only where known without searching its
    queue, as a page of them could mean reading a long queue once per row). ``stuck``: the
    job's entry in records.stuck_jobs(), if any."""
    frappe = _frappe()
    started, ended = _timestamp(job.started_at), _timestamp(job.ended_at)
    created = _timestamp(job.enqueued_at)
    # The method's arguments (the payload also holds the record's token).
    kwargs = job.known_kwargs() if listed else job.kwargs
    job_name = kwargs.get("job_type") or job.job_name or job.method or ""
    arguments = {"site": job.site, "user": job.user, "method": job.method, "event": job.event,
                 "job_name": job.job_name, "kwargs": kwargs}  # fmt: skip
    return frappe._dict(
        name=job.id,
        job_id=job.id,
        queue=job.queue,
        job_name=job_name,
        status=str(job.get_status(refresh=False) or ""),
        started_at=_system_time(started),
        ended_at=_system_time(ended),
        time_taken=(ended - started) if started and ended else "",
        exc_info=job.exc_info,
        arguments=frappe.as_json(arguments),
        timeout=job.timeout,
        creation=_system_time(created),
        modified=_system_time(ended or started or created),
        _comment_count=0,
        owner=job.user,
        modified_by=job.user,
        # Not fields of Frappe's RQ Job: the form script this module adds shows them.
        progress=job.record.get("progress", "") if not listed else "",
        progress_message=job.record.get("progress_message", "") if not listed else "",
        stuck=_stuck_text(stuck) if job.get_status(refresh=False) == JobStatus.STARTED else "",
    )


def _stuck_text(stuck: records.StuckJob | None) -> str:
    """What the form says of a stuck job, and the list's red "Stuck" shows; else nothing."""
    if stuck is None:
        return ""
    return (
        f"Stuck: still running {stuck.overdue:.0f} s past its hard time limit (its worker frozen "
        "or gone). `frappe-celery stop --stuck` fails it and frees its id."
    )


def _stuck_by_id() -> dict[str, records.StuckJob]:
    return {stuck.job_id: stuck for stuck in records.stuck_jobs()}


def _matching_ids(filters: Any) -> list[str]:
    frappe = _frappe()
    from frappe.utils import compare, make_filter_dict

    def allowed(name: str, values: list[str]) -> list[str]:
        condition = parsed.get(name)
        if not condition:
            return values
        operator, operand = condition
        return [value for value in values if compare(value, operator, operand)]

    parsed = make_filter_dict(filters or [])
    site = frappe.local.site
    found: dict[str, float] = {}
    for queue in allowed("queue", list(get_settings().queues)):
        for status in allowed("status", STATUSES):
            for job_id, when in monitor.job_ids(queue, status):
                if is_site_job(job_id, site):
                    found.setdefault(job_id, when)
    # Newest first across queues: queued, then running, then ended by their end time (RQ's list
    # pages queue by queue, which hides a new job of the last queue behind older ones).
    return sorted(found, key=lambda job_id: found[job_id], reverse=True)


def _list_arguments(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, int, int, str]:
    """(filters, start, page_length, order_by) of a virtual DocType's get_list / get_count:
    Frappe 15 passes one dict of list arguments, Frappe 16 keyword arguments."""
    frappe = _frappe()
    if int(frappe.__version__.split(".")[0]) < 16 and args and isinstance(args[0], dict):
        kwargs = {**args[0], **kwargs}
        args = ()
    names = ("filters", "start", "page_length", "order_by")
    params = {**dict(zip(names, args, strict=False)), **kwargs}
    start = max(0, int(params.get("start") or 0))
    page_length = min(MAX_PAGE_LENGTH, max(0, int(params.get("page_length") or 20)))
    return params.get("filters"), start, page_length, str(params.get("order_by") or "creation desc")


def _rq_job_class(frappe_class: type) -> type:
    class RQJob(frappe_class):  # type: ignore[misc]
        """Frappe's RQ Job, reading frappe-celery's records (see the module)."""

        def load_from_db(self) -> None:
            frappe = _frappe()
            frappe.only_for(JOB_VIEWER_ROLE)
            job = Job.fetch(self.name)
            if job is None:
                raise frappe.DoesNotExistError
            if not _for_current_site(job):
                raise frappe.PermissionError
            stuck = _stuck_by_id().get(job.id)
            super(frappe.model.document.Document, self).__init__(serialize_job(job, stuck=stuck))
            self._job_obj = job

        @property
        def job(self) -> Job:
            return self._job_obj

        @staticmethod
        def get_matching_job_ids(filters: Any) -> list[str]:
            return _matching_ids(filters)

        @staticmethod
        def get_list(*args: Any, **kwargs: Any) -> list[Any]:
            # Reached by frappe.desk.reportview.get for any logged-in user (Website Users
            # too), which checks no permission of a virtual DocType: checked here.
            _frappe().only_for(JOB_VIEWER_ROLE)
            filters, start, page_length, order_by = _list_arguments(args, kwargs)
            ids = _matching_ids(filters)[start : start + page_length]
            stuck = _stuck_by_id()  # one read of the started registries for the whole page
            jobs = [
                serialize_job(job, listed=True, stuck=stuck.get(job.id))
                for job in map(Job.fetch, ids)
                if job is not None
            ]
            return sorted(jobs, key=lambda job: job.creation or "", reverse="desc" in order_by)

        @staticmethod
        def get_count(*args: Any, **kwargs: Any) -> int:
            _frappe().only_for(JOB_VIEWER_ROLE)
            return len(_matching_ids(_list_arguments(args, kwargs)[0]))

        def _check(self) -> None:
            frappe = _frappe()
            frappe.only_for(JOB_VIEWER_ROLE)
            if not _for_current_site(self.job):
                raise frappe.PermissionError

        def delete(self) -> None:
            """As RQ's Job.delete: the job is gone (a refresh then raises NoSuchJobError); a
            running one is stopped first (rq_compat.delete_like_rq)."""
            self._check()
            try:
                rq_compat.delete_like_rq(self.job)
            except InvalidJobOperation as exc:
                _frappe().throw(str(exc))

        def stop_job(self) -> None:
            frappe = _frappe()
            self._check()
            try:
                admin.stop_job(self.job.id)
            except InvalidJobOperation:
                frappe.msgprint(
                    frappe._("Job is not running."), title=frappe._("Invalid Operation")
                )

    return RQJob


def remove_failed_jobs() -> None:
    """Frappe's "Remove Failed Jobs": this site's failed jobs are deleted."""
    frappe = _frappe()
    frappe.only_for(JOB_VIEWER_ROLE)
    admin.remove_failed_jobs(frappe.local.site)


def stop_job(job_id: str) -> None:
    _frappe().get_doc("RQ Job", job_id).stop_job()


def retry_job(job_id: str) -> str:
    """The form's Retry: a failed, stopped or canceled job of this site enqueued again (same
    arguments, site, user and id; admin.retry_job). System Manager only. Returns its id."""
    frappe = _frappe()
    frappe.only_for(JOB_VIEWER_ROLE)
    doc = frappe.get_doc("RQ Job", job_id)  # this site's job, or PermissionError
    try:
        return admin.retry_job(doc.job.id).id
    except InvalidJobOperation as exc:
        frappe.throw(str(exc))
        raise  # not reached: throw raises


def retry_jobs(job_ids: Any) -> int:
    """The list's Actions > Retry: each checked job retried as :func:`retry_job` does; returns
    how many were enqueued again (the others are named in a message)."""
    frappe = _frappe()
    frappe.only_for(JOB_VIEWER_ROLE)
    ids = frappe.parse_json(job_ids) if isinstance(job_ids, str) else list(job_ids or [])
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        frappe.throw(f"job_ids: got {job_ids!r}; expected a list of job ids")
    done, refused = 0, []
    for job_id in ids:
        try:
            retry_job(job_id)
            done += 1
        except frappe.ValidationError as exc:
            refused.append(f"{job_id}: {exc}")
    if refused:
        frappe.msgprint("<br>".join(refused), title=frappe._("Not retried"))
    return done


def serialize_worker(worker: Any) -> Any:
    """What Frappe's ``serialize_worker`` gives the RQ Worker list, from a heartbeat."""
    frappe = _frappe()
    info = worker.info
    current = worker.get_current_job_id()
    if current and not is_site_job(current, frappe.local.site):
        current = None
    return frappe._dict(
        name=worker.name,
        queue=", ".join(worker.queue_names()),
        queue_type=",".join(worker.queue_names()),
        worker_name=worker.name,
        status=worker.get_state(),
        pid=worker.pid,
        current_job_id=current,
        last_heartbeat=_system_time(info.get("last_heartbeat")),
        birth_date=_system_time(info.get("started_at")),
        successful_job_count=0,  # not counted by frappe-celery
        failed_job_count=worker.failed_job_count,
        total_working_time=0,
        _comment_count=0,
        modified=_system_time(info.get("last_heartbeat")),
        creation=_system_time(info.get("started_at")),
        utilization_percent=0,
    )


def install_rq_job(module: Any = None) -> bool:
    module = module or sys.modules.get(RQ_JOB) or importlib.import_module(RQ_JOB)
    if getattr(module, _INSTALLED, False):
        return False
    whitelist = _frappe().whitelist
    module.RQJob = _rq_job_class(module.RQJob)
    module.remove_failed_jobs = whitelist()(remove_failed_jobs)
    module.stop_job = whitelist()(stop_job)
    module.retry_job = whitelist(methods=["POST"])(retry_job)
    module.retry_jobs = whitelist(methods=["POST"])(retry_jobs)
    setattr(module, _INSTALLED, True)
    return True


def _rq_worker_class(frappe_class: type) -> type:
    """Frappe's RQ Worker, for System Managers only, as RQ Job: its list, count and stats are
    reached through frappe.desk.reportview for any logged-in user (Frappe checks no permission
    of a virtual DocType), and name the workers, their queues and this site's running jobs."""

    def for_job_viewers(name: str) -> Any:
        frappes = getattr(frappe_class, name)

        # Its signature stays Frappe's: frappe.call passes only the arguments it names.
        @functools.wraps(frappes)
        def checked(*args: Any, **kwargs: Any) -> Any:
            _frappe().only_for(JOB_VIEWER_ROLE)
            return frappes(*args, **kwargs)

        return staticmethod(checked)

    class RQWorker(frappe_class):  # type: ignore[misc]
        def load_from_db(self) -> None:
            _frappe().only_for(JOB_VIEWER_ROLE)
            super().load_from_db()

        get_list = for_job_viewers("get_list")
        get_count = for_job_viewers("get_count")
        get_stats = for_job_viewers("get_stats")

    return RQWorker


def install_rq_worker(module: Any = None) -> bool:
    module = module or sys.modules.get(RQ_WORKER) or importlib.import_module(RQ_WORKER)
    if getattr(module, _INSTALLED, False):
        return False
    module.serialize_worker = serialize_worker
    module.RQWorker = _rq_worker_class(module.RQWorker)
    setattr(module, _INSTALLED, True)
    return True


# -- the RQ Job form's and list's scripts --------------------------------------------------------

FORM_META = "frappe.desk.form.meta"
RQ_JOB_DOCTYPE = "RQ Job"
_SCRIPTS = Path(__file__).parent / "desk_js"


def install_form_meta(module: Any = None) -> bool:
    """After Frappe's own RQ Job form and list scripts, add ours (desk_js/), as an app's
    ``doctype_js`` hook adds to them, here for every site of the bench.

    Added to what ``get_meta`` returns, not to the meta Frappe builds and caches: a site's
    form meta cached while the bench ran RQ (Frappe keeps it until `bench clear-cache` or
    migrate) gets the scripts as soon as the switch is on, and the cache never holds them, so
    a bench switched back to RQ shows no button calling methods it no longer has."""
    module = module or sys.modules.get(FORM_META) or importlib.import_module(FORM_META)
    frappes_get_meta = module.get_meta
    if getattr(frappes_get_meta, _INSTALLED, False):
        return False
    # How a meta that already has our form script is told: that script's first line.
    form_script_mark = (_SCRIPTS / "rq_job.js").read_text(encoding="utf-8").split("\n", 1)[0]

    @functools.wraps(frappes_get_meta)
    def get_meta(doctype: str, *args: Any, **kwargs: Any) -> Any:
        meta = frappes_get_meta(doctype, *args, **kwargs)
        # Frappe 16 hands out the very object its in-process cache keeps: add once.
        if doctype == RQ_JOB_DOCTYPE and form_script_mark not in (meta.get("__js") or ""):
            meta._add_code(str(_SCRIPTS / "rq_job.js"), "__js")
            meta._add_code(str(_SCRIPTS / "rq_job_list.js"), "__list_js")
        return meta

    setattr(get_meta, _INSTALLED, True)
    module.get_meta = get_meta
    return True
