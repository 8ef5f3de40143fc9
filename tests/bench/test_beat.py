"""``celery -A frappe_celery beat`` replacing ``bench schedule`` on a real site: Frappe decides
what is due (Scheduled Job Types, the site's switches), Celery runs it, one beat fires."""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from frappe_celery.ops import metrics
from frappe_celery.scheduler import state

from ..support.frappe_bench import (
    DAILY,
    TICK,
    Beat,
    Bench,
    edit_json,
    fresh,
    logs_since,
    make_due,
)
from ..support.processes import wait_for

pytestmark = pytest.mark.usefixtures("celery_worker")


@pytest.fixture
def start_beat(bench: Bench, tmp_path: Path) -> Iterator[Callable[[], Beat]]:
    started: list[Beat] = []

    def start() -> Beat:
        beat = Beat(bench, tmp_path / f"beat-{uuid.uuid4().hex[:6]}.log")
        started.append(beat)
        return beat

    yield start
    for beat in started:
        beat.stop()


def test_beat_runs_what_frappe_finds_due_once_with_its_scheduled_job_log(
    bench, scheduler_on, start_beat
):
    # Two daily runs were missed while no beat ran: the job runs once when beat comes back.
    job_type, since = make_due(scheduler_on, DAILY, days_ago=2)
    beat = start_beat()
    wait_for(lambda: logs_since(scheduler_on, job_type, since) == ["Complete"], 60)
    passes = beat.passes()
    wait_for(lambda: beat.passes() >= passes + 2, 30)  # two more passes: nothing more is due
    assert logs_since(scheduler_on, job_type, since) == ["Complete"]
    found = state.read_passes()[bench.site]
    assert found.state == "active" and found.interval == TICK
    assert job_type not in found.lags  # run: no longer due
    todos = fresh(scheduler_on).get_all(
        "ToDo", filters={"description": ["like", "scheduled daily%"], "creation": [">=", since]}
    )
    assert len(todos) == 1


@pytest.mark.parametrize("switch", ["enable_scheduler", "pause_scheduler", "maintenance_mode"])
def test_a_site_whose_scheduler_is_off_fires_nothing(bench, scheduler_on, start_beat, switch):
    site_config = bench.sites / bench.site / "site_config.json"
    before = json.loads(site_config.read_text())
    if switch == "enable_scheduler":
        result = bench.run("disable-scheduler")  # as an operator does it
        assert result.returncode == 0, result.stderr[-2000:]
    else:
        edit_json(site_config, **{switch: 1})
    try:
        job_type, since = make_due(scheduler_on, DAILY)
        beat = start_beat()
        wait_for(lambda: beat.passes() >= 3, 30)
        assert logs_since(scheduler_on, job_type, since) == []
        assert f"scheduler: site {bench.site} is inactive" in beat.output()
        # The pass says why, and how late the job type it kept back is (due two days ago).
        reason = {"enable_scheduler": "disabled", "pause_scheduler": "paused",
                  "maintenance_mode": "maintenance"}[switch]  # fmt: skip
        found = state.read_passes()[bench.site]
        assert found.state == reason
        assert found.lags[job_type] > 24 * 3600
        text = metrics.render()
        assert (
            f'frappe_celery_scheduler_site_skipped{{reason="{reason}",site="{bench.site}"}} 1.0'
            in text
        )
        assert f'frappe_celery_scheduler_site_active{{site="{bench.site}"}} 0.0' in text
    finally:
        site_config.write_text(json.dumps(before, indent=1))


def test_two_beats_fire_a_due_job_once(scheduler_on, start_beat):
    job_type, since = make_due(scheduler_on, DAILY)
    beats = [start_beat(), start_beat()]
    wait_for(lambda: logs_since(scheduler_on, job_type, since) == ["Complete"], 60)
    wait_for(lambda: sum(beat.passes() for beat in beats) >= 4, 30)
    assert logs_since(scheduler_on, job_type, since) == ["Complete"]
    leaders = [beat for beat in beats if "is now the leader" in beat.output()]
    assert len(leaders) == 1


def test_a_site_whose_database_is_down_is_skipped_by_name_and_the_others_fire(
    bench, scheduler_on, start_beat
):
    # A second site whose database cannot be reached (its server refuses the connection).
    broken = bench.sites / f"down-{uuid.uuid4().hex[:6]}.local"
    broken.mkdir()
    unreachable = {"db_name": "nowhere", "db_password": "x", "db_host": "127.0.0.1", "db_port": 1}
    (broken / "site_config.json").write_text(json.dumps(unreachable))
    try:
        job_type, since = make_due(scheduler_on, DAILY)
        beat = start_beat()
        wait_for(lambda: logs_since(scheduler_on, job_type, since) == ["Complete"], 60)
        wait_for(lambda: f"scheduler: site {broken.name} skipped" in beat.output(), 30)
        assert beat.process.poll() is None
        wait_for(lambda: broken.name in state.read_passes(), 30)
        assert state.read_passes()[broken.name].state == "database_down"
        assert state.read_passes()[bench.site].state == "active"
    finally:
        shutil.rmtree(broken)


