"""Redis ACL users as Frappe makes them: ``bench create-rq-users --use-rq-auth``, then
``frappe-celery bench enable`` refuses until ``frappe-celery bench acl --apply`` grants what
frappe-celery needs, and a ``frappe.enqueue`` job runs on a worker that logs in as the bench user.

The test points the bench at a redis-server of its own (started with Frappe's ACL file) and
restores everything it changes afterwards, even on failure: common_site_config.json,
config/redis_queue.acl and the switch (the other bench tests need it on).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

import frappe_celery
from frappe_celery.integrations.frappe import switch
from frappe_celery.ops.embedded import free_port

from ..support.frappe_bench import Bench, start_celery_worker, wait_for_status
from ..support.processes import RedisProcess

# Frappe's rules for its bench user (frappe/utils/redis_queue.py, RedisQueue.get_acl_key_rules
# and get_acl_command_rules).
FRAPPE_RULES = ["~rq:[^q]*", "~rq:queues", "+@all", "-@admin"]
OURS = ["~frappe_celery:*", "~short*", "~default*", "~long*", "~_kombu.binding.*", "~unacked",
        "~unacked_index", "~unacked_mutex", "~*.celery.pidbox*"]  # fmt: skip
CHANNELS = ["&/0.celery.pidbox", "&/0.celeryev/*"]


def frappe_celery_cli(bench: Bench, *args: str) -> subprocess.CompletedProcess[str]:
    """``env/bin/frappe-celery ARGS`` in the bench's sites/, as an operator runs it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FRAPPE_CELERY_")}
    return subprocess.run(
        [str(bench.bin / "frappe-celery"), *args],
        cwd=bench.sites,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )


class Restore:
    """Every file this test changes, as it was; put back by :meth:`close`."""

    def __init__(self, *paths: Path) -> None:
        self.saved = {path: path.read_bytes() if path.exists() else None for path in paths}
        self.switch_was_on = switch.is_enabled()

    def close(self) -> None:
        for path, content in self.saved.items():
            if content is None:
                path.unlink(missing_ok=True)
            else:
                path.write_bytes(content)
        if self.switch_was_on:
            switch.enable()
        else:
            switch.disable()
        frappe_celery.reload_settings()


@pytest.fixture
def restored(bench: Bench) -> Iterator[Restore]:
    config = bench.path / "config"
    # Frappe's update_site_config leaves its lock file next to the ACL file.
    restore = Restore(
        bench.sites / "common_site_config.json",
        config / "redis_queue.acl",
        config / "site_config.lock",
    )
    try:
        yield restore
    finally:
        restore.close()


def _redis_server() -> str:
    for binary in ("/usr/bin/redis-server", shutil.which("redis-server")):
        if binary and os.access(binary, os.X_OK):
            return binary
    pytest.skip("no redis-server binary on PATH for the ACL queue Redis")


def test_create_rq_users_then_enable_refuses_until_bench_acl_apply(
    bench: Bench, site: Any, restored: Restore, tmp_path: Path
) -> None:
    config_path = bench.sites / "common_site_config.json"
    acl_file = bench.path / "config" / "redis_queue.acl"

    # Frappe's own command writes the ACL file and the credentials, as an operator runs it.
    made = bench.run("create-rq-users", "--use-rq-auth")
    assert made.returncode == 0, made.stdout + made.stderr
    conf = json.loads(config_path.read_text())
    user, password = conf["rq_username"], conf["rq_password"]
    assert conf["use_rq_auth"] is True
    bench_line = next(line for line in acl_file.read_text().splitlines() if f"user {user} " in line)
    assert bench_line.split()[4:] == [*FRAPPE_RULES[:2], f"~rq:queue:{user}:*", *FRAPPE_RULES[2:]]

    # The queue Redis restarted with that file (a Redis of the test's own, on a free port).
    port = free_port()
    admin = redis.Redis(port=port, socket_timeout=5)
    args = ["--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
            "--dir", str(tmp_path), "--aclfile", str(acl_file)]  # fmt: skip
    server = RedisProcess(_redis_server(), args, admin, tmp_path, "acl-queue-redis").wait_ready()
    worker = None
    try:
        conf["redis_queue"] = f"redis://127.0.0.1:{port}"
        config_path.write_text(json.dumps(conf, indent=1))
        frappe_celery.reload_settings()
        switch.disable()

        refused = frappe_celery_cli(bench, "bench", "enable")
        assert refused.returncode == 1, refused.stdout + refused.stderr
        message = refused.stderr
        assert f"The Redis user {user!r} at redis://{user}:***@127.0.0.1:{port} " in message
        for rule in OURS + CHANNELS:
            assert f" {rule} " in message, rule
        assert f"redis-cli -h 127.0.0.1 -p {port} ACL SETUSER {user} '~frappe_celery:*'" in message
        assert f"add the same rules at the end of the user's line in {acl_file}" in message
        assert "user " + user + " on >(password) " + " ".join(bench_line.split()[4:]) in message
        assert "frappe-celery bench acl --apply" in message
        assert "Not switched: nothing was changed." in message
        assert password not in refused.stdout + message
        assert not switch.is_enabled(), "a refused enable wrote the .pth"

        applied = frappe_celery_cli(bench, "bench", "acl", "--apply")
        assert applied.returncode == 0, applied.stdout + applied.stderr
        assert password not in applied.stdout + applied.stderr
        new_line = next(
            line for line in acl_file.read_text().splitlines() if f"user {user} " in line
        )
        assert new_line == " ".join([bench_line, *OURS, *CHANNELS])

        enabled = frappe_celery_cli(bench, "bench", "enable")
        assert enabled.returncode == 0, enabled.stdout + enabled.stderr
        assert switch.is_enabled()

        # A worker of the bench (it reads use_rq_auth, rq_username, rq_password) and Frappe's own
        # frappe.enqueue in this process, both through the bench user.
        admin.execute_command("ACL", "LOG", "RESET")
        worker = start_celery_worker(bench, tmp_path / "worker.log")
        job = site.enqueue("frappe.ping", queue="short", job_id=f"acl-{uuid.uuid4().hex[:8]}")
        assert isinstance(job, frappe_celery.Job)
        finished = wait_for_status(job.id, ("finished",))
        assert finished.result == "pong"
        own = admin.client_id()
        users = {client["user"] for client in admin.client_list() if client["id"] != str(own)}
        assert users == {user}, users
        refusals = [entry for entry in admin.acl_log() if entry.get("context") != "multi"]
        assert refusals == [], refusals

        # And the rules survive a restart of the queue Redis, from the file.
        server.stop()
        server = RedisProcess(
            _redis_server(), args, admin, tmp_path, "acl-queue-redis-2"
        ).wait_ready()
        checked = frappe_celery_cli(bench, "bench", "acl")
        assert checked.returncode == 0, checked.stdout + checked.stderr
    finally:
        if worker is not None:
            worker.stop()
        server.stop()
