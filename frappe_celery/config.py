"""One settings object for frappe-celery, and the Celery settings derived from it.

Precedence, highest first:

1. environment variables (``FRAPPE_CELERY_*``);
2. the Frappe-style ``common_site_config.json`` named by ``FRAPPE_CELERY_CONFIG``, or else the
   one of the bench this process runs in (see bench_files.py; Frappe's own keys at the top level;
   frappe-celery's own under a ``"frappe_celery"`` block);
3. built-in defaults, which are Frappe's. Inside a bench they follow the bench: its apps may
   run as jobs, jobs run in Frappe's site context, job ids are spelled as its Frappe does.

Celery's own settings are derived from these by :func:`celery_settings`; a ``celeryconfig``
module on the import path may then override individual Celery settings (see ``celeryconfig.py``),
except the ones listed in :data:`OWNED_CELERY_SETTINGS`, which this package must control.
"""

from __future__ import annotations

import functools
import json
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from frappe_celery.bench_files import Bench, broker_url_of, find_bench
from frappe_celery.broker import signing
from frappe_celery.errors import ConfigError
from frappe_celery.retries import RetryPolicy, policies_from
from frappe_celery.urls import (
    check_password_encoded,
    is_sentinel_url,
    parse_sentinel_url,
    redact_url,
    tls_options,
)

# Frappe's queues and their default timeouts, in the order RQ workers take them.
DEFAULT_QUEUES: dict[str, int] = {"short": 300, "default": 300, "long": 1500}
# A custom queue from the ``workers`` block without its own timeout gets Frappe's 300 s.
CUSTOM_QUEUE_DEFAULT_TIMEOUT = 300

DEFAULT_BROKER_URL = "redis://127.0.0.1:6379/0"
DEFAULT_SITE = "default"
DEFAULT_USER = "Administrator"

# Frappe's retention rules (frappe/utils/background_jobs.py).
DEFAULT_RESULTS_TTL = 600
DEFAULT_FAILURE_TTL = 7 * 24 * 3600
DEFAULT_FAILED_JOBS_LIMIT = 1000
DEFAULT_MAX_QUEUED_JOBS = 500
# Frappe adds this many to max_queued_jobs per site of the bench.
MAX_QUEUED_JOBS_PER_SITE = 50
QUEUE_STARVATION_THRESHOLD = 16
# Frappe retries a job 5 times on deadlocks and RetryBackgroundJobError: 6 attempts in all.
MAX_RETRIES = 5

DEFAULT_TIME_LIMIT_GRACE = 30
# The broker redelivers an unacked message after the visibility timeout. It must outlast the
# longest hard time limit (a long job must never run twice); this margin is added on top.
DEFAULT_VISIBILITY_MARGIN = 300
# A worker pops a message before it records it as unacked: a queued or started job's message is
# declared lost (its id freed) only after it was seen missing for this long.
DEFAULT_LOST_MESSAGE_GRACE = 10

# Frappe defaults "all" to every 240 s; the zone defaults to UTC here (Frappe's is Asia/Kolkata,
# a choice for its own users, not a library's).
DEFAULT_SCHEDULER_INTERVAL = 240

# Frappe lowers its workers' and scheduler's CPU priority by this much (its
# BACKGROUND_PROCESS_NICENESS), so a busy worker never slows web requests down;
# ``background_process_niceness`` in common_site_config.json changes it. Outside a bench: 0.
BENCH_PROCESS_NICENESS = 10
DEFAULT_TIME_ZONE = "UTC"

ENV_PREFIX = "FRAPPE_CELERY_"
# A worker's heartbeat (worker/maintenance.py): every 5 s by default. Longer than a minute would
# leave a dead worker's jobs waiting for minutes.
DEFAULT_HEARTBEAT_INTERVAL = 5
MAX_HEARTBEAT_INTERVAL = 60
# Metrics are served on the loopback unless told otherwise: Prometheus scrapes from the host.
DEFAULT_METRICS_ADDRESS = "127.0.0.1"

# WAIT's timeout after each enqueue when enqueue_wait_replicas is set: how long an enqueue may
# wait for a replica before it reports the job as not replicated.
DEFAULT_ENQUEUE_WAIT_TIMEOUT_MS = 1000

