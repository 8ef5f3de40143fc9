"""The Celery application and the Celery settings derived from frappe-celery's settings."""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import os
from typing import Any

from celery import Celery, bootsteps
from celery.apps.worker import Worker as CeleryWorker
from celery.worker.consumer import Consumer as CeleryConsumer
from kombu.entity import Exchange, Queue

from frappe_celery.broker.transport import fail_job_named_in
from frappe_celery.config import (
    NORMAL_PRIORITY,
    OWNED_CELERY_SETTINGS,
    PRIORITY_STEPS,
    Settings,
    get_settings,
)
from frappe_celery.connection import is_sentinel_url, tls_options
from frappe_celery.errors import ConfigError
from frappe_celery.worker.options import install as install_worker_options

# Imported by a worker that runs in a bench (see integrations/frappe/worker.py).
FRAPPE_WORKER_MODULE = "frappe_celery.integrations.frappe.worker"
# Beat's scheduler: scheduler_events from the hooks modules, or in a bench the bench's own
# Scheduled Job Types, decided by Frappe (integrations/frappe/beat.py).
HOOKS_SCHEDULER = "frappe_celery.scheduler.beat:FrappeScheduler"
# kombu's Redis transport with our queue order (transport.py), for redis://, rediss:// and
# sentinel:// broker URLs.
TRANSPORT = "frappe_celery.broker.transport:Transport"
SENTINEL_TRANSPORT = "frappe_celery.broker.transport:SentinelTransport"
BENCH_SCHEDULER = "frappe_celery.integrations.frappe.beat:BenchScheduler"
# Celery's consumer, failing the record of a job whose body it cannot decode (Consumer below).
CONSUMER = "frappe_celery.celery_app:Consumer"

# Pool child recycling (see celery_settings): a fork costs tens of milliseconds, so 1000 jobs
# per child keeps it well under 0.1 % of the work; 1 GiB is far above a Frappe worker's usual
# 200-400 MiB, so only a child that really grew is replaced.
WORKER_MAX_TASKS_PER_CHILD = 1000
WORKER_MAX_MEMORY_PER_CHILD_KIB = 1024 * 1024

# The module of user overrides for Celery settings (the top-level celeryconfig.py).
CELERYCONFIG_ENV = "FRAPPE_CELERY_CELERYCONFIG"
DEFAULT_CELERYCONFIG = "celeryconfig"


def celery_settings(settings: Settings) -> dict[str, Any]:
    """Celery settings that make Frappe-style jobs reliable, derived from ``settings``."""
    transport_options = {
        # Redelivery of unacked messages must never hit a job that is still running.
        "visibility_timeout": settings.visibility_timeout,
        # RQ takes queues in strict -Q order; kombu's default is round robin.
        "queue_order_strategy": "priority",
        "priority_steps": PRIORITY_STEPS,
    }
    in_bench = {
        # Frappe writes to the process's real stdout/stderr (its fault handler needs their file
        # descriptors; Celery's logging proxy has none), as under RQ's workers.
        "worker_redirect_stdouts": False,
        # Frappe is imported once in the worker's main process, so every pool child forks with
        # it loaded (RQ's `bench worker` forks one cold child per job), and the switch applies
        # to the jobs' own enqueues.
        "imports": [FRAPPE_WORKER_MODULE],
        # What a bench's sites have due, as `bench schedule` decides it.
        "beat_scheduler": BENCH_SCHEDULER,
    }
    backend_options: dict[str, Any] = {"visibility_timeout": settings.visibility_timeout}
    sentinel = is_sentinel_url(settings.broker_url)
    if sentinel:
        transport_options["master_name"] = settings.sentinel_master
    if is_sentinel_url(settings.result_backend):
        backend_options["master_name"] = settings.sentinel_master
    return {
        "broker_url": settings.broker_url,
        # kombu's Redis transport, taking queues strictly in -Q order (see transport.py).
        "broker_transport": SENTINEL_TRANSPORT if sentinel else TRANSPORT,
        "result_backend": settings.result_backend,
        # The rediss:// URL's TLS options, given explicitly: with our transport class named
        # instead of the URL's scheme, kombu would otherwise connect without TLS when the URL
        # has no ssl_* option, and Celery's backend would refuse such a URL.
        "broker_use_ssl": tls_options(settings.broker_url),
        "redis_backend_use_ssl": tls_options(settings.result_backend),
        "broker_transport_options": transport_options,
        "result_backend_transport_options": backend_options,
        "broker_connection_retry_on_startup": True,
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "result_accept_content": ["json"],
        # Statuses and results live in our own job records (job.py); the result backend would
        # SUBSCRIBE on every publish and answer PENDING for unknown ids.
        "task_ignore_result": True,
        "task_track_started": True,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        # Frappe's RQ worker forks a fresh process for every job, so Frappe and app code was never
        # written to stay leak-free over thousands of jobs in one process (caches on frappe.local,
        # module-level dicts, C extensions). A pool child here lives on: it is replaced after
        # this many jobs, or after a job that left it above this size (KiB). A user's
        # celeryconfig may change both.
        "worker_max_tasks_per_child": WORKER_MAX_TASKS_PER_CHILD,
        "worker_max_memory_per_child": WORKER_MAX_MEMORY_PER_CHILD_KIB,
        # With acks_late, a job still running when the connection drops would run twice.
        "worker_cancel_long_running_tasks_on_connection_loss": True,
        "task_default_queue": "default",
        "task_default_priority": NORMAL_PRIORITY,
        "task_queues": [
            Queue(name, Exchange(name, type="direct"), routing_key=name) for name in settings.queues
        ],
        "enable_utc": True,
        "timezone": "UTC",
        # scheduler_events, with state and the leader lock in Redis (see scheduler/beat.py).
        "beat_scheduler": HOOKS_SCHEDULER,
        "worker_consumer": CONSUMER,
        **(in_bench if settings.sites_path else {}),
    }


