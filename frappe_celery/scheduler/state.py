"""The scheduler's shared state in Redis: the leader lock, last-run times and the switches.

Everything beat needs to continue where another beat (on any host) stopped lives here, never in
a local file.
"""

from __future__ import annotations

import dataclasses
import json
import uuid
from collections.abc import Iterable
from dataclasses import asdict, dataclass

from frappe_celery.broker import keys, scripts
from frappe_celery.connection import as_text, broker_errors, get_redis
from frappe_celery.version import installed_version

# A leader renews its lock every tick (at most 1 s apart); if it dies, the lock expires and a
# standby takes over at its next tick: within LEADER_TTL + 1 s.
LEADER_TTL_SECONDS = 10

SWITCHES = ("paused", "disabled", "maintenance")
ALL_SITES = "*"


class LeaderLock:
    """The token-checked lock that makes one beat, of any number running, fire the ticks."""

    def __init__(self, node: str) -> None:
        self.node = node
        # node|version|nonce: the version tells doctor which frappe-celery the leader runs.
        self.token = f"{node}|{installed_version()}|{uuid.uuid4().hex}"
        self.held = False

    def refresh(self) -> bool:
        """Keep the lock if held, else try to take it; returns whether this beat leads."""
        client = get_redis()
        ttl_ms = LEADER_TTL_SECONDS * 1000
        with broker_errors():
            if self.held:
                self.held = bool(
                    scripts.EXTEND_LOCK(client, [keys.SCHEDULER_LEADER], [self.token, ttl_ms])
                )
            else:
                self.held = bool(client.set(keys.SCHEDULER_LEADER, self.token, nx=True, px=ttl_ms))
        return self.held

    def release(self) -> None:
        if self.held:
            with broker_errors():
                scripts.RELEASE_LOCK(get_redis(), [keys.SCHEDULER_LEADER], [self.token])
            self.held = False


def current_leader() -> str | None:
    """The node name of the beat holding the leader lock, if any."""
    info = leader_info()
    return info[0] if info else None


def leader_info() -> tuple[str, str | None] | None:
    """The leading beat's node name and frappe-celery version (None: a beat before versions
    were in the token), or None when no beat leads."""
    with broker_errors():
        token = get_redis().get(keys.SCHEDULER_LEADER)
    if not token:
        return None
    parts = as_text(token).split("|")
    return parts[0], parts[1] if len(parts) >= 3 else None


def last_run_field(site: str, entry_name: str) -> str:
    return f"{site}||{entry_name}"


def read_last_runs(fields: list[str]) -> list[float | None]:
    if not fields:
        return []
    with broker_errors():
        values = get_redis().hmget(keys.SCHEDULER_LAST_RUNS, fields)
    return [float(value) if value is not None else None for value in values]


def seed_last_runs(initial: dict[str, float]) -> None:
    """Set last runs for entries seen for the first time (a new entry waits for its next due
    time, as Frappe's cold start does); existing values are kept."""
    if not initial:
        return
    with broker_errors():
        pipe = get_redis().pipeline(transaction=False)
        for name, value in initial.items():
            pipe.hsetnx(keys.SCHEDULER_LAST_RUNS, name, value)
        pipe.execute()


def claim_ticks(token: str, due: list[tuple[str, float]]) -> list[int]:
    """Indexes (0-based) of the ``(field, scheduled time)`` pairs this leader may fire."""
    args: list[str | float] = [token]
    for field, scheduled in due:
        args += [field, scheduled]
    with broker_errors():
        claimed = scripts.CLAIM_TICKS(
            get_redis(), [keys.SCHEDULER_LEADER, keys.SCHEDULER_LAST_RUNS], args
        )
    return [int(number) - 1 for number in claimed]


def set_switch(switch: str, on: bool, sites: Iterable[str] | None = None) -> None:
    """Turn ``switch`` (paused, disabled, maintenance) on or off for ``sites`` (None: all)."""
    if switch not in SWITCHES:
        raise ValueError(f"switch: got {switch!r}; allowed: {', '.join(SWITCHES)}")
    fields = [f"{site}||{switch}" for site in (sites if sites is not None else [ALL_SITES])]
    with broker_errors():
        if on:
            get_redis().hset(keys.SCHEDULER_SWITCHES, mapping=dict.fromkeys(fields, "1"))
        elif sites is None:
            # Turning a switch off for all sites clears it everywhere, per-site ones included.
            names = [
                name
                for name in get_redis().hkeys(keys.SCHEDULER_SWITCHES)
                if as_text(name).endswith(f"||{switch}")
            ]
            if names:
                get_redis().hdel(keys.SCHEDULER_SWITCHES, *names)
        else:
            get_redis().hdel(keys.SCHEDULER_SWITCHES, *fields)


def read_switches() -> dict[str, set[str]]:
    """site (or "*") -> the switches on for it."""
    with broker_errors():
        raw = get_redis().hkeys(keys.SCHEDULER_SWITCHES)
    switches: dict[str, set[str]] = {}
    for name in raw:
        site, switch = as_text(name).rsplit("||", 1)
        switches.setdefault(site, set()).add(switch)
    return switches


# What a site's scheduler was found to be at a pass: active, or why it fired nothing. The first
# three are the switches (frappe-celery's own or the site's config); "dormant" is Frappe's
# schedule_jobs_based_on_activity saying no; "database_down" a site whose database could not be
# reached; "error" a site that raised otherwise as it was read.
SITE_STATES = ("active", "paused", "disabled", "maintenance", "dormant", "database_down", "error")


@dataclass
class SitePass:
    """The leading beat's pass over one site: at ``at`` (epoch), the site was ``state``, and
    these job types (Scheduled Job Types in a bench, scheduler_events entries outside) were due
    as the pass began, each ``lags[name]`` seconds past its due time: fired then, or kept back
    (an inactive site; in a bench, a last run still queued or running), when the lag grows from
    pass to pass. ``interval``: the beat's seconds between passes."""

    site: str
    state: str
    at: float
    interval: float
    lags: dict[str, float] = dataclasses.field(default_factory=dict)


def record_passes(passes: Iterable[SitePass]) -> None:
    """One write for a whole pass (every site's), read by the metrics and `status`."""
    mapping = {p.site: json.dumps(asdict(p)) for p in passes}
    if mapping:
        with broker_errors():
            get_redis().hset(keys.SCHEDULER_PASSES, mapping=mapping)


def read_passes() -> dict[str, SitePass]:
    """site -> its last recorded pass."""
    with broker_errors():
        raw = get_redis().hgetall(keys.SCHEDULER_PASSES)
    passes = {}
    for name, value in raw.items():
        try:
            passes[as_text(name)] = SitePass(**json.loads(value))
        except (TypeError, ValueError):
            continue  # written by another version: skipped until the next pass rewrites it
    return passes
