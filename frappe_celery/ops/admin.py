"""What the CLI (and apps) change: cancel, stop, retry, purge, trigger, scheduler switches, and
the doctor's checks. Every function validates its input first and changes nothing on bad input.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from frappe_celery import records
from frappe_celery.bench_files import Bench, EnvState, find_bench
from frappe_celery.broker import keys
from frappe_celery.broker.wire import encode_body
from frappe_celery.broker.workers import STOP_COMMAND, read_workers
from frappe_celery.caller.enqueue import create_job_id, make_payload, validate_queue
from frappe_celery.caller.publish import prepare, publish
from frappe_celery.celery_app import get_app
from frappe_celery.config import get_settings
from frappe_celery.connection import as_text, broker_errors, get_redis
from frappe_celery.errors import FrappeCeleryError, InvalidArgumentError, InvalidJobOperation
from frappe_celery.job import Job, JobStatus, is_site_job, readable_message_kwargs
from frappe_celery.ops.monitor import (
    FailedFilter,
    failed_matching,
    list_jobs,
    pending_messages,
    refused_messages,
)
from frappe_celery.scheduler import state
from frappe_celery.scheduler.beat import scheduled_publication
from frappe_celery.scheduler.entries import (
    ScheduleEntry,
    build_entries,
    known_event_keys,
    load_events,
)
from frappe_celery.version import installed_version

Progress = Callable[[int], None]


class UnknownTarget(FrappeCeleryError):
    """A job id, queue, site or event that does not exist (the CLI exits 2)."""


def _no_progress(_: int) -> None:
    pass


# -- jobs -----------------------------------------------------------------------------------------


def find_job(job_id: str) -> Job:
    """The job for a caller's id or a site-namespaced one; UnknownTarget if there is none."""
    # Namespaced already: Frappe 16's "{site}||{id}" or Frappe 15's "{site}::{id}".
    candidates = [job_id] if "||" in job_id or "::" in job_id else []
    candidates.append(create_job_id(job_id))
    for candidate in candidates:
        job = Job.fetch(candidate)
        if job is not None:
            return job
    raise UnknownTarget(f"no job {job_id!r} (expired, or never enqueued)")


def cancel_job(job_id: str) -> Job:
    """Take a queued job off its queue (Job.cancel)."""
    job = find_job(job_id)
    job.cancel()
    return job


def stop_job(job_id: str, wait: float = 5.0) -> Job:
    """Stop a running job, as Frappe's "Stop job" (RQ's send_stop_job_command): its worker
    kills it and records it stopped (in its queue's failed registry, as RQ keeps it).

    Raises UnknownTarget, or InvalidJobOperation if the job is not running.
    """
    job = find_job(job_id)
    if job.get_status() != JobStatus.STARTED:
        raise InvalidJobOperation(f"job {job.id!r} is not running (status {job.get_status()})")
    # Not app.control.revoke: that would drop every later run of this id for hours.
    get_app().control.broadcast(STOP_COMMAND, arguments={"job_id": job.id}, reply=True, timeout=1.0)
    deadline = time.monotonic() + wait
    while job.get_status() == JobStatus.STARTED and time.monotonic() < deadline:
        time.sleep(0.1)
    return job


def stop_stuck_jobs() -> list[records.StuckJob]:
    """Fail every stuck job (records.stuck_jobs) and free its id; ask its worker to stop it too,
    should the worker still answer. Returns the jobs failed."""
    stuck = records.stuck_jobs()
    for job in stuck:
        with contextlib.suppress(Exception):  # a frozen or gone worker answers nothing
            get_app().control.broadcast(STOP_COMMAND, arguments={"job_id": job.job_id}, reply=False)
    return [job for job in stuck if records.fail_stuck(job)]


def forget_job(job_id: str) -> Job:
    """Delete an ended job's record (Frappe's "delete" of an RQ Job).

    Raises UnknownTarget, or InvalidJobOperation while the job is queued or running.
    """
    job = find_job(job_id)
    queue = job.queue or "default"
    registries = [keys.finished_registry(queue), keys.failed_registry(queue),
                  keys.canceled_registry(queue)]  # fmt: skip
    if not records.forget(registries, [job.id]):
        raise InvalidJobOperation(f"job {job.id!r} is {job.get_status()}: it has not ended")
    return job


