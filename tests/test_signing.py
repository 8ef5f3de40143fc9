"""Signed job messages (signing.py): a worker runs only messages signed with an accepted key."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from typing import Any

import pytest

import frappe_celery as frappe
from frappe_celery.broker import keys, signing
from frappe_celery.config import load_settings
from frappe_celery.errors import ConfigError
from frappe_celery.ops.admin import refused_message_problems

from .support.broker_state import unique, waiting_message
from .support.cli import invoke
from .support.processes import ROOT, wait_for

OTHER_KEY = "another-key-" + "x" * 40


def session_key() -> str:
    return frappe.get_settings().require_signing_key()


def take_message(r, job: frappe.Job) -> tuple[str, dict[str, Any]]:
    """Remove ``job``'s message from its queue; its list and the envelope, decoded."""
    raw = waiting_message(job)
    list_name = job.refresh()["list"]
    r.lrem(list_name, 0, raw)
    return list_name, json.loads(raw)


def resign(envelope: dict[str, Any], key: str) -> dict[str, Any]:
    envelope["headers"][signing.SIGNATURE_HEADER] = signing.sign(
        key, envelope["headers"], envelope["body"]
    )
    return envelope


def unsigned(envelope: dict[str, Any]) -> dict[str, Any]:
    del envelope["headers"][signing.SIGNATURE_HEADER]
    return envelope


def signed_by_another_key(envelope: dict[str, Any]) -> dict[str, Any]:
    return resign(envelope, OTHER_KEY)


def arguments_changed(envelope: dict[str, Any]) -> dict[str, Any]:
    """The job's own signature kept, its arguments rewritten (a replay with other data)."""
    args, payload, embed = json.loads(base64.b64decode(envelope["body"]))
    payload["kwargs"]["value"] = "forged"
    envelope["body"] = base64.b64encode(json.dumps([args, payload, embed]).encode()).decode()
    return envelope


def time_limit_changed(envelope: dict[str, Any]) -> dict[str, Any]:
    """The job's own signature kept, a header rewritten (no hard time limit)."""
    envelope["headers"]["timelimit"] = [None, None]
    return envelope


@pytest.mark.parametrize(
    "forge",
    [unsigned, signed_by_another_key, arguments_changed, time_limit_changed],
    ids=["unsigned", "another-key", "body-changed", "header-changed"],
)
def test_a_message_without_a_valid_signature_is_dropped_counted_and_never_run(
    r, start_worker, forge
):
    key = unique("signing")
    job = frappe.enqueue("tests.jobs.record", queue="reports", key=key, value="original")
    list_name, envelope = take_message(r, job)
    r.lpush(list_name, json.dumps(forge(envelope)))
    worker = start_worker("reports", concurrency=1)

    wait_for(lambda: job.get_status() == "failed", 20)
    assert job.refresh()["exc_type"] == "UnsignedMessage"
    assert r.llen(key) == 0  # it never ran
    assert r.hlen(keys.KOMBU_UNACKED) == 0  # not held for a redelivery
    # Logged once, with its queue and id.
    log = worker.output()
    assert log.count(f"dropped a message from queue 'reports' (job '{job.id}')") == 1
    assert int(r.hget(keys.REFUSED_MESSAGES, "reports")) == 1
    (problem,) = refused_message_problems()
    assert "1 job message(s) dropped" in problem.what and "'reports'" in problem.what
    status = invoke("status")
    assert "Refused messages (unsigned or badly signed, never run): reports: 1" in status.output
    assert f"job {job.id}" in status.output
    # The worker goes on with the next, signed, job.
    after = frappe.enqueue("tests.jobs.record", queue="reports", key=key, value="next")
    wait_for(lambda: after.get_status() == "finished", 20)
    assert [json.loads(item) for item in r.lrange(key, 0, -1)] == ["next"]
    assert worker.process.poll() is None


def test_a_message_signed_with_the_previous_key_runs_during_a_rotation(r, start_worker):
    key = unique("rotation")
    job = frappe.enqueue("tests.jobs.record", queue="reports", key=key, value="old key")
    list_name, envelope = take_message(r, job)
    r.lpush(list_name, json.dumps(resign(envelope, OTHER_KEY)))
    # The workers restarted with a new key, the old one accepted until the queues drained.
    start_worker(
        "reports",
        concurrency=1,
        FRAPPE_CELERY_SIGNING_KEY="the-new-key-" + "n" * 40,
        FRAPPE_CELERY_PREVIOUS_SIGNING_KEY=OTHER_KEY,
    )
    wait_for(lambda: job.get_status() == "finished", 20)
    assert [json.loads(item) for item in r.lrange(key, 0, -1)] == ["old key"]
    assert not r.exists(keys.REFUSED_MESSAGES)