# How job ids are namespaced per site: Frappe 16 ``{site}||{id}`` with ':' -> '|', Frappe 15
# ``{site}::{id}``.
JOB_ID_STYLES = ("v16", "v15")

# Inside a bench, jobs run in Frappe's own site context (integrations/frappe).
FRAPPE_JOB_CONTEXT = "frappe_celery.integrations.frappe.FrappeJobContext"
FRAPPE_DOCUMENT_LOADER = "frappe_celery.integrations.frappe.get_doc"


@dataclass(frozen=True)
class Settings:
    """Every frappe-celery setting, resolved once from env, config file and defaults."""

    broker_url: str = DEFAULT_BROKER_URL
    result_backend: str = DEFAULT_BROKER_URL
    # The master name a sentinel:// broker URL resolves (kombu's master_name transport option);
    # only read for sentinel:// URLs.
    sentinel_master: str | None = None
    # After each enqueue, WAIT until this many replicas have the job (0: do not wait); see
    # README, "TLS and Sentinel". An enqueue then returns only once the job survives a failover.
    enqueue_wait_replicas: int = 0
    enqueue_wait_timeout_ms: int = DEFAULT_ENQUEUE_WAIT_TIMEOUT_MS
    site: str = DEFAULT_SITE
    hooks_modules: tuple[str, ...] = ()
    config_path: str | None = None
    # queue name -> default timeout (s); insertion order is the worker's default queue order.
    queues: Mapping[str, int] = field(default_factory=lambda: dict(DEFAULT_QUEUES))
    results_ttl: int = DEFAULT_RESULTS_TTL
    failure_ttl: int = DEFAULT_FAILURE_TTL
    failed_jobs_limit: int = DEFAULT_FAILED_JOBS_LIMIT
    # 0 disables the QueueOverloaded check.
    max_queued_jobs: int = DEFAULT_MAX_QUEUED_JOBS
    time_limit_grace: int = DEFAULT_TIME_LIMIT_GRACE
    visibility_margin: int = DEFAULT_VISIBILITY_MARGIN
    lost_message_grace: int = DEFAULT_LOST_MESSAGE_GRACE
    # Exception classes (dotted paths) that retry a job, besides RetryBackgroundJobError.
    retry_exceptions: tuple[str, ...] = ()
    # Method path -> its retry policy (retries.py), from the frappe_celery block; hooks
    # modules add theirs (hooks.retry_policies).
    job_retries: Mapping[str, RetryPolicy] = field(default_factory=dict)
    # Module prefixes whose functions a job message may name (see methods.py).
    allowed_modules: tuple[str, ...] = ()
    # Dotted path of the JobContext class and the document loader (see context.py).
    job_context: str | None = None
    document_loader: str | None = None
    # -- scheduler --
    # Sites whose scheduler_events fire (the default site when none are listed).
    sites: tuple[str, ...] = ()
    # Frappe's System Settings time_zone: cron expressions are read in this zone.
    time_zone: str = DEFAULT_TIME_ZONE
    # Seconds between runs of the "all" event (Frappe's scheduler_interval).
    scheduler_interval: int = DEFAULT_SCHEDULER_INTERVAL
    # Frappe's site-config switches, for every site: no scheduled job fires while one is set.
    pause_scheduler: bool = False
    disable_scheduler: bool = False
    maintenance_mode: bool = False
    # A scheduler_events method that cannot be imported stops beat instead of being skipped.
    scheduler_strict: bool = False
    # -- bench --
    # The bench's sites folder when this process runs in one (None: not in a bench).
    sites_path: str | None = None
    job_id_style: str = "v16"
    # How much workers and beat lower their CPU priority at start (os.nice).
    niceness: int = 0
    # Seconds between a worker's heartbeats. A worker killed whole is found dead and its jobs go
    # back to their queues within about 7 heartbeats (broker/recovery.py), and is shown offline
    # after 6 (broker/workers.py).
    heartbeat_interval: int = DEFAULT_HEARTBEAT_INTERVAL
    # -- metrics (ops/metrics.py) --
    # Where a worker's or beat's main process serves Prometheus metrics (0: it does not; the
    # first process of the bench to bind the port serves them).
    metrics_port: int = 0
    metrics_address: str = DEFAULT_METRICS_ADDRESS
    # -- signed messages (signing.py); kept out of repr: credentials are never printed --
    signing_key: str | None = field(default=None, repr=False)
    # Accepted, never used to sign: the key before a rotation.
    previous_signing_key: str | None = field(default=None, repr=False)

    def require_signing_key(self) -> str:
        """The key job messages are signed with; ConfigError when none is set (nothing can be
        enqueued or run without one, see signing.py)."""
        if self.signing_key is None:
            raise ConfigError(
                f"signing_key: none is set ({self.config_path or 'no config file'}); set "
                f"{signing.KEY_ENV} or {signing.KEY_SETTING} in the config file to a secret of at "
                f"least {signing.MIN_KEY_LENGTH} characters shared by every process that enqueues "
                "or runs jobs (`python -c 'import secrets; print(secrets.token_hex(32))'`); in a "
                "bench frappe-celery generates it"
            )
        return self.signing_key

    @property
    def accepted_signing_keys(self) -> tuple[str, ...]:
        """The keys a worker accepts a message signed with: the current one, then the previous."""
        return tuple(key for key in (self.signing_key, self.previous_signing_key) if key)

    @property
    def scheduler_sites(self) -> tuple[str, ...]:
        return self.sites or (self.site,)

    @property
    def longest_hard_time_limit(self) -> int:
        return max(self.queues.values()) + self.time_limit_grace

    @property
    def visibility_timeout(self) -> int:
        return self.longest_hard_time_limit + self.visibility_margin

    def effective_allowed_modules(self) -> tuple[str, ...]:
        """Allowed module prefixes: the configured ones plus each hooks module's app package.

        A Frappe app's jobs live in the package that holds its hooks.py, so ``myapp.hooks``
        allows ``myapp.*``; a top-level hooks module (``hooks_example``) allows itself.
        """
        return _effective_allowed(self.allowed_modules, self.hooks_modules)