def remove_failed_jobs(site: str | None = None) -> int:
    """Delete the failed jobs (of ``site``, or all) with their records; returns how many.
    Frappe's "Remove Failed Jobs" in the RQ Job list."""
    removed = 0
    client = get_redis()
    for queue in get_settings().queues:
        registry = keys.failed_registry(queue)
        with broker_errors():
            ids = [as_text(i) for i in client.zrange(registry, 0, -1)]
        mine = [i for i in ids if site is None or is_site_job(i, site)]
        for start in range(0, len(mine), 500):
            batch = mine[start : start + 500]
            removed += records.forget([registry], batch)
    return removed


def retry_job(job_id: str) -> Job:
    """Enqueue a failed (or canceled, or stopped) job again with the same arguments, site,
    user and id."""
    job = find_job(job_id)
    record = job.record
    if record.get("status") not in (JobStatus.FAILED, JobStatus.CANCELED, JobStatus.STOPPED):
        raise InvalidJobOperation(
            f"job {job.id!r}: only failed, canceled or stopped jobs are retried; it is "
            f"{record.get('status')}"
        )
    old = job.job_kwargs
    if not old:
        raise InvalidJobOperation(f"job {job.id!r}: its arguments are no longer known")
    payload = make_payload(
        old["method"], old["queue"], old["timeout"], site=old["site"], user=old["user"],
        event=old["event"], job_name=old["job_name"], kwargs=old["kwargs"],
        on_success=old["on_success"], on_failure=old["on_failure"],
    )  # fmt: skip
    publication = prepare(
        job.id,
        payload,
        encode_body(payload, payload["kwargs"]),
        at_front=False,
        deduplicate=True,
        at_front_when_starved=False,
    )
    new = publish(publication)
    with broker_errors():
        get_redis().zrem(keys.failed_registry(old["queue"]), job.id)
    if new is None:
        raise InvalidJobOperation(f"job {job.id!r} is already queued or running again")
    return new


def retry_all(queue: str | None = None, progress: Progress = _no_progress) -> int:
    """Retry every job failed at the start (of ``queue``), each once; returns how many were
    enqueued again. A job that fails again meanwhile is not retried a second time."""
    return retry_matching(FailedFilter(queue=queue), progress)


def retry_matching(which: FailedFilter, progress: Progress = _no_progress) -> int:
    """Replay every failed job ``which`` matches, as it was at the start, each once (same
    arguments, site, user and id; a fresh record: its attempts count from 0 again); returns
    how many were enqueued again. One whose id is queued or running again meanwhile (dedup)
    is left alone."""
    done = 0
    for row in failed_matching(which):
        try:
            retry_job(row.id)
            done += 1
        except FrappeCeleryError:
            # Cannot be retried (expired meanwhile, running again, no message): leave it.
            pass
        progress(1)
    return done


def purge_jobs(
    queue: str,
    event: str | None = None,
    site: str | None = None,
    progress: Progress = _no_progress,
) -> int:
    """Remove the pending jobs of ``queue`` (only those of ``event`` / ``site`` if given) and
    free their ids; returns how many were removed."""
    validate_queue_name(queue)
    if site is not None:
        validate_site(site)
    client = get_redis()
    removed = 0
    # Everything pending at the start; jobs enqueued meanwhile are left alone.
    for job_id, message in pending_messages(queue, scan_limit=10**9):
        # A message whose body cannot be read is dropped by a worker; a filtered purge cannot
        # tell whose it is, so it stays for the worker.
        payload = readable_message_kwargs(message) or {}
        if event is not None and payload.get("event") != event:
            progress(1)
            continue
        if site is not None and payload.get("site") != site:
            progress(1)
            continue
        with broker_errors():
            taken = sum(int(client.lrem(key, 1, message)) for key in keys.queue_lists(queue))
        token = payload.get("token")
        if taken:
            removed += 1
            if isinstance(token, str):
                records.cancel(job_id, token, queue, "purged")
        progress(1)
    return removed


def pending_count(queue: str) -> int:
    with broker_errors():
        pipe = get_redis().pipeline(transaction=False)
        for key in keys.queue_lists(queue):
            pipe.llen(key)
        return sum(int(n) for n in pipe.execute())


# -- validation of names --------------------------------------------------------------------------


def validate_queue_name(queue: str) -> None:
    """enqueue's queue check, reported as an unknown target (the CLI exits 2)."""
    try:
        validate_queue(queue)
    except InvalidArgumentError as exc:
        raise UnknownTarget(f"no queue {queue!r}; {exc.allowed}") from None


