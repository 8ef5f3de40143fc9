"""The job record's schema has one source, records.py: every field name the Lua scripts and the
Python readers use is one of its FIELDS, every status a script writes is a JobStatus, and the
state machine names only statuses. Pure: reads the sources, no Redis."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from frappe_celery import records
from frappe_celery.job import JobStatus

pytestmark = pytest.mark.unit  # pure: reads the sources, no Redis, no worker

PACKAGE = Path(records.__file__).resolve().parent
LUA = sorted((PACKAGE / "broker" / "lua").glob("*.lua"))
STATUSES = {status.value for status in JobStatus}

# A hash command's literal arguments: redis.call('HSET', key, 'field', value, ...).
HASH_CALL = re.compile(r"redis\.call\('(?:HSET|HMGET|HGET|HDEL|HEXISTS)',([^)]*)\)")
LITERAL = re.compile(r"'([a-z_]+)'")
# Python readers of a record: record.get("field"), record["field"] (and records[...] alike).
PY_READ = re.compile(r"\brecords?(?:\[[^\]]+\])?(?:\.get\(|\[)\"([a-z_]+)\"")


def test_every_record_field_the_lua_scripts_name_is_a_documented_field_or_a_status():
    assert LUA, "no Lua scripts found"
    unknown = {}
    for script in LUA:
        for arguments in HASH_CALL.findall(script.read_text()):
            for literal in LITERAL.findall(arguments):
                if literal not in records.FIELDS and literal not in STATUSES:
                    unknown.setdefault(literal, script.name)
    assert not unknown, f"record fields not in records.FIELDS: {unknown}"


def test_every_record_field_python_reads_is_a_documented_field():
    unknown = {}
    for module in PACKAGE.rglob("*.py"):
        for field in PY_READ.findall(module.read_text()):
            if field not in records.FIELDS:
                unknown.setdefault(field, str(module.relative_to(PACKAGE)))
    assert not unknown, f"record fields not in records.FIELDS: {unknown}"


def test_the_enqueue_and_summary_field_lists_are_documented_fields():
    assert set(records.ENQUEUE_FIELDS) <= set(records.FIELDS)
    assert set(records.SUMMARY_FIELDS) <= set(records.FIELDS)


def test_the_state_machine_names_only_statuses_and_ended_ones_change_no_more():
    for origin, targets in records.TRANSITIONS.items():
        assert origin in STATUSES or origin == ""
        assert set(targets) <= STATUSES
    ended = {"finished", "failed", "canceled", "stopped"}
    assert not ended & set(records.TRANSITIONS)
    reachable = {target for targets in records.TRANSITIONS.values() for target in targets}
    assert reachable == STATUSES


def test_every_status_a_lua_script_writes_is_a_job_status():
    written = set()
    for script in LUA:
        text = script.read_text()
        written |= set(re.findall(r"redis\.call\('HSET', [^,]+, 'status', '([a-z_]+)'", text))
    assert written and written <= STATUSES, written - STATUSES