# Asked at every enqueue, of settings that rarely change: remembered.
@functools.lru_cache(maxsize=64)
def _effective_allowed(allowed: tuple[str, ...], hooks: tuple[str, ...]) -> tuple[str, ...]:
    from_hooks = tuple(module.split(".")[0] for module in hooks)
    return tuple(dict.fromkeys(allowed + from_hooks))


def _split_list(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())


def _positive_int(source: str, name: str, value: Any, *, allow_zero: bool = False) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ConfigError(f"{source}: {name} must be a whole number, got {value!r}")
    try:
        number = int(value)
    except ValueError:
        raise ConfigError(f"{source}: {name} must be a whole number, got {value!r}") from None
    if number < 0 or (number == 0 and not allow_zero):
        allowed = "0 or more" if allow_zero else "more than 0"
        raise ConfigError(f"{source}: {name} must be {allowed}, got {value!r}")
    return number


def _time_zone(source: str, name: str) -> str:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"{source}: time_zone {name!r} is not a known IANA time zone") from None
    return name


def _read_config_file(path: str) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"FRAPPE_CELERY_CONFIG: no file at {path!r}") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"FRAPPE_CELERY_CONFIG: {path!r} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"FRAPPE_CELERY_CONFIG: {path!r} must hold a JSON object")
    return data