def validate_site(site: str) -> None:
    sites = list(get_settings().scheduler_sites)
    if site not in sites:
        raise UnknownTarget(f"no site {site!r}; sites: {', '.join(sites)}")


# -- scheduler ------------------------------------------------------------------------------------


def scheduler_entries() -> list[ScheduleEntry]:
    return build_entries(load_events(), get_settings())


def trigger_scheduler_event(
    event: str, site: str | None = None
) -> list[tuple[ScheduleEntry, Job | None]]:
    """Enqueue now the entries named by ``event``: a scheduler_events key ("daily_long") or a
    method path (Frappe's form). Returns each entry with its job (None: already queued)."""
    if site is not None:
        validate_site(site)
    entries = [
        entry
        for entry in scheduler_entries()
        if event in (entry.event, entry.method) and site in (None, entry.site)
    ]
    if not entries:
        methods = sorted({entry.method for entry in scheduler_entries()})
        raise UnknownTarget(
            f"no scheduler_events entry {event!r}; keys: {', '.join(known_event_keys())}; "
            f"methods: {', '.join(methods) or 'none'}"
        )
    return [(entry, publish(scheduled_publication(entry))) for entry in entries]


SCHEDULER_ACTIONS = {
    "pause": ("paused", True),
    "resume": ("paused", False),
    "disable": ("disabled", True),
    "enable": ("disabled", False),
}


def set_scheduler(action: str, site: str | None = None) -> None:
    """pause / resume / disable / enable the scheduler for ``site`` (None: every site)."""
    if site is not None:
        validate_site(site)
    switch, on = SCHEDULER_ACTIONS[action]
    state.set_switch(switch, on, [site] if site else None)


# -- doctor ---------------------------------------------------------------------------------------


@dataclass
class Problem:
    what: str
    fix: str


def doctor() -> list[Problem]:
    """Everything that keeps jobs from running as configured, each with what to do."""
    settings = get_settings()
    # First: the other checks read keys that a restricted Redis user may not reach.
    problems: list[Problem] = acl_problems()
    if problems:
        return problems
    workers = read_workers()
    consumed = {queue for worker in workers for queue in worker.get("queues", [])}
    for queue in settings.queues:
        if queue not in consumed:
            problems.append(
                Problem(
                    f"no worker consumes queue {queue!r}: its jobs wait for ever",
                    f"start one: frappe-celery worker --queue {queue}",
                )
            )
    bench = find_bench()
    leader = state.leader_info()
    bench_schedule = bench is not None and bench.scheduler_lock_held()
    if leader is None and not bench_schedule and scheduler_entries():
        problems.append(
            Problem(
                "no scheduler is running: scheduler_events do not fire",
                "start one: celery -A frappe_celery beat (any number may run)"
                + (", or bench schedule" if bench is not None else ""),
            )
        )
    expected = installed_version()
    if bench is not None:
        env = bench.probe_env()
        problems += switch_problems(bench, env)
        expected = env.version or expected
    problems += version_problems(expected, workers, leader)
    online = {worker["node"] for worker in workers}
    for row in list_jobs(status=JobStatus.STARTED, limit=10_000):
        gone = row.worker and row.worker not in online
        if gone and not row.worker.startswith("in-process"):
            problems.append(
                Problem(
                    f"job {row.id} is 'started' on {row.worker}, which is gone",
                    "the broker restores it after the visibility timeout and it runs again; "
                    "if its message was lost too, the reaper fails it after its hard time limit",
                )
            )
    problems += [
        Problem(
            f"job {job.job_id} ({job.queue}) is stuck: still started {job.overdue:.0f} s past its "
            "hard time limit (its worker frozen or gone, or the job in a wait no signal ends); "
            "its id stays taken, so a Scheduled Job Type it belongs to does not run again",
            "frappe-celery stop --stuck fails it and frees its id",
        )
        for job in records.stuck_jobs()
    ]
    problems += refused_message_problems()
    visibility = get_app().conf.broker_transport_options.get("visibility_timeout", 3600)
    if visibility <= settings.longest_hard_time_limit:
        problems.append(
            Problem(
                f"the broker's visibility timeout ({visibility} s) is not above the longest hard "
                f"time limit ({settings.longest_hard_time_limit} s): long jobs run twice",
                "remove visibility_timeout from celeryconfig (frappe-celery derives it)",
            )
        )
    return problems


# How long `doctor` reports a refused message (unsigned or badly signed) after the last one.
REFUSED_MESSAGES_REPORTED_FOR = 24 * 3600


