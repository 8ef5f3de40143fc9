"""The Celery application and the Celery settings derived from frappe-celery's settings.

The app is built on first use (:func:`get_app`): a caller builds it to write its messages, a
worker and beat when ``celery -A frappe_celery`` asks for ``frappe_celery.app``. Building it
imports none of Celery's worker code: the worker's classes and steps are named by dotted path
(worker/process.py, worker/options.py), and a worker and beat import the worker's task and
signal handlers as they start (WORKER_MODULES, through Celery's ``include``).
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import os
import threading
from typing import Any

import click
from celery import Celery
from kombu.entity import Exchange, Queue
from kombu.utils.objects import cached_property

from frappe_celery import config, connection
from frappe_celery.config import (
    NORMAL_PRIORITY,
    OWNED_CELERY_SETTINGS,
    PRIORITY_STEPS,
    Settings,
    get_settings,
)
from frappe_celery.errors import ConfigError
from frappe_celery.urls import is_sentinel_url, tls_options

# Imported by a worker that runs in a bench (see integrations/frappe/worker.py).
FRAPPE_WORKER_MODULE = "frappe_celery.integrations.frappe.worker"
# Beat's scheduler: scheduler_events from the hooks modules, or in a bench the bench's own
# Scheduled Job Types, decided by Frappe (integrations/frappe/beat.py).
HOOKS_SCHEDULER = "frappe_celery.scheduler.beat:FrappeScheduler"
# kombu's Redis transport with our queue order (transport.py), for redis://, rediss:// and
# sentinel:// broker URLs.
TRANSPORT = "frappe_celery.broker.transport:Transport"
SENTINEL_TRANSPORT = "frappe_celery.broker.transport:SentinelTransport"
# The same classes under the paths they had before the subpackages (frappe_celery/transport.py
# is their alias): a celeryconfig written for them names the transport this package sets.
LEGACY_TRANSPORTS = {
    "frappe_celery.transport:Transport": TRANSPORT,
    "frappe_celery.transport:SentinelTransport": SENTINEL_TRANSPORT,
}
BENCH_SCHEDULER = "frappe_celery.integrations.frappe.beat:BenchScheduler"
# The worker's classes (worker/process.py), named so that building the app imports none of
# Celery's worker code: a web process builds the app to publish, and never runs a worker.
WORKER = "frappe_celery.worker.process:Worker"
# Celery's consumer, failing the record of a job whose body it cannot decode.
CONSUMER = "frappe_celery.worker.process:Consumer"
POOL_REFILL = "frappe_celery.worker.process:PromptPoolRefill"
# --burst and --queue-order (worker/options.py).
WORKER_OPTION_STEPS = {
    "worker": "frappe_celery.worker.options:QueueOrder",
    "consumer": "frappe_celery.worker.options:Burst",
}
QUEUE_ORDER_NAMES = ("priority", "random", "round_robin")
# What a worker (and beat) imports as it starts (Celery's `include`): the one task, the stop
# command, the heartbeat and reaper, the memory handling at fork. They register a task and
# signal handlers, so they are imported only by the processes that run them.
WORKER_MODULES = (
    "frappe_celery.worker.task",
    "frappe_celery.worker.control",
    "frappe_celery.worker.maintenance",
    "frappe_celery.worker.memory",
    # The metrics_port setting: the main process serves the bench's metrics.
    "frappe_celery.ops.metrics_beside",
)

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
        "include": list(WORKER_MODULES),
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
    transport = overrides.get("broker_transport")
    if isinstance(transport, str) and transport in LEGACY_TRANSPORTS:
        overrides["broker_transport"] = LEGACY_TRANSPORTS[transport]
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
    # A celeryconfig `include` adds to the worker's own modules, never replaces them.
    merged["include"] = [
        *WORKER_MODULES,
        *(name for name in overrides.get("include") or () if name not in WORKER_MODULES),
    ]
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


class FrappeCelery(Celery):  # type: ignore[misc]
    """The Celery app, whose worker class is named (WORKER) and loaded by the worker only."""

    @cached_property
    def Worker(self) -> Any:
        return self.subclass_with_self(WORKER)


def add_worker_options(app: Celery) -> None:
    """Add ``--burst`` and ``--queue-order`` to ``celery -A ... worker``; their steps are in
    worker/options.py."""
    app.user_options["worker"].add(
        click.Option(
            ["--burst"],
            is_flag=True,
            default=False,
            help="Exit (status 0) once the consumed queues are empty and no job runs (RQ's "
            "burst mode).",
        )
    )
    app.user_options["worker"].add(
        click.Option(
            ["--queue-order"],
            type=click.Choice(sorted(QUEUE_ORDER_NAMES)),
            default=None,
            help="Which consumed queue to take the next job from: priority (strict -Q order, "
            "the default), round_robin or random (RQ's --strategy).",
        )
    )
    for blueprint, step in WORKER_OPTION_STEPS.items():
        app.steps[blueprint].add(step)


def build_app(settings: Settings) -> Celery:
    """A configured app (Celery's app is cheap to build; configuring it reads the settings and
    the celeryconfig module)."""
    app = FrappeCelery("frappe_celery", set_as_current=True)
    app.steps["worker"].add(POOL_REFILL)
    add_worker_options(app)
    apply_settings(app, settings)
    app.on_after_finalize.connect(drop_celery_builtin_tasks, weak=False)
    return app


_app_lock = threading.Lock()
_app: Celery | None = None


def get_app() -> Celery:
    """The process's Celery app, built on first use (``celery -A frappe_celery`` asks for it as
    ``frappe_celery.app``; the caller's publish path to build its messages)."""
    global _app
    if _app is None:
        with _app_lock:
            if _app is None:
                _app = build_app(get_settings())
    return _app


def reload_settings() -> Settings:
    """Re-read settings (after the environment changed) and re-apply them to the Redis
    connection and, once built, the Celery app."""
    settings = config.reload()
    connection.reset()
    if _app is not None:
        apply_settings(_app, settings)
    return settings


def __getattr__(name: str) -> Any:
    # `from frappe_celery.celery_app import app`, as before the app was built lazily.
    if name == "app":
        return get_app()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def drop_celery_builtin_tasks(sender: Celery, **_: Any) -> None:
    """Celery registers its own tasks in every app (``celery.map``, ``celery.chord_unlock``,
    ``celery.backend_cleanup``, ...). frappe-celery uses none of them, and a message naming one
    would run it: anyone able to push onto a queue could make a worker run what no user
    allowed. Unregistered, such a message is discarded like any unknown task."""
    for name in [name for name in sender.tasks if name.startswith("celery.")]:
        sender.tasks.unregister(name)