def _queues_from_workers(source: str, workers: Any) -> dict[str, int]:
    queues = dict(DEFAULT_QUEUES)
    if workers is None:
        return queues
    if not isinstance(workers, dict):
        raise ConfigError(f"{source}: 'workers' must be an object of queue -> {{timeout}}")
    for name, spec in workers.items():
        if not isinstance(name, str) or not name.replace("_", "").replace("-", "").isalnum():
            raise ConfigError(
                f"{source}: workers: queue name {name!r} must be letters, digits, '-' or '_'"
            )
        timeout = (spec or {}).get("timeout", CUSTOM_QUEUE_DEFAULT_TIMEOUT)
        queues[name] = _positive_int(source, f"workers.{name}.timeout", timeout)
    return queues


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Build :class:`Settings` from the environment and the optional config file.

    Raises :class:`ConfigError` naming the offending key when a value is malformed.
    """
    env = os.environ if environ is None else environ
    config_path = env.get(ENV_PREFIX + "CONFIG") or None
    bench = None if config_path else find_bench(env)
    if bench is not None:
        config_path = str(bench.config_path)
    conf: dict[str, Any] = _read_config_file(config_path) if config_path else {}
    source = config_path or "defaults"
    own = conf.get("frappe_celery", {})
    if not isinstance(own, dict):
        raise ConfigError(f"{source}: 'frappe_celery' must be a JSON object")

    broker_url = (
        env.get(ENV_PREFIX + "BROKER_URL")
        or (broker_url_of(bench, conf) if bench else conf.get("redis_queue"))
        or DEFAULT_BROKER_URL
    )
    hooks = env.get(ENV_PREFIX + "HOOKS")
    allowed = env.get(ENV_PREFIX + "ALLOWED_MODULES")
    sites = env.get(ENV_PREFIX + "SITES")
    allowed_modules = _split_list(allowed) if allowed else tuple(own.get("allowed_modules", ()))
    bench_defaults = _bench_defaults(bench, conf, source) if bench else {}

    signing_key = _signing_key(env, own, source, signing.KEY_ENV, signing.KEY_SETTING)
    if signing_key is None and bench is not None:
        signing_key = signing.ensure_bench_key(bench.config_path)
    previous_signing_key = _signing_key(
        env, own, source, signing.PREVIOUS_KEY_ENV, signing.PREVIOUS_KEY_SETTING
    )

    result_backend = env.get(ENV_PREFIX + "RESULT_BACKEND") or broker_url
    sentinel_master = env.get(ENV_PREFIX + "SENTINEL_MASTER") or own.get("sentinel_master")
    _check_broker_urls(source, broker_url, result_backend, sentinel_master)

    return Settings(
        broker_url=broker_url,
        result_backend=result_backend,
        sentinel_master=sentinel_master,
        enqueue_wait_replicas=_positive_int(
            source,
            "frappe_celery.enqueue_wait_replicas",
            env.get(ENV_PREFIX + "ENQUEUE_WAIT_REPLICAS") or own.get("enqueue_wait_replicas", 0),
            allow_zero=True,
        ),
        enqueue_wait_timeout_ms=_positive_int(
            source,
            "frappe_celery.enqueue_wait_timeout_ms",
            own.get("enqueue_wait_timeout_ms", DEFAULT_ENQUEUE_WAIT_TIMEOUT_MS),
        ),
        site=env.get(ENV_PREFIX + "SITE")
        or own.get("site")
        or bench_defaults.get("site")
        or DEFAULT_SITE,
        hooks_modules=_split_list(hooks) if hooks else tuple(own.get("hooks", ())),
        config_path=config_path,
        queues=_queues_from_workers(source, conf.get("workers")),
        results_ttl=_positive_int(
            source, "rq_results_ttl", conf.get("rq_results_ttl", DEFAULT_RESULTS_TTL)
        ),
        failure_ttl=_positive_int(
            source, "rq_job_failure_ttl", conf.get("rq_job_failure_ttl", DEFAULT_FAILURE_TTL)
        ),
        failed_jobs_limit=_positive_int(
            source,
            "rq_failed_jobs_limit",
            conf.get("rq_failed_jobs_limit", DEFAULT_FAILED_JOBS_LIMIT),
        ),
        max_queued_jobs=bench_defaults["max_queued_jobs"]
        if "max_queued_jobs" in bench_defaults
        else _positive_int(
            source,
            "max_queued_jobs",
            conf.get("max_queued_jobs", DEFAULT_MAX_QUEUED_JOBS),
            allow_zero=True,
        ),
        time_limit_grace=_positive_int(
            source,
            "frappe_celery.time_limit_grace",
            own.get("time_limit_grace", DEFAULT_TIME_LIMIT_GRACE),
        ),
        visibility_margin=_positive_int(
            source,
            "frappe_celery.visibility_margin",
            own.get("visibility_margin", DEFAULT_VISIBILITY_MARGIN),
        ),
        lost_message_grace=_positive_int(
            source,
            "frappe_celery.lost_message_grace",
            own.get("lost_message_grace", DEFAULT_LOST_MESSAGE_GRACE),
        ),
        retry_exceptions=tuple(own.get("retry_exceptions", ())),
        job_retries=policies_from(f"{source}: frappe_celery", own.get("job_retries")),
        allowed_modules=tuple(dict.fromkeys(allowed_modules + bench_defaults.get("apps", ()))),
        job_context=env.get(ENV_PREFIX + "JOB_CONTEXT")
        or own.get("job_context")
        or bench_defaults.get("job_context"),
        document_loader=env.get(ENV_PREFIX + "DOCUMENT_LOADER")
        or own.get("document_loader")
        or bench_defaults.get("document_loader"),
        sites=_split_list(sites)
        if sites
        else tuple(own.get("sites", ())) or bench_defaults.get("sites", ()),
        time_zone=_time_zone(
            source, env.get(ENV_PREFIX + "TIME_ZONE") or own.get("time_zone") or DEFAULT_TIME_ZONE
        ),
        scheduler_interval=_positive_int(
            source,
            "scheduler_interval",
            conf.get("scheduler_interval", DEFAULT_SCHEDULER_INTERVAL),
        ),
        pause_scheduler=bool(conf.get("pause_scheduler")),
        disable_scheduler=bool(conf.get("disable_scheduler")),
        maintenance_mode=bool(conf.get("maintenance_mode")),
        scheduler_strict=bool(own.get("scheduler_strict", False)),
        sites_path=str(bench.sites_path) if bench else None,
        job_id_style=_job_id_style(
            source, env.get(ENV_PREFIX + "JOB_ID_STYLE") or bench_defaults.get("job_id_style")
        ),
        niceness=_positive_int(
            source,
            "background_process_niceness",
            conf.get("background_process_niceness", BENCH_PROCESS_NICENESS if bench else 0),
            allow_zero=True,
        ),
        heartbeat_interval=_heartbeat_interval(
            source, env.get(ENV_PREFIX + "HEARTBEAT_INTERVAL") or own.get("heartbeat_interval")
        ),
        metrics_port=_port(
            source,
            "frappe_celery.metrics_port",
            env.get(ENV_PREFIX + "METRICS_PORT") or own.get("metrics_port", 0),
        ),
        metrics_address=env.get(ENV_PREFIX + "METRICS_ADDRESS")
        or own.get("metrics_address")
        or DEFAULT_METRICS_ADDRESS,
        signing_key=signing_key,
        previous_signing_key=previous_signing_key,
    )


def _heartbeat_interval(source: str, value: Any) -> int:
    if value is None:
        return DEFAULT_HEARTBEAT_INTERVAL
    interval = _positive_int(source, "frappe_celery.heartbeat_interval", value)
    if interval > MAX_HEARTBEAT_INTERVAL:
        raise ConfigError(
            f"{source}: frappe_celery.heartbeat_interval must be 1 to {MAX_HEARTBEAT_INTERVAL} "
            f"seconds, got {interval}"
        )
    return interval


def _port(source: str, name: str, value: Any) -> int:
    """A TCP port, or 0 for none."""
    port = _positive_int(source, name, value, allow_zero=True)
    if port > 65535:
        raise ConfigError(
            f"{source}: {name} must be a TCP port (1-65535) or 0 for none, got {port}"
        )
    return port


def _signing_key(
    env: Mapping[str, str], own: Mapping[str, Any], source: str, env_name: str, setting: str
) -> str | None:
    """A signing key from the environment, else from the config file's frappe_celery block."""
    if env.get(env_name):
        return signing.checked_key("environment", env_name, env[env_name])
    return signing.checked_key(source, setting, own.get(setting.rsplit(".", 1)[1]))