def refused_message_problems(now: float | None = None) -> list[Problem]:
    """Messages workers dropped in the last day for want of a valid signature: someone writes
    to the broker without the key, or some process enqueues with another key."""
    refused = refused_messages()
    last = refused["last"]
    now = time.time() if now is None else now
    if not last or now - float(last.get("at") or 0) > REFUSED_MESSAGES_REPORTED_FOR:
        return []
    return [
        Problem(
            f"{refused['total']} job message(s) dropped unsigned or badly signed, never run; "
            f"the last on queue {last.get('queue')!r} (job {last.get('job_id')}): "
            f"{last.get('problem')}",
            "every process that enqueues or runs jobs needs the same signing_key (README, "
            "'Signed messages'); if none of yours sent it, someone else writes to the broker: "
            "give Redis a password or ACL (docs/redis-acl.md)",
        )
    ]


def switch_problems(bench: Bench, env: EnvState) -> list[Problem]:
    """Is the bench's virtualenv still switched to frappe-celery (``bench enable``'s .pth and an
    installed frappe-celery behind it)? A ``bench setup env`` rebuilds it without either."""
    restart = "then restart the bench's processes (bench restart, or supervisorctl restart all)"
    pip = f"{bench.path}/env/bin/pip install frappe-celery"
    enable = f"{bench.path}/env/bin/frappe-celery bench enable"
    if env.error is not None:
        what = f"cannot ask the bench's Python ({env.python}): {env.error}"
        return [Problem(what, "check that the bench's virtualenv exists (bench setup env)")]
    if env.version is None and env.pth_present:
        what = (
            f"the switch is orphaned: {env.pth} is there but frappe-celery is not installed in "
            "the bench's virtualenv; its processes run RQ"
        )
        return [Problem(what, f"{pip}; {restart}")]
    if env.version is None:
        what = (
            "frappe-celery is not installed in the bench's virtualenv (rebuilt by bench setup "
            "env?): its processes run RQ"
        )
        return [Problem(what, f"{pip}; {enable}; {restart}")]
    if not env.pth_present:
        what = f"the switch is off: web, bench worker and bench schedule run RQ (no {env.pth})"
        return [Problem(what, f"{enable}; {restart}")]
    if not env.switch_importable:
        what = (
            f"the switch is broken: {env.pth} imports frappe_celery_switch, which the bench's "
            "Python cannot find"
        )
        return [Problem(what, f"{pip} --force-reinstall; {restart}")]
    return []


def version_problems(
    expected: str, workers: list[dict[str, Any]], leader: tuple[str, str | None] | None
) -> list[Problem]:
    """Workers and the leading beat run the frappe-celery the bench (or this process) has."""
    running = [(worker["node"], worker.get("version")) for worker in workers]
    if leader is not None:
        running.append(leader)
    return [
        Problem(
            f"{node} runs frappe-celery {version or 'older than 0.1'}, the bench's processes "
            f"{expected}: it was not restarted after an upgrade",
            "restart it (bench restart, or supervisorctl restart all)",
        )
        for node, version in running
        if version != expected
    ]


def acl_problems() -> list[Problem]:
    """What the broker's Redis user lacks of the keys, channels and commands frappe-celery uses
    (acl.py): a bench user made by Frappe's ``bench create-rq-users`` has only ``rq:*`` keys."""
    from frappe_celery.ops import acl

    client = get_redis()
    with broker_errors():
        report = acl.check(client, acl.required(get_settings(), acl.broker_db(client)))
    if report.ok:
        return []
    setuser = acl.shell_line(acl.setuser_command(report.user, report.rules))
    return [
        Problem(
            f"the Redis user {report.user!r} cannot use: {' '.join(report.rules)} (NOPERM); "
            "enqueues, workers and this doctor fail on them",
            f"as the Redis admin: redis-cli {setuser}; in a bench: frappe-celery bench acl "
            f"--apply (also keeps them in {acl.BENCH_ACL_FILE}), or see frappe-celery bench acl",
        )
    ]


__all__ = [
    "Problem",
    "UnknownTarget",
    "acl_problems",
    "cancel_job",
    "doctor",
    "find_job",
    "pending_count",
    "purge_jobs",
    "retry_all",
    "retry_job",
    "set_scheduler",
    "stop_job",
    "switch_problems",
    "trigger_scheduler_event",
    "version_problems",
]
