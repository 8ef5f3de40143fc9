"""The Celery beat scheduler that fires scheduler_events (``celery -A frappe_celery beat``).

Selected by the ``beat_scheduler`` setting. Every tick (at most 1 s apart):

1. take or renew the leader lock; a beat that does not hold it fires nothing (any number of
   beats may run, on any hosts; a standby takes over within LEADER_TTL_SECONDS + 1 s);
2. read the switches (paused / disabled / maintenance, per site or for all);
3. for each entry of an active site whose next run is due: claim the tick in Redis (last-run
   times only move forward, and only for the lock holder, so no tick fires twice), then publish
   the claimed jobs, pipelined, through the same path as ``enqueue`` with ``deduplicate=True``
   (a run still queued or running is skipped and logged).

After downtime (or a pause) each overdue entry fires once, not once per missed tick: the
scheduled time claimed is the latest one at or before now.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import socket
import time
from typing import Any
from zoneinfo import ZoneInfo

from celery.beat import Scheduler

from frappe_celery.broker.wire import encode_body
from frappe_celery.caller.enqueue import make_payload
from frappe_celery.caller.publish import Publication, prepare, publish_batch
from frappe_celery.config import get_settings
from frappe_celery.errors import BrokerUnreachable, PublishError
from frappe_celery.scheduler.entries import ScheduleEntry, build_entries, load_events
from frappe_celery.scheduler.state import (
    ALL_SITES,
    SWITCHES,
    LeaderLock,
    SitePass,
    claim_ticks,
    last_run_field,
    read_last_runs,
    read_switches,
    record_passes,
    seed_last_runs,
)

logger = logging.getLogger(__name__)

# The longest sleep between ticks: lock renewal and seconds-granular cron need this cadence.
TICK_SECONDS = 1.0
# How often the leader records its pass over the sites (state.record_passes): a tick is too
# often for a write the metrics read at each scrape.
PASS_REPORT_SECONDS = 10.0


def scheduled_publication(entry: ScheduleEntry) -> Publication:
    """The job one firing of ``entry`` enqueues (as enqueue would, in the entry's site)."""
    payload = make_payload(entry.method, entry.queue, None, site=entry.site, user=None,
                           event=entry.event)  # fmt: skip
    return prepare(
        entry.job_id,
        payload,
        encode_body(payload, {}),
        at_front=False,
        deduplicate=True,
        at_front_when_starved=False,
    )


class LeaderScheduler(Scheduler):  # type: ignore[misc]
    """A Celery beat scheduler that fires only while it holds the Redis leader lock, so any
    number of beats may run, on any hosts. Celery's own schedule (``beat_schedule``, the shelve
    file) is not used. A subclass says what a leading beat does in :meth:`lead`."""

    def __init__(self, app: Any, *args: Any, **kwargs: Any) -> None:
        # What it fires is signed (signing.py): without a key it could fire nothing.
        get_settings().require_signing_key()
        self.leader = LeaderLock(f"beat-{os.getpid()}@{socket.gethostname()}")
        super().__init__(app, *args, **kwargs)

    def sync(self) -> None:
        pass

    def close(self) -> None:
        # Redis down: the lock expires by itself.
        with contextlib.suppress(BrokerUnreachable):
            self.leader.release()

    def tick(self, *args: Any, **kwargs: Any) -> float:
        try:
            return self.tick_at(time.time())
        except BrokerUnreachable as exc:
            # Leadership cannot be proven: stop firing until Redis answers again.
            self.leader.held = False
            logger.warning("scheduler: %s; retrying", exc)
            return TICK_SECONDS

    def tick_at(self, now: float) -> float:
        """One tick at time ``now``; returns how long to sleep."""
        was_leader = self.leader.held
        if not self.leader.refresh():
            return TICK_SECONDS
        if not was_leader:
            logger.info("scheduler: this beat (%s) is now the leader", self.leader.node)
        return self.lead(now, became_leader=not was_leader)

    def lead(self, now: float, *, became_leader: bool) -> float:
        """Fire what is due at ``now``, as the leader; returns how long to sleep."""
        raise NotImplementedError


class FrappeScheduler(LeaderScheduler):
    def __init__(self, app: Any, *args: Any, **kwargs: Any) -> None:
        self.settings = get_settings()
        self.zone = ZoneInfo(self.settings.time_zone)
        # Invalid keys or expressions raise here: beat does not start.
        self.entries = build_entries(load_events(), self.settings)
        self.fields = [last_run_field(entry.site, entry.name) for entry in self.entries]
        self.next_due = [math.inf] * len(self.entries)
        self.next_report = 0.0
        super().__init__(app, *args, **kwargs)

    def setup_schedule(self) -> None:
        sites = ", ".join(self.settings.scheduler_sites)
        logger.info(
            "frappe-celery scheduler: %d entries for %s, times in %s",
            len(self.entries),
            sites,
            self.settings.time_zone,
        )

    @property
    def info(self) -> str:
        return f"    . frappe-celery: {len(self.entries)} scheduler_events entries"

    def lead(self, now: float, *, became_leader: bool) -> float:
        if became_leader:
            self.load_next_runs(now)
        switches = read_switches()
        if now >= self.next_report:
            self.report(now, switches)
        due = self.due_entries(now, switches)
        if due:
            self.fire(due, now)
        soonest = min(self.next_due, default=math.inf) - time.time()
        return max(0.01, min(TICK_SECONDS, soonest))

    def load_next_runs(self, now: float) -> None:
        """Next run of every entry from the last runs in Redis (a new entry starts now)."""
        last_runs = read_last_runs(self.fields)
        first_seen: dict[str, float] = {}
        for index, (entry, last) in enumerate(zip(self.entries, last_runs, strict=True)):
            if last is None:
                last = entry.latest_at_or_before(now, self.zone)
                first_seen[self.fields[index]] = last
            self.next_due[index] = entry.next_after(last, self.zone)
        seed_last_runs(first_seen)

    def site_state(self, site: str, switches: dict[str, set[str]]) -> str:
        """ "active", or the switch that keeps the site's entries from firing (the config's
        first, then frappe-celery's own, for the site or for all)."""
        settings = self.settings
        for on, name in ((settings.pause_scheduler, "paused"),
                         (settings.disable_scheduler, "disabled"),
                         (settings.maintenance_mode, "maintenance")):  # fmt: skip
            if on:
                return name
        switched = switches.get(ALL_SITES, set()) | switches.get(site, set())
        return next((name for name in SWITCHES if name in switched), "active")

    def due_entries(self, now: float, switches: dict[str, set[str]]) -> list[int]:
        return [
            index
            for index, entry in enumerate(self.entries)
            if self.next_due[index] <= now and self.site_state(entry.site, switches) == "active"
        ]

    def report(self, now: float, switches: dict[str, set[str]]) -> None:
        """Record this pass for every site (the metrics read it): its state and the entries
        due and not fired yet (an inactive site's pile up), each with its lag."""
        self.next_report = now + PASS_REPORT_SECONDS
        passes = {
            site: SitePass(site, self.site_state(site, switches), now, PASS_REPORT_SECONDS)
            for site in self.settings.scheduler_sites
        }
        for index, entry in enumerate(self.entries):
            if self.next_due[index] <= now and entry.site in passes:
                passes[entry.site].lags[entry.name] = round(now - self.next_due[index], 3)
        record_passes(passes.values())

    def fire(self, due: list[int], now: float) -> None:
        scheduled = {
            index: max(
                self.next_due[index], self.entries[index].latest_at_or_before(now, self.zone)
            )
            for index in due
        }
        claimed = claim_ticks(self.leader.token, [(self.fields[i], scheduled[i]) for i in due])
        for index in due:
            self.next_due[index] = self.entries[index].next_after(scheduled[index], self.zone)
        if not claimed:
            return
        chosen = [due[position] for position in claimed]
        failed: set[str] = set()
        try:
            # A generator: Redis runs each script call while the next jobs are encoded.
            results = publish_batch(scheduled_publication(self.entries[i]) for i in chosen)
        except PublishError as exc:
            logger.error("scheduler: %s", exc)
            results, failed = exc.results, {job_id for job_id, _ in exc.failures}
        for index, job in zip(chosen, results, strict=True):
            entry = self.entries[index]
            if entry.job_id in failed:
                continue
            if job is None:
                logger.info(
                    "Skipped queueing %s because it was found in queue for %s",
                    entry.method,
                    entry.site,
                )
            else:
                logger.info(
                    "scheduler: enqueued %s (%s) for %s", entry.method, entry.event, entry.site
                )