def test_without_a_signing_key_nothing_is_enqueued_and_no_worker_starts(r, worker_env, tmp_path):
    env = {name: value for name, value in os.environ.items() if name != signing.KEY_ENV}
    settings = load_settings(env)
    with pytest.raises(ConfigError, match=f"signing_key: none is set.*{signing.KEY_ENV}"):
        settings.require_signing_key()

    # In a caller: raised before anything is written.
    saved = os.environ.pop(signing.KEY_ENV)
    try:
        frappe.reload_settings()
        with pytest.raises(ConfigError, match="signing_key"):
            frappe.enqueue("tests.jobs.record", queue="reports", key=unique("nokey"))
    finally:
        os.environ[signing.KEY_ENV] = saved
        frappe.reload_settings()
    assert sum(r.llen(name) for name in keys.queue_lists("reports")) == 0
    assert not list(r.scan_iter(keys.JOB_PREFIX + "*"))

    worker_without_key = {
        name: value for name, value in worker_env.items() if name != signing.KEY_ENV
    }
    started = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "frappe_celery", "worker", "-Q", "reports"],
        env=worker_without_key,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert started.returncode != 0
    assert "signing_key: none is set" in started.stdout + started.stderr


@pytest.mark.unit
@pytest.mark.parametrize("value", ["short", 12345])
def test_a_weak_or_malformed_signing_key_is_refused_without_echoing_it(value):
    env = {signing.KEY_ENV: str(value)} if isinstance(value, str) else {}
    with pytest.raises(ConfigError) as raised:
        if env:
            load_settings(env)
        else:
            signing.checked_key("config", signing.KEY_SETTING, value)
    message = str(raised.value)
    assert signing.KEY_ENV in message or signing.KEY_SETTING in message
    assert str(value) not in message


def test_the_settings_never_print_the_keys():
    settings = frappe.get_settings()
    assert session_key() not in repr(settings)
    assert len(session_key()) >= signing.MIN_KEY_LENGTH


@pytest.mark.unit
def test_a_bench_without_a_key_gets_one_generated_once_into_its_config(tmp_path):
    """Web processes and workers of one bench may start together: all read one key."""
    bench = tmp_path / "bench"
    (bench / "sites").mkdir(parents=True)
    (bench / "apps").mkdir()
    (bench / "sites" / "apps.txt").write_text("frappe\n")
    config = bench / "sites" / "common_site_config.json"
    config.write_text(json.dumps({"redis_queue": "redis://127.0.0.1:1", "webserver_port": 8000}))
    config.chmod(0o640)
    code = (
        "import json, sys; from frappe_celery.config import load_settings;"
        "print(load_settings({'FRAPPE_CELERY_SITES_PATH': sys.argv[1]}).signing_key)"
    )
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(bench / "sites")],
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        for _ in range(4)
    ]
    generated = {process.communicate(timeout=60)[0].strip() for process in processes}
    assert len(generated) == 1
    (key,) = generated
    assert len(key) >= signing.MIN_KEY_LENGTH
    written = json.loads(config.read_text())
    assert written["frappe_celery"]["signing_key"] == key
    assert written["webserver_port"] == 8000  # the rest of the file is kept
    assert config.stat().st_mode & 0o777 == 0o640
    assert load_settings({"FRAPPE_CELERY_SITES_PATH": str(bench / "sites")}).signing_key == key


def test_start_and_demo_keep_a_key_of_their_own_in_their_data_folder(tmp_path, capsys):
    """`frappe-celery start` and `demo` without a configured key: one is made once, kept (the
    embedded Redis's persisted messages still run after a restart), given to their children
    through the environment, and never printed."""
    from frappe_celery.cli.stack import Stack

    saved = os.environ.pop(signing.KEY_ENV, None)
    try:
        first = Stack(tmp_path / "data")
        first._signing_key()
        key = os.environ[signing.KEY_ENV]
        path = tmp_path / "data" / "signing-key"
        assert path.read_text() == key and len(key) >= signing.MIN_KEY_LENGTH
        assert path.stat().st_mode & 0o777 == 0o600
        del os.environ[signing.KEY_ENV]
        Stack(tmp_path / "data")._signing_key()  # a restart reads the same key
        assert os.environ[signing.KEY_ENV] == key
        printed = capsys.readouterr().out
        assert str(path) in printed and key not in printed
    finally:
        os.environ.pop(signing.KEY_ENV, None)
        if saved is not None:
            os.environ[signing.KEY_ENV] = saved
