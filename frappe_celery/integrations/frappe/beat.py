"""``celery -A frappe_celery beat`` in a bench: Frappe's own ``bench schedule``, with one leader.

Selected by the ``beat_scheduler`` setting when the process runs in a bench (celery_app.py).
What is due is decided by Frappe itself, site by site, exactly as ``bench schedule`` decides it
(``frappe.utils.scheduler.enqueue_events_for_site``): each site's Scheduled Job Types (synced
from every app's ``scheduler_events`` on migrate, plus Server Script scheduler events), read in
the site's time zone, skipped while the site is in maintenance mode, has ``pause_scheduler`` or
``disable_scheduler`` set or System Settings' ``enable_scheduler`` off. Each due type is enqueued
by its own ``ScheduledJobType.enqueue``, whose ``frappe.enqueue`` the switch sends to Celery; the
job writes its Scheduled Job Log row as under RQ. A job type already queued or running is not
enqueued again (its id is an atomic dedup lock here).

What this adds to ``bench schedule``: a Redis leader lock instead of a file lock (any number of
beats, on any hosts; one fires), and a site whose database is down is logged by name and the
other sites go on. The pass runs every Frappe scheduler tick (``scheduler_tick_interval``,
240 s by default, aligned on the clock as Frappe aligns it), and once as soon as a beat becomes
the leader, so what fell due while no beat ran fires once on its return.
"""

from __future__ import annotations

import inspect
import logging
import random
import time
from pathlib import Path
from typing import Any

from frappe_celery.bench_files import Bench
from frappe_celery.config import get_settings
from frappe_celery.errors import BrokerUnreachable
from frappe_celery.integrations.frappe import _frappe, scheduled_jobs
from frappe_celery.integrations.frappe.switch import apply as apply_switch
from frappe_celery.scheduler.beat import TICK_SECONDS, LeaderScheduler
from frappe_celery.scheduler.state import SitePass, record_passes

logger = logging.getLogger(__name__)


def scheduler_tick(sites_path: str) -> int:
    """Frappe's ``get_scheduler_tick()``: ``scheduler_tick_interval`` or 240 s."""
    frappe = _frappe()
    from frappe.utils.scheduler import get_scheduler_tick

    frappe.init("", sites_path=sites_path)
    try:
        return int(get_scheduler_tick())
    finally:
        frappe.destroy()


def enqueue_site(site: str, sites_path: str) -> tuple[str, dict[str, float], list[str]]:
    """What Frappe's ``enqueue_events_for_site`` does for one site, and what the pass found:
    the site's state (scheduler/state.py SITE_STATES), the Scheduled Job Types due as the pass
    began with how late each was (fired now, or kept back: an inactive site, or their last run
    still queued or running), and the methods enqueued. Raises what the site raises (its
    database down: :class:`SiteUnreachable`)."""
    frappe = _frappe()
    from frappe.utils.scheduler import enqueue_events, is_scheduler_disabled

    frappe.init(site, sites_path=sites_path)
    try:
        try:
            frappe.connect()
        except Exception as exc:
            raise SiteUnreachable(f"{type(exc).__name__}: {exc}") from exc
        lags = due_lags(frappe)
        # Frappe's is_scheduler_inactive, in its order, saying which switch it was.
        if frappe.local.conf.maintenance_mode:
            return "maintenance", lags, []
        if frappe.local.conf.pause_scheduler:
            return "paused", lags, []
        if is_scheduler_disabled(verbose=False):
            return "disabled", lags, []
        # Frappe 15's enqueue_events takes the site; 16's reads frappe.local.site. Both return
        # None for a dormant site (schedule_jobs_based_on_activity).
        takes_site = bool(inspect.signature(enqueue_events).parameters)
        enqueued = enqueue_events(site) if takes_site else enqueue_events()
        if enqueued is None:
            return "dormant", lags, []
        return "active", lags, list(enqueued)
    finally:
        frappe.destroy()


class SiteUnreachable(Exception):
    """A site's database could not be reached at the scheduler's pass."""


def due_lags(frappe: Any) -> dict[str, float]:
    """Scheduled Job Type name -> seconds past its next execution, for those due now."""
    now = frappe.utils.now_datetime()
    lags = {}
    for row in frappe.get_all("Scheduled Job Type", filters={"stopped": 0}, fields="*"):
        job_type = frappe.get_doc(doctype="Scheduled Job Type", **row)
        try:
            due_at = job_type.get_next_execution()
        except Exception:  # an invalid cron expression: Frappe logs and skips it too
            continue
        if due_at <= now:
            lags[job_type.name] = round((now - due_at).total_seconds(), 3)
    return lags


class BenchScheduler(LeaderScheduler):
    def __init__(self, app: Any, *args: Any, **kwargs: Any) -> None:
        sites_path = get_settings().sites_path
        if sites_path is None:  # celery_app selects this class only in a bench
            raise RuntimeError("BenchScheduler runs in a bench's sites/ folder")
        self.bench = Bench(Path(sites_path))
        # Frappe's enqueue goes to Celery in this process too, and cron_long / *_short keys go to
        # their queues, whether or not the bench's .pth switch is on (twice is a no-op).
        apply_switch()
        scheduled_jobs.install()
        self.tick_seconds = scheduler_tick(sites_path)
        self.next_pass = 0.0
        super().__init__(app, *args, **kwargs)

    def setup_schedule(self) -> None:
        logger.info(
            "frappe-celery bench scheduler: sites %s, Frappe's tick every %d s",
            ", ".join(self.bench.sites()) or "(none)",
            self.tick_seconds,
        )

    @property
    def info(self) -> str:
        return f"    . frappe-celery: the bench's Scheduled Job Types, every {self.tick_seconds} s"

    def lead(self, now: float, *, became_leader: bool) -> float:
        if became_leader:
            self.next_pass = now  # catch up at once on what fell due meanwhile
        if now >= self.next_pass:
            self.run_pass()
            # The next multiple of the tick, as Frappe's sleep_duration aligns it on the clock.
            self.next_pass = (time.time() // self.tick_seconds + 1) * self.tick_seconds
        return max(0.01, min(TICK_SECONDS, self.next_pass - time.time()))

    def run_pass(self) -> None:
        """Every site of the bench, in random order as Frappe does (no site always last); then
        what the pass found over each site, in one write (the metrics read it)."""
        sites = list(self.bench.sites())
        random.shuffle(sites)
        passes = []
        for site in sites:
            started = time.time()
            lags: dict[str, float] = {}
            try:
                # A long pass must not outlive the lock: renew it between sites.
                if not self.leader.refresh():
                    logger.warning("scheduler: lost the leader lock; the pass stops at %s", site)
                    return
                found, lags, enqueued = enqueue_site(site, str(self.bench.sites_path))
            except BrokerUnreachable:
                raise
            except SiteUnreachable as exc:
                logger.warning("scheduler: site %s skipped: its database is down: %s", site, exc)
                found = "database_down"
            except Exception as exc:
                logger.warning("scheduler: site %s skipped: %s: %s", site, type(exc).__name__, exc)
                found = "error"
            else:
                if found != "active":
                    # Frappe's own words for it are printed by `bench schedule` in verbose mode.
                    logger.info("scheduler: site %s is inactive (%s)", site, found)
                elif enqueued:
                    logger.info("scheduler: enqueued for %s: %s", site, ", ".join(enqueued))
            passes.append(SitePass(site, found, started, self.tick_seconds, lags))
        record_passes(passes)
        logger.info("scheduler: pass done (%d sites)", len(sites))