def _check_broker_urls(
    source: str, broker_url: str, result_backend: str, sentinel_master: Any
) -> None:
    """Refuse at start-up what every component would later fail on: a password that breaks the
    URL, a sentinel:// URL without the master name, a malformed sentinel list, bad TLS options
    of a rediss:// URL."""
    if sentinel_master is not None and (
        not isinstance(sentinel_master, str) or not sentinel_master.strip()
    ):
        raise ConfigError(
            f"{source}: sentinel_master must be the name of a master (a non-empty string), "
            f"got {sentinel_master!r}"
        )
    for setting, url in (
        ("FRAPPE_CELERY_BROKER_URL", broker_url),
        ("FRAPPE_CELERY_RESULT_BACKEND", result_backend),
    ):
        check_password_encoded(url, setting)
        if is_sentinel_url(url):
            parse_sentinel_url(url, setting)
            if not sentinel_master:
                raise ConfigError(
                    f"{setting} is a sentinel:// URL ({redact_url(url)}) but sentinel_master is "
                    "not set; name the master the sentinels monitor with "
                    "FRAPPE_CELERY_SENTINEL_MASTER or "
                    '"frappe_celery": {"sentinel_master": "mymaster"} in common_site_config.json'
                )
        tls_options(url, setting)


def _job_id_style(source: str, style: str | None) -> str:
    style = style or JOB_ID_STYLES[0]
    if style not in JOB_ID_STYLES:
        raise ConfigError(
            f"{source}: job_id_style must be one of {', '.join(JOB_ID_STYLES)}, got {style!r}"
        )
    return style