CRON_LONG = "celery_example.tasks.every_ten_minutes_long"
DAILY_SHORT = "celery_example.tasks.daily_short"


def test_cron_long_and_daily_short_sync_into_frappes_job_types_with_their_queues(site):
    # What `bench migrate` does with the example app's scheduler_events (Frappe's own sync_jobs,
    # which the switch taught cron_long and the *_short keys).
    from frappe.core.doctype.scheduled_job_type.scheduled_job_type import sync_jobs

    sync_jobs()
    site.db.commit()
    expected = {
        CRON_LONG: ("Cron", "*/10 * * * *", "long"),
        DAILY_SHORT: ("Daily", "", "short"),
        "celery_example.tasks.every_five_minutes": ("Cron", "*/5 * * * *", "default"),
        "celery_example.tasks.hourly_long": ("Hourly Long", "", "long"),
        DAILY: ("Daily", "", "default"),
    }
    for method, (frequency, cron_format, queue) in expected.items():
        job_type = site.get_doc("Scheduled Job Type", {"method": method})
        assert (job_type.frequency, job_type.cron_format or "") == (frequency, cron_format)
        assert job_type.get_queue_name() == queue, method


def test_a_cron_long_entry_runs_on_the_long_queue_with_its_scheduled_job_log(
    scheduler_on, start_beat
):
    import frappe_celery

    job_type, since = make_due(scheduler_on, CRON_LONG)
    # Frappe logs Cron types only when asked (create_log), as an operator may.
    scheduler_on.db.set_value("Scheduled Job Type", job_type, "create_log", 1)
    scheduler_on.db.commit()
    start_beat()
    wait_for(lambda: logs_since(scheduler_on, job_type, since) == ["Complete"], 60)
    rq_job_id = scheduler_on.get_doc("Scheduled Job Type", job_type).rq_job_id
    assert frappe_celery.get_job(rq_job_id).queue == "long"


def test_a_server_script_scheduler_event_fires(bench, scheduler_on, start_beat):
    # Server Scripts are off unless the bench turns them on (the fixture restores the file).
    edit_json(bench.sites / "common_site_config.json", server_script_enabled=1)
    scheduler_on.local.conf.server_script_enabled = 1
    name = f"celery-tests-{uuid.uuid4().hex[:8]}"
    text = f'frappe.get_doc({{"doctype": "ToDo", "description": "{name} ran"}}).insert()'
    scheduler_on.get_doc(
        {"doctype": "Server Script", "__newname": name, "name": name,
         "script_type": "Scheduler Event", "event_frequency": "Daily", "script": text}
    ).insert()  # fmt: skip
    scheduler_on.db.commit()
    try:
        job_type = scheduler_on.db.get_value("Scheduled Job Type", {"server_script": name})
        method = scheduler_on.db.get_value("Scheduled Job Type", job_type, "method")
        make_due(scheduler_on, method)
        start_beat()
        wait_for(lambda: fresh(scheduler_on).exists("ToDo", {"description": f"{name} ran"}), 60)
    finally:
        scheduler_on.delete_doc("Server Script", name, ignore_permissions=True)
        scheduler_on.db.commit()


def test_a_job_type_with_an_invalid_cron_expression_does_not_stop_the_others(
    scheduler_on, start_beat
):
    # Frappe refuses such a row when it is saved; one that got in anyway (an older Frappe, a
    # direct write) is logged by Frappe's own loop and skipped.
    bad = scheduler_on.get_doc(
        {"doctype": "Scheduled Job Type", "method": "celery_example.tasks.answer",
         "frequency": "Cron", "cron_format": "every blue moon"}
    )  # fmt: skip
    bad.name = f"celery-tests-bad-cron-{uuid.uuid4().hex[:6]}"
    bad.db_insert()
    scheduler_on.db.commit()
    try:
        job_type, since = make_due(scheduler_on, DAILY)
        beat = start_beat()
        wait_for(lambda: logs_since(scheduler_on, job_type, since) == ["Complete"], 60)
        assert beat.process.poll() is None
        import frappe_celery

        assert frappe_celery.get_job(f"scheduled_job||{bad.name}") is None
    finally:
        scheduler_on.db.delete("Scheduled Job Type", {"name": bad.name})
        scheduler_on.db.commit()


@pytest.mark.parametrize(
    ("events", "frappes_words"),
    [
        ({"every_day": ["celery_example.tasks.daily"]}, "Every Day"),
        ({"cron": {"every blue moon": ["celery_example.tasks.daily"]}}, "not a valid Cron"),
    ],
)
def test_a_bad_scheduler_event_fails_the_sync_with_frappes_own_message(site, events, frappes_words):
    # What `bench migrate` reports for an unknown key or a bad cron expression in hooks.py: the
    # switch's sync passes such keys to Frappe untouched.
    from frappe.core.doctype.scheduled_job_type.scheduled_job_type import sync_jobs

    try:
        with pytest.raises(site.ValidationError, match=frappes_words):
            sync_jobs(events)
    finally:
        site.db.rollback()