def user_overrides() -> dict[str, Any]:
    """Celery settings from the celeryconfig module, if one is importable."""
    name = os.environ.get(CELERYCONFIG_ENV, DEFAULT_CELERYCONFIG)
    try:
        if importlib.util.find_spec(name) is None:
            return {}
    except (ImportError, ValueError):
        return {}
    module = importlib.import_module(name)
    return {
        key: value
        for key, value in vars(module).items()
        if not key.startswith("_") and key.islower() and not inspect.ismodule(value)
    }


def apply_settings(app: Celery, settings: Settings) -> None:
    """Configure ``app`` from ``settings`` plus the celeryconfig overrides.

    Raises :class:`ConfigError` if celeryconfig changes a setting this package owns or sets a
    visibility timeout shorter than the longest hard time limit.
    """
    derived = celery_settings(settings)
    overrides = user_overrides()
    for key in OWNED_CELERY_SETTINGS:
        if key in overrides and overrides[key] != derived[key]:
            raise ConfigError(
                f"celeryconfig: {key} is set by frappe-celery ({derived[key]!r}) and cannot be "
                f"overridden (got {overrides[key]!r}); use the FRAPPE_CELERY_* environment"
            )
    for key in ("broker_transport_options", "result_backend_transport_options"):
        given = (overrides.get(key) or {}).get("master_name")
        if given is not None and given != derived[key].get("master_name"):
            raise ConfigError(
                f"celeryconfig: {key}.master_name is frappe-celery's sentinel_master setting "
                f"({settings.sentinel_master!r}) and cannot be set here (got {given!r}); use "
                "FRAPPE_CELERY_SENTINEL_MASTER or frappe_celery.sentinel_master"
            )
    merged = {**derived, **overrides}
    # A dict setting (broker_transport_options...) is merged key by key, so overriding one
    # transport option keeps the derived visibility timeout and priority settings.
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(derived.get(key), dict):
            merged[key] = {**derived[key], **value}
    visibility = merged["broker_transport_options"].get("visibility_timeout")
    if visibility is not None and visibility <= settings.longest_hard_time_limit:
        raise ConfigError(
            f"celeryconfig: broker_transport_options.visibility_timeout is {visibility} s but the "
            f"longest hard time limit is {settings.longest_hard_time_limit} s; a running job "
            "would be delivered twice. Raise it, or leave it to frappe-celery."
        )
    app.conf.update(merged)


