"""scheduler_events (from the hooks modules) -> the list of schedule entries beat fires.

Mapping (Frappe's CRON_MAP, plus ``cron_long`` and the ``_short`` variants users ask for):

==========================================  =======================  ==========================
scheduler_events key                        when                     queue
==========================================  =======================  ==========================
all                                         every scheduler_interval default
hourly / hourly_long / hourly_short         ``0 * * * *``            default / long / short
hourly_maintenance                          ``{h} * * * *``          long
daily / daily_long / daily_short            ``0 0 * * *``            default / long / short
daily_maintenance                           ``{(h+30)%60} 0 * * *``  long
weekly / weekly_long / weekly_short         ``0 0 * * 0``            default / long / short
monthly / monthly_long / monthly_short      ``0 0 1 * *``            default / long / short
yearly, annual (and ``_long``/``_short``)   ``0 0 1 1 *``            default / long / short
cron / cron_long / cron_short               ``{expression: [...]}``  default / long / short
==========================================  =======================  ==========================

``h = int(sha1(site)) % 60`` spreads maintenance jobs of many sites over the hour (Frappe computes
this offset and then drops it). Expressions are croniter's: 5 fields, ``@daily`` style, or 6
fields with the seconds LAST (``* * * * * */2`` is every 2 s).

Times are read on the local wall clock of the configured time zone, as Frappe does: a daily job
fires once per local day across DST changes (a time skipped by spring-forward fires at the same
instant one hour later on the clock; a time repeated by fall-back fires once).
"""

from __future__ import annotations

import functools
import hashlib
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from croniter import croniter

from frappe_celery.config import Settings
from frappe_celery.errors import ConfigError, InvalidArgumentError
from frappe_celery.hooks import hooks_modules
from frappe_celery.methods import import_trusted, normalize_path

logger = logging.getLogger(__name__)

FREQUENCY_CRON = {
    "hourly": "0 * * * *",
    "daily": "0 0 * * *",
    "weekly": "0 0 * * 0",
    "monthly": "0 0 1 * *",
    "yearly": "0 0 1 1 *",
    "annual": "0 0 1 1 *",
}
SUFFIX_QUEUE = {"": "default", "_long": "long", "_short": "short"}
CRON_KEYS = {f"cron{suffix}": queue for suffix, queue in SUFFIX_QUEUE.items()}
MAINTENANCE_KEYS = ("hourly_maintenance", "daily_maintenance")


def known_event_keys() -> list[str]:
    simple = [f"{freq}{suffix}" for freq in FREQUENCY_CRON for suffix in SUFFIX_QUEUE]
    return ["all", *simple, *MAINTENANCE_KEYS, *CRON_KEYS]


def maintenance_offset(site: str) -> int:
    """Frappe's per-site minute offset for maintenance events."""
    return int(hashlib.sha1(site.encode("utf-8")).hexdigest(), 16) % 60


