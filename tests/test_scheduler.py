"""scheduler_events on celery beat: the mapping, time zones, catch-up, leadership and switches.

The clock-driven tests call the beat scheduler's tick with a chosen time against the real Redis;
the others run real `celery beat` processes with a real worker.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import os
import time
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

import frappe_celery as frappe
from frappe_celery.broker import keys
from frappe_celery.config import load_settings
from frappe_celery.errors import ConfigError
from frappe_celery.scheduler import state
from frappe_celery.scheduler.beat import FrappeScheduler
from frappe_celery.scheduler.entries import ScheduleEntry, build_entries

from .jobs.hooks_schedule_all import scheduler_events as ALL_EVENTS
from .jobs.sched import TICKS
from .support.processes import wait_for
from .support.settings import TEST_CONFIG

BERLIN = ZoneInfo("Europe/Berlin")


def settings_for(**env: str):
    return load_settings({"FRAPPE_CELERY_HOOKS": "tests.jobs.hooks", **env})


def ticks(r) -> list[float]:
    return [json.loads(v) for v in r.lrange(TICKS, 0, -1)]


# -- mapping ------------------------------------------------------------------------------------


@pytest.mark.unit
def test_mapping_table_generates_schedule_queue_and_job_id_per_key():
    site = "site1.local"
    h = int(hashlib.sha1(site.encode()).hexdigest(), 16) % 60
    entries = build_entries(ALL_EVENTS, settings_for(FRAPPE_CELERY_SITE=site))
    table = {(e.event, e.expression, e.method.rsplit(".", 1)[1]): e.queue for e in entries}
    assert table == {
        ("all", "*/4 * * * *", "tick"): "default",
        ("hourly", "0 * * * *", "tick"): "default",
        ("hourly_long", "0 * * * *", "tick"): "long",
        ("hourly_short", "0 * * * *", "tick"): "short",
        ("hourly_maintenance", f"{h} * * * *", "tick"): "long",
        ("daily", "0 0 * * *", "tick"): "default",
        ("daily_long", "0 0 * * *", "tick"): "long",
        ("daily_maintenance", f"{(h + 30) % 60} 0 * * *", "tick"): "long",
        ("weekly", "0 0 * * 0", "tick"): "default",
        ("weekly_long", "0 0 * * 0", "tick"): "long",
        ("monthly", "0 0 1 * *", "tick"): "default",
        ("monthly_long", "0 0 1 * *", "tick"): "long",
        ("yearly", "0 0 1 1 *", "tick"): "default",
        ("annual", "0 0 1 1 *", "tick"): "default",
        ("annual_long", "0 0 1 1 *", "tick"): "long",
        ("cron", "*/15 * * * *", "tick"): "default",
        ("cron", "@daily", "other"): "default",
        ("cron_long", "0 2 * * *", "tick"): "long",
        ("cron_short", "* * * * * */2", "other"): "short",
    }
    daily_long = next(e for e in entries if e.event == "daily_long")
    assert daily_long.job_id == "site1.local||scheduled_job||daily_long|tests.jobs.sched.tick"
    cron = next(e for e in entries if e.event == "cron_long")
    assert cron.job_id == "site1.local||scheduled_job||cron_long[0 2 * * *]|tests.jobs.sched.tick"
    assert len({e.job_id for e in entries}) == len(entries)


@pytest.mark.unit
def test_every_site_gets_every_entry_with_its_own_maintenance_offset():
    events = {"daily": ["tests.jobs.sched.tick"], "hourly_maintenance": ["tests.jobs.sched.tick"]}
    entries = build_entries(events, settings_for(FRAPPE_CELERY_SITES="a.local,b.local"))
    assert sorted((e.site, e.event) for e in entries) == [
        ("a.local", "daily"),
        ("a.local", "hourly_maintenance"),
        ("b.local", "daily"),
        ("b.local", "hourly_maintenance"),
    ]
    offsets = {e.site: e.expression for e in entries if e.event == "hourly_maintenance"}
    assert offsets["a.local"] != offsets["b.local"]
    assert all(e.job_id.startswith(f"{e.site}||scheduled_job||") for e in entries)


@pytest.mark.unit
@pytest.mark.parametrize(
    ("interval", "expression"), [(240, "*/4 * * * *"), (60, "*/1 * * * *"), (30, "* * * * * */30")]
)
def test_scheduler_interval_sets_the_all_event(tmp_path, interval, expression):
    path = tmp_path / "conf.json"
    path.write_text(json.dumps({"scheduler_interval": interval}))
    entries = build_entries(
        {"all": ["tests.jobs.sched.tick"]}, settings_for(FRAPPE_CELERY_CONFIG=str(path))
    )
    assert [e.expression for e in entries] == [expression]


@pytest.mark.unit
def test_unknown_event_key_stops_start_up_naming_the_key():
    with pytest.raises(ConfigError, match="unknown key 'dailly'"):
        build_entries({"dailly": ["tests.jobs.sched.tick"]}, settings_for())


@pytest.mark.unit
def test_invalid_cron_expression_stops_start_up_naming_key_and_expression():
    with pytest.raises(
        ConfigError,
        match=r"scheduler_events\['cron_long'\]: invalid cron expression '61 \* \* \* \*'",
    ):
        build_entries({"cron_long": {"61 * * * *": ["tests.jobs.sched.tick"]}}, settings_for())


@pytest.mark.unit
def test_unimportable_method_is_reported_by_name_and_skipped(caplog):
    events = {"daily": ["tests.jobs.sched.tick", "tests.jobs.sched.missing"]}
    with caplog.at_level(logging.ERROR):
        entries = build_entries(events, settings_for())
    assert [e.method for e in entries] == ["tests.jobs.sched.tick"]
    assert "skipping 'tests.jobs.sched.missing'" in caplog.text


@pytest.mark.unit
def test_scheduler_strict_makes_an_unimportable_method_fatal(tmp_path):
    path = tmp_path / "conf.json"
    path.write_text(json.dumps({"frappe_celery": {"scheduler_strict": True}}))
    with pytest.raises(ConfigError, match=r"tests\.jobs\.sched\.missing"):
        build_entries(
            {"daily": ["tests.jobs.sched.missing"]}, settings_for(FRAPPE_CELERY_CONFIG=str(path))
        )


@pytest.mark.unit
def test_a_schedule_whose_entries_are_all_skipped_says_so(caplog):
    with caplog.at_level(logging.ERROR):
        entries = build_entries({"daily": ["os.system", "nowhere.at.all"]}, settings_for())
    assert entries == []
    assert "every entry was skipped" in caplog.text
    assert "standard-library" in caplog.text


# -- time: DST with a controllable clock -----------------------------------------------------------


def fires(expression: str, start: datetime, count: int) -> list[datetime]:
    entry = ScheduleEntry("s", "cron", expression, "tests.jobs.sched.tick", "default")
    moments, when = [], start.timestamp()
    for _ in range(count):
        when = entry.next_after(when, BERLIN)
        moments.append(datetime.fromtimestamp(when, BERLIN))
    return moments


@pytest.mark.unit
@pytest.mark.parametrize(
    "start",
    [datetime(2026, 3, 26, 12, tzinfo=BERLIN), datetime(2026, 10, 22, 12, tzinfo=BERLIN)],
    ids=["spring-forward", "fall-back"],
)
@pytest.mark.parametrize("expression", ["0 0 * * *", "30 2 * * *"])
def test_a_daily_job_fires_once_per_local_day_across_dst(start, expression):
    moments = fires(expression, start, 7)
    days = [m.date() for m in moments]
    # One run per local day, on consecutive days: none skipped, none doubled.
    assert len(set(days)) == 7
    assert all((b - a).days == 1 for a, b in itertools.pairwise(days))
    if expression == "0 0 * * *":
        assert {(m.hour, m.minute) for m in moments} == {(0, 0)}


@pytest.mark.unit
def test_a_time_skipped_by_spring_forward_fires_in_the_shifted_hour():
    # 02:30 does not exist in Berlin on 2026-03-29: the run happens once, at 03:30 CEST.
    moments = fires("30 2 * * *", datetime(2026, 3, 28, 12, tzinfo=BERLIN), 2)
    assert moments[0].isoformat() == "2026-03-29T03:30:00+02:00"
    assert moments[1].isoformat() == "2026-03-30T02:30:00+02:00"


# -- ticks against Redis with a controllable clock ---------------------------------------


@pytest.fixture
def scheduler_with(r, tmp_path):
    """Build FrappeScheduler instances for given scheduler_events (and config)."""
    original = dict(os.environ)
    made: list[FrappeScheduler] = []

    def make(events: dict, **config) -> FrappeScheduler:
        module = f"hooks_tmp_{len(made)}_{os.getpid()}_{time.monotonic_ns()}"
        (tmp_path / f"{module}.py").write_text(f"scheduler_events = {events!r}\n")
        conf_path = tmp_path / f"{module}.json"
        conf_path.write_text(json.dumps({**TEST_CONFIG, **config}))
        import sys

        if str(tmp_path) not in sys.path:
            sys.path.insert(0, str(tmp_path))
        os.environ["FRAPPE_CELERY_HOOKS"] = f"tests.jobs.hooks,{module}"
        os.environ["FRAPPE_CELERY_CONFIG"] = str(conf_path)
        os.environ["FRAPPE_CELERY_ALLOWED_MODULES"] = "tests"
        frappe.reload_settings()
        scheduler = FrappeScheduler(frappe.app)
        made.append(scheduler)
        return scheduler

    yield make
    for scheduler in made:
        scheduler.close()
    os.environ.clear()
    os.environ.update(original)
    frappe.reload_settings()


def published_records(r) -> list[dict[str, str]]:
    """The records of the jobs published since the last call; then forget them.

    Counted by their records, not by the queue lists: a session worker may already have taken
    the messages off `default`. Each publish writes a fresh record, and a tick publishes an
    entry at most once.
    """
    found = list(r.scan_iter(match=keys.JOB_PREFIX + "*"))
    records = [{k.decode(): v.decode() for k, v in r.hgetall(key).items()} for key in found]
    if found:
        r.delete(*found)
    return records


def published(r) -> int:
    return len(published_records(r))


def at(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=ZoneInfo("UTC")).timestamp()


def test_a_new_entry_waits_for_its_next_due_time(r, scheduler_with):
    beat = scheduler_with({"hourly": ["tests.jobs.sched.tick"]})
    beat.tick_at(at("2026-05-01 10:30:00"))
    assert published(r) == 0
    beat.tick_at(at("2026-05-01 10:59:59"))
    assert published(r) == 0
    beat.tick_at(at("2026-05-01 11:00:00"))
    assert published(r) == 1


def test_catch_up_after_downtime_fires_once_not_once_per_missed_tick(r, scheduler_with):
    events = {"hourly": ["tests.jobs.sched.tick"]}
    beat = scheduler_with(events)
    beat.tick_at(at("2026-05-01 10:30:00"))
    beat.close()
    # Beat was down for 5 hours; a new one (any host) continues from Redis.
    later = scheduler_with(events)
    later.tick_at(at("2026-05-01 15:45:00"))
    assert published(r) == 1
    later.tick_at(at("2026-05-01 15:50:00"))
    assert published(r) == 0
    later.tick_at(at("2026-05-01 16:00:00"))
    assert published(r) == 1


@pytest.mark.parametrize("start", ["2026-03-27 00:00:00", "2026-10-23 00:00:00"])
def test_daily_job_fires_once_per_local_day_through_dst_changes(r, scheduler_with, start):
    beat = scheduler_with({"cron": {"30 2 * * *": ["tests.jobs.sched.tick"]}}, **{
        "frappe_celery": {**TEST_CONFIG["frappe_celery"], "time_zone": "Europe/Berlin"}
    })  # fmt: skip
    now, runs = at(start), []
    for _ in range(4 * 24 * 6):  # 4 days, a tick every 10 minutes
        beat.tick_at(now)
        if published(r):
            runs.append(datetime.fromtimestamp(now, BERLIN))
        now += 600
    # The first day's 02:30 is still ahead at the start: runs on days 1 to 4, once each.
    assert len(runs) == 4
    assert len({run.date() for run in runs}) == 4


def test_only_the_leader_fires_and_a_standby_takes_over_without_refiring(r, scheduler_with):
    events = {"cron": {"*/10 * * * *": ["tests.jobs.sched.tick"]}}
    leader, standby = scheduler_with(events), scheduler_with(events)
    leader.tick_at(at("2026-05-01 10:05:00"))
    standby.tick_at(at("2026-05-01 10:05:00"))
    assert leader.leader.held and not standby.leader.held

    leader.tick_at(at("2026-05-01 10:10:00"))
    standby.tick_at(at("2026-05-01 10:10:00"))
    assert published(r) == 1
    assert state.current_leader() == leader.leader.node

    # The leader dies: its lock expires. The standby takes over at its next tick and does not
    # fire the 10:10 tick again.
    r.delete(keys.SCHEDULER_LEADER)
    standby.tick_at(at("2026-05-01 10:10:30"))
    assert standby.leader.held
    assert published(r) == 0
    # The old leader wakes up: it no longer holds the lock and fires nothing.
    leader.tick_at(at("2026-05-01 10:20:00"))
    assert not leader.leader.held
    standby.tick_at(at("2026-05-01 10:20:00"))
    assert published(r) == 1


@pytest.mark.parametrize("sites", [None, ["test.site"]], ids=["all-sites", "one-site"])
@pytest.mark.parametrize("switch", ["paused", "disabled", "maintenance"])
def test_a_switched_off_site_fires_nothing_and_resumes_with_one_catch_up(
    r, scheduler_with, switch, sites
):
    beat = scheduler_with({"hourly": ["tests.jobs.sched.tick"]})
    beat.tick_at(at("2026-05-01 10:30:00"))
    state.set_switch(switch, True, sites)
    for hour in range(11, 16):
        beat.tick_at(at(f"2026-05-01 {hour}:00:00"))
    assert published(r) == 0
    state.set_switch(switch, False, sites)
    beat.tick_at(at("2026-05-01 15:10:00"))
    assert published(r) == 1  # one catch-up run, not five
    beat.tick_at(at("2026-05-01 15:20:00"))
    assert published(r) == 0


def test_pausing_one_site_leaves_the_others_running(r, scheduler_with, tmp_path):
    beat = scheduler_with(
        {"hourly": ["tests.jobs.sched.tick"]},
        frappe_celery={**TEST_CONFIG["frappe_celery"], "sites": ["a.local", "b.local"]},
    )
    beat.tick_at(at("2026-05-01 10:30:00"))
    state.set_switch("paused", True, ["a.local"])
    beat.tick_at(at("2026-05-01 11:00:00"))
    assert [record["site"] for record in published_records(r)] == ["b.local"]


def test_frappes_maintenance_mode_in_the_config_stops_firing(r, scheduler_with):
    beat = scheduler_with({"hourly": ["tests.jobs.sched.tick"]}, maintenance_mode=1)
    beat.tick_at(at("2026-05-01 10:30:00"))
    beat.tick_at(at("2026-05-01 11:00:00"))
    assert published(r) == 0


# -- real beat processes ------------------------------------------------------------------

BEAT_ENV = {"FRAPPE_CELERY_HOOKS": "tests.jobs.hooks,tests.jobs.hooks_beat"}


def assert_one_run_per_tick(runs: list[float]) -> None:
    """Every run belongs to a different 2-second tick (no tick fired twice)."""
    buckets = [int(t // 2) for t in runs]
    assert len(buckets) == len(set(buckets)), runs


def test_a_real_beat_fires_a_two_second_cron_once_per_tick(r, shared_worker, start_beat):
    beat = start_beat(**BEAT_ENV)
    wait_for(lambda: beat.is_leader, 20)
    started = time.time()
    time.sleep(10)  # 5 ticks
    beat.stop()
    stopped = time.time()
    time.sleep(1)  # the last job runs
    runs = ticks(r)
    # Ticks are the even seconds in [started, stopped].
    expected = int(stopped // 2) - int(started // 2)
    assert abs(len(runs) - expected) <= 1, (len(runs), expected)
    assert_one_run_per_tick(runs)


def test_two_beats_fire_each_tick_once_and_the_survivor_takes_over(r, shared_worker, start_beat):
    first, second = start_beat(**BEAT_ENV), start_beat(**BEAT_ENV)
    wait_for(lambda: first.is_leader or second.is_leader, 20)
    started = time.time()
    time.sleep(10)  # 5 ticks
    expected = int(time.time() // 2) - int(started // 2)
    runs = ticks(r)
    assert abs(len(runs) - expected) <= 1, (len(runs), expected)
    assert_one_run_per_tick(runs)

    leader, survivor = (first, second) if first.is_leader else (second, first)
    assert not survivor.is_leader
    leader.kill()
    killed_at = time.time()
    wait_for(lambda: any(t > killed_at for t in ticks(r)), 30)
    took_over = min(t for t in ticks(r) if t > killed_at) - killed_at
    assert took_over < 30
    assert survivor.is_leader
    time.sleep(4)
    assert_one_run_per_tick(ticks(r))


def test_pause_stops_a_real_beat_and_resume_restarts_it(r, shared_worker, start_beat):
    beat = start_beat(**BEAT_ENV)
    wait_for(lambda: len(ticks(r)) >= 2, 20)
    state.set_switch("paused", True)
    time.sleep(1.5)  # a tick in flight may still land
    count = len(ticks(r))
    time.sleep(6)
    assert len(ticks(r)) == count
    assert beat.process.poll() is None  # paused, not stopped

    state.set_switch("paused", False)
    resumed = time.time()
    wait_for(lambda: len(ticks(r)) > count, 10)
    time.sleep(4)
    after = [t for t in ticks(r) if t >= resumed]
    # No burst of the ticks missed while paused: at most one per 2 s since the resume.
    assert len(after) <= (time.time() - resumed) // 2 + 2
    assert_one_run_per_tick(ticks(r))


def test_a_changed_hooks_file_takes_effect_on_restart(r, scheduler_with):
    before = scheduler_with({"hourly": ["tests.jobs.sched.tick", "tests.jobs.sched.other"]})
    before.tick_at(at("2026-05-01 10:30:00"))
    before.tick_at(at("2026-05-01 11:00:00"))
    assert published(r) == 2
    before.close()
    # Restarted with `other` removed from scheduler_events: only `tick` fires from now on.
    after = scheduler_with({"hourly": ["tests.jobs.sched.tick"]})
    after.tick_at(at("2026-05-01 12:00:00"))
    assert [record["method"] for record in published_records(r)] == ["tests.jobs.sched.tick"]