class Worker(CeleryWorker):  # type: ignore[misc]
    """``celery -A frappe_celery worker``, without Celery's mingle and gossip steps, and only
    with a signing key.

    Mingle makes every starting worker wait about 1 s for its peers' revoked-task sets and
    logical clocks, and gossip keeps a pub/sub subscription for worker events: frappe-celery
    keeps no state in Celery's revoked sets (cancel and stop go through the job records and
    its own control command) and finds workers through their heartbeats, so both only cost.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # It runs only signed messages (signing.py): without a key it would drop every one.
        get_settings().require_signing_key()
        kwargs.update(without_mingle=True, without_gossip=True)
        super().__init__(*args, **kwargs)


class Consumer(CeleryConsumer):  # type: ignore[misc]
    """Celery's consumer, never killed by a message, and failing the record of a job whose
    message it drops (it said ``queued`` until it expired, its id taken).

    Celery logs and drops a task message whose body it cannot decode (a kombu type tag its
    decoder raises on) or that it finds invalid; anything else a message made its task handler
    raise (a body that is not ``[args, kwargs, embed]``: a ValueError out of Celery's Request)
    went out of the event loop and stopped the worker. The transport drops an envelope kombu
    cannot read itself (transport.readable_message)."""

    def on_decode_error(self, message: Any, exc: Exception) -> None:
        super().on_decode_error(message, exc)
        reason = f"malformed job message: its body cannot be decoded ({type(exc).__name__})"
        fail_job_named_in(message.headers, message.body, reason, "MalformedMessage")

    def on_invalid_task(self, body: Any, message: Any, exc: Exception) -> None:
        super().on_invalid_task(body, message, exc)
        reason = f"malformed job message: {exc}"
        fail_job_named_in(message.headers, message.body, reason, "MalformedMessage")

    def create_task_handler(self, *args: Any, **kwargs: Any) -> Any:
        handle = super().create_task_handler(*args, **kwargs)
        # Raised on a lost connection: the consumer reconnects on these, as Celery's own does.
        passes = (MemoryError, *self.connection_errors)

        def on_task_received(message: Any) -> Any:
            try:
                return handle(message)
            except passes:
                raise
            except Exception as exc:  # a message must never stop the worker
                return self.on_invalid_task(None, message, exc)

        return on_task_received


# How often the worker looks for pool children that exited, to start their replacements.
POOL_REFILL_INTERVAL = 0.25


class PromptPoolRefill(bootsteps.StartStopStep):  # type: ignore[misc]
    """Replace an exited pool child within POOL_REFILL_INTERVAL, not up to 5 s later.

    A child leaves after worker_max_tasks_per_child jobs (1000 by default here). Celery starts
    its replacement when it sees the exit, but when the child had been handed its next job just
    before exiting, it misses it (celery/celery#9588), and only the pool's 5 s maintenance timer
    starts the replacement: meanwhile that job waits. Measured in the drain benchmark: the last
    of 2000 jobs on ``-c 2`` waited 2.2 to 4.7 s in 3 runs of 5. The same maintenance, run more
    often here, costs a few system calls per run.
    """

    requires = ("celery.worker.components:Pool",)

    def start(self, worker: Any) -> None:
        hub = getattr(worker, "hub", None)
        maintain = getattr(getattr(worker.pool, "_pool", None), "maintain_pool", None)
        if hub is not None and maintain is not None:  # the prefork pool on an event loop
            hub.call_repeatedly(POOL_REFILL_INTERVAL, maintain)


app = Celery("frappe_celery")
app.Worker = app.subclass_with_self(Worker)
app.steps["worker"].add(PromptPoolRefill)
install_worker_options(app)
apply_settings(app, get_settings())


@app.on_after_finalize.connect
def drop_celery_builtin_tasks(sender: Celery, **_: Any) -> None:
    """Celery registers its own tasks in every app (``celery.map``, ``celery.chord_unlock``,
    ``celery.backend_cleanup``, ...). frappe-celery uses none of them, and a message naming one
    would run it: anyone able to push onto a queue could make a worker run what no user
    allowed. Unregistered, such a message is discarded like any unknown task."""
    for name in [name for name in sender.tasks if name.startswith("celery.")]:
        sender.tasks.unregister(name)