def all_event_cron(interval: int) -> str:
    """The "all" event as a cron expression: every ``interval`` seconds."""
    if interval < 60 and 60 % interval == 0:
        return f"* * * * * */{interval}"
    if interval % 60 == 0 and 60 % (interval // 60) == 0:
        return f"*/{interval // 60} * * * *"
    raise ConfigError(
        f"scheduler_interval: got {interval}; allowed are divisors of 60 seconds "
        "(1, 2, ..., 30) or whole minutes dividing an hour (60, 120, 240, ... 3600)"
    )


@dataclass(frozen=True)
class ScheduleEntry:
    """One method of one scheduler_events key, for one site."""

    site: str
    event: str  # the scheduler_events key ("daily_long", "cron", ...)
    expression: str
    method: str
    queue: str

    @property
    def name(self) -> str:
        """Unique per site: the same method may be listed under several events."""
        if self.event in CRON_KEYS:
            return f"{self.event}[{self.expression}]:{self.method}"
        return f"{self.event}:{self.method}"

    @property
    def job_id(self) -> str:
        """The id its jobs get: a run still queued or running is not enqueued again."""
        return f"{self.site}||scheduled_job||{self.name}".replace(":", "|")

    def next_after(self, when: float, zone: ZoneInfo) -> float:
        """The first scheduled time strictly after ``when`` (epoch seconds)."""
        return _next_after(self.expression, when, zone)

    def latest_at_or_before(self, when: float, zone: ZoneInfo) -> float:
        """The last scheduled time at or before ``when``."""
        return _latest_at_or_before(self.expression, when, zone)


# Every site lists the same apps' events, so thousands of entries share a few dozen expressions,
# and a tick asks each entry about the same moment: each (expression, moment) is computed once.
# croniter parses its expression anew on every construction: without this, a tick where 10,000
# entries were due spent 80 % of its 4.5 s in croniter (BENCHMARKS.md).
@functools.lru_cache(maxsize=8192)
def _next_after(expression: str, when: float, zone: ZoneInfo) -> float:
    local = datetime.fromtimestamp(when, zone).replace(tzinfo=None)
    following: datetime = croniter(expression, local).get_next(datetime)
    return following.replace(tzinfo=zone).timestamp()


@functools.lru_cache(maxsize=8192)
def _latest_at_or_before(expression: str, when: float, zone: ZoneInfo) -> float:
    local = datetime.fromtimestamp(when, zone).replace(tzinfo=None)
    previous: datetime = croniter(expression, local + _EPSILON).get_prev(datetime)
    return min(previous.replace(tzinfo=zone).timestamp(), when)


@functools.lru_cache(maxsize=1024)
def _valid_expression(expression: str) -> bool:
    return bool(croniter.is_valid(expression))


# croniter's get_prev is strict: look from just after `when` so a tick exactly at `when` counts.
_EPSILON = timedelta(microseconds=1)


def _expressions(
    event: str, value: Any, settings: Settings, site: str
) -> list[tuple[str, list[Any]]]:
    """[(cron expression, methods)] for one scheduler_events key."""
    if event in CRON_KEYS:
        if not isinstance(value, dict):
            raise ConfigError(f"scheduler_events[{event!r}]: expected {{expression: [methods]}}")
        return list(value.items())
    if not isinstance(value, list | tuple):
        raise ConfigError(f"scheduler_events[{event!r}]: expected a list of method paths")
    if event == "all":
        return [(all_event_cron(settings.scheduler_interval), list(value))]
    h = maintenance_offset(site)
    if event == "hourly_maintenance":
        return [(f"{h} * * * *", list(value))]
    if event == "daily_maintenance":
        return [(f"{(h + 30) % 60} 0 * * *", list(value))]
    return [(FREQUENCY_CRON[base_event(event)], list(value))]


def base_event(event: str) -> str:
    """The key without its queue suffix: ``daily_long`` -> ``daily``, ``cron_short`` -> ``cron``."""
    return event.removesuffix("_long").removesuffix("_short")


def queue_for(event: str) -> str:
    if event in CRON_KEYS:
        return CRON_KEYS[event]
    if event in MAINTENANCE_KEYS or event.endswith("_long"):
        return "long"
    if event.endswith("_short"):
        return "short"
    return "default"


def build_entries(events: dict[str, Any], settings: Settings) -> list[ScheduleEntry]:
    """Every entry of ``events`` for every configured site.

    Raises :class:`ConfigError` naming the key (and expression) for an unknown key or an invalid
    cron expression. A method that cannot be imported, or may not run as a job, is reported by
    name and skipped, or raises with ``scheduler_strict``.
    """
    known = known_event_keys()
    entries: list[ScheduleEntry] = []
    checked: dict[str, str | None] = {}
    for event, value in events.items():
        if event not in known:
            raise ConfigError(
                f"scheduler_events: unknown key {event!r}; known keys: {', '.join(known)}"
            )
        for site in settings.scheduler_sites:
            for expression, methods in _expressions(event, value, settings, site):
                if not isinstance(expression, str) or not _valid_expression(expression):
                    raise ConfigError(
                        f"scheduler_events[{event!r}]: invalid cron expression {expression!r}"
                    )
                for method in methods:
                    if method not in checked:
                        checked[method] = _method_problem(method, settings)
                    if checked[method] is None:
                        queue = queue_for(event)
                        entries.append(ScheduleEntry(site, event, expression, method, queue))
    skipped = {method: problem for method, problem in checked.items() if problem}
    for method, problem in skipped.items():
        message = f"scheduler_events: skipping {method!r}: {problem}"
        if settings.scheduler_strict:
            raise ConfigError(message)
        logger.error(message)
    if checked and not entries:
        logger.error("scheduler_events: every entry was skipped; beat will fire nothing")
    return entries


def _method_problem(method: Any, settings: Settings) -> str | None:
    """Why ``method`` cannot be scheduled, or None."""
    try:
        normalize_path("method", method, settings)
        import_trusted(method)
    except InvalidArgumentError as exc:
        return exc.allowed
    except ImportError as exc:
        return f"cannot be imported ({exc})"
    return None


def load_events() -> dict[str, Any]:
    """scheduler_events of every hooks module, merged (lists concatenated, cron dicts merged)."""
    merged: dict[str, Any] = {}
    for module in hooks_modules():
        for event, value in (getattr(module, "scheduler_events", None) or {}).items():
            if isinstance(value, dict):
                target = merged.setdefault(event, {})
                for expression, methods in value.items():
                    target.setdefault(expression, []).extend(methods)
            else:
                merged.setdefault(event, []).extend(value)
    return merged