def _bench_defaults(bench: Bench, conf: dict[str, Any], source: str) -> dict[str, Any]:
    """What a bench implies: its apps may run as jobs (Frappe's ``frappe.get_attr`` runs any
    installed app's function), jobs run in Frappe's site context, Frappe's own queue limit
    (``max_queued_jobs`` or 500, plus 50 per site; none on Frappe 15 unless configured) and
    Frappe's job-id spelling."""
    sites = bench.sites()
    base = _positive_int(
        source, "max_queued_jobs", conf.get("max_queued_jobs") or DEFAULT_MAX_QUEUED_JOBS
    )
    major = bench.frappe_major_version()
    # Frappe 15's enqueue has no queue limit (16 added _check_queue_size): on 15 there is none
    # unless the config sets max_queued_jobs itself.
    limited = major != 15 or bool(conf.get("max_queued_jobs"))
    default_site = conf.get("default_site")
    return {
        "apps": bench.apps(),
        "sites": sites,
        "site": default_site if isinstance(default_site, str) and default_site else None,
        "job_context": FRAPPE_JOB_CONTEXT,
        "document_loader": FRAPPE_DOCUMENT_LOADER,
        "max_queued_jobs": base + MAX_QUEUED_JOBS_PER_SITE * len(sites) if limited else 0,
        "job_id_style": "v15" if major == 15 else "v16",
    }


_lock = threading.Lock()
_settings: Settings | None = None


def get_settings() -> Settings:
    """The process-wide settings, loaded on first use."""
    global _settings
    if _settings is None:
        with _lock:
            if _settings is None:
                _settings = load_settings()
    return _settings


def reload() -> Settings:
    """Re-read the settings (after the environment changed). ``reload_settings`` (celery_app.py)
    also re-applies them to the connection and the Celery app."""
    global _settings
    with _lock:
        _settings = load_settings()
    return _settings


# Celery settings this package must control: the enqueue path publishes straight to the broker
# URL above (the TLS options are read from that URL, so every component checks the same
# certificate), only JSON may ever be accepted (a pickle message must never execute), and the
# jobs running when the broker connection drops must be cancelled: their messages go back to
# the queue (transport.QoS.orphan_held), so a job left running would run twice at once.
OWNED_CELERY_SETTINGS = (
    "broker_url",
    "broker_transport",
    "broker_use_ssl",
    "redis_backend_use_ssl",
    "task_serializer",
    "accept_content",
    "result_serializer",
    "result_accept_content",
    "worker_cancel_long_running_tasks_on_connection_loss",
)

# Normal jobs get a lower priority bucket than at_front jobs: on kombu's Redis transport 0 is
# the HIGHEST priority and a message sent without one lands in bucket 0, so "normal" must not
# be 0 or at_front could never overtake it.
PRIORITY_STEPS = [0, 3, 6, 9]
AT_FRONT_PRIORITY = 0
NORMAL_PRIORITY = 3
