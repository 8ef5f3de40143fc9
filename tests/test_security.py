"""A broker with credentials: a password-protected Redis and an ACL user. Enqueue, a real worker,
a real beat and every read-only CLI command work end to end, and the password appears in none of
their output (tables, --json, errors, logs, Celery's banner).

Trampolines: a job's path never walks into a live object, and the functions of methods.DENIED
(shells, functions that call what they are named) are refused at enqueue and by the worker
(tests/bench/test_trampolines.py runs them against a real bench)."""

from __future__ import annotations

import re
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

import frappe_celery as frappe
from frappe_celery.errors import InvalidArgumentError, MethodNotAllowed
from frappe_celery.methods import DENIED, resolve_job_callable
from frappe_celery.ops.embedded import find_redis_server, free_port

from .support.broker_state import all_queue_lists, forge_from, record_of, unique, wait_final
from .support.cli import run_cli
from .support.processes import pings, wait_for
from .support.settings import settings_env

PASSWORD = "pw-" + uuid.uuid4().hex  # unique: any occurrence in an output is a leak
ACL_PASSWORD = "acl-" + uuid.uuid4().hex


@pytest.fixture(scope="module")
def secured_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """A redis-server with requirepass and an ACL user "jobs" on a free loopback port."""
    port = free_port()
    workdir = tmp_path_factory.mktemp("secured-redis")
    process = subprocess.Popen(
        [find_redis_server(), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(workdir), "--requirepass", PASSWORD,
         "--user", "jobs", "on", f">{ACL_PASSWORD}", "~*", "&*", "+@all"],
        stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
    )  # fmt: skip
    client = redis.Redis(port=port, password=PASSWORD, socket_timeout=5)
    wait_for(lambda: pings(client), 10)
    yield port
    process.terminate()
    process.wait(10)


@pytest.fixture(params=["password", "acl-user"])
def secured_url(request: pytest.FixtureRequest, secured_redis: int) -> tuple[str, str]:
    if request.param == "password":
        return f"redis://:{PASSWORD}@127.0.0.1:{secured_redis}/0", PASSWORD
    return f"redis://jobs:{ACL_PASSWORD}@127.0.0.1:{secured_redis}/0", ACL_PASSWORD


def test_enqueue_worker_beat_and_cli_work_with_credentials_and_never_show_them(
    secured_url, start_worker, start_beat, tmp_path: Path
):
    url, secret = secured_url
    env = {"FRAPPE_CELERY_BROKER_URL": url, "FRAPPE_CELERY_RESULT_BACKEND": url}
    outputs: dict[str, str] = {}
    with settings_env(**env):
        worker = start_worker("short,default,long", concurrency=1, **env)
        job = frappe.enqueue("tests.jobs.add", queue="short", a=2, b=3)
        wait_for(lambda: job.get_status() == "finished", 30)
        assert job.return_value() == 5
        failing = frappe.enqueue("tests.jobs.fail", queue="short", message="with credentials")
        wait_for(lambda: failing.get_status() == "failed", 30)
        beat = start_beat(**env)
        wait_for(lambda: beat.is_leader, 30)
        for command in (["status"], ["status", "--json"], ["jobs"], ["failed"],
                        ["failed", "--json"], ["doctor"], ["scheduler", "status"]):  # fmt: skip
            result = run_cli(*command, **env)
            outputs[" ".join(command)] = result.stdout + result.stderr
            assert result.returncode in (0, 1), outputs[" ".join(command)]  # doctor: 1 = problems
        outputs["worker log"] = worker.output()
        outputs["beat log"] = beat.output()
    # A wrong password: a clear error, still without the secret.
    wrong = url.replace(secret, secret[:-4] + "XXXX")
    result = run_cli("status", FRAPPE_CELERY_BROKER_URL=wrong, FRAPPE_CELERY_RESULT_BACKEND=wrong)
    assert result.returncode != 0
    outputs["wrong password"] = result.stdout + result.stderr
    assert "127.0.0.1" in outputs["wrong password"]
    for name, text in outputs.items():
        assert secret not in text, f"the password appears in {name}"
        assert secret[:-4] not in text, f"the password appears in {name}"
    assert "finished" in outputs["status"] or "short" in outputs["status"]


def test_a_bench_with_use_rq_auth_reaches_redis_as_its_rq_user_and_never_shows_the_password(
    secured_redis, tmp_path: Path
):
    """Frappe's own credentials: use_rq_auth, rq_username, rq_password in the bench's
    common_site_config.json become the broker URL of every frappe-celery command."""
    from .support.settings import make_bench

    sites = make_bench(
        tmp_path,
        {
            "redis_queue": f"redis://127.0.0.1:{secured_redis}",
            "use_rq_auth": 1,
            "rq_username": "jobs",
            "rq_password": ACL_PASSWORD,
        },
    )
    # The bench alone configures the broker: none of the session's settings apply.
    env = {"FRAPPE_CELERY_SITES_PATH": str(sites), "FRAPPE_CELERY_BROKER_URL": "",
           "FRAPPE_CELERY_RESULT_BACKEND": "", "FRAPPE_CELERY_CONFIG": ""}  # fmt: skip
    outputs = {}
    for command in (["status", "--json"], ["jobs"], ["doctor"]):
        result = run_cli(*command, **env)
        outputs[" ".join(command)] = result.stdout + result.stderr
        assert result.returncode in (0, 1), outputs[" ".join(command)]
    assert '"queues"' in outputs["status --json"]
    # The same commands with a wrong rq_password fail: the credentials above were the ones used.
    (sites / "common_site_config.json").write_text(
        (sites / "common_site_config.json").read_text().replace(ACL_PASSWORD, "wrong-password")
    )
    result = run_cli("status", **env)
    assert result.returncode != 0
    outputs["wrong password"] = result.stdout + result.stderr
    for name, text in outputs.items():
        assert ACL_PASSWORD not in text, f"the password appears in {name}"


# -- trampolines ---------------------------------------------------------------------------------


def test_a_path_never_walks_into_an_object_so_a_message_cannot_reach_its_methods(
    r, shared_worker, tmp_path: Path
):
    """tests.jobs.console is an object of an allowed module, as frappe.db is of frappe; its
    run method (a shell) is defined in that module. A path walks only through classes."""
    marker = tmp_path / "walked-into-console"
    path = "tests.jobs:console.run"
    with pytest.raises(InvalidArgumentError) as refused:
        frappe.enqueue(path, queue="short", command=f"touch {marker}")
    assert refused.value.argument == "method"
    assert refused.value.given == path
    assert "tests.jobs:console is an object of type _Console" in refused.value.allowed
    assert "a path walks only through such classes" in refused.value.allowed
    # Forged straight onto the queue, past enqueue: the worker refuses it and goes on.
    template = frappe.enqueue("tests.jobs.record", queue="reports", key=unique("unused"))
    forge_from(r, template, "default", {"method": path, "kwargs": {"command": f"touch {marker}"}})
    assert wait_final(template) == "failed"
    record = record_of(r, template)
    assert record["exc_type"] == "MethodNotAllowed"
    assert "not a class defined in tests.jobs" in record["exc_info"]
    assert not marker.exists()
    after = frappe.enqueue("tests.jobs.add", queue="short", a=1, b=2)
    assert wait_final(after) == "finished"
    assert not marker.exists()


@pytest.mark.parametrize(
    ("path", "entry"),
    [
        ("frappe.utils.execute_in_shell", "frappe.utils.execute_in_shell"),
        ("frappe:db.sql", "frappe.db"),
        ("frappe.call", "frappe.call"),
        ("frappe.get_attr", "frappe.get_attr"),
        ("frappe:utils.execute_in_shell", "frappe.utils.execute_in_shell"),
        ("frappe.utils.safe_exec.safe_exec", "frappe.utils.safe_exec.safe_exec"),
        ("frappe.commands.site.console", "frappe.commands"),
        ("frappe.utils.background_jobs.execute_job", "frappe.utils.background_jobs.execute_job"),
    ],
)
def test_deny_listed_trampolines_are_refused_at_enqueue_and_by_the_worker(r, path, entry):
    """With frappe itself allowed (as in every bench), its shells and functions that call what
    they are named are refused by name, by every module prefix, before anything is imported:
    no Frappe is installed here, so any import would fail with ImportError instead."""
    with settings_env(FRAPPE_CELERY_ALLOWED_MODULES="tests,frappe"):
        queued = {name: r.llen(name) for name in all_queue_lists()}
        with pytest.raises(InvalidArgumentError) as refused:
            frappe.enqueue(path, queue="short", cmd="touch /tmp/never")
        assert refused.value.argument == "method"
        assert refused.value.given == path
        assert f"{entry} {DENIED[entry]}" in refused.value.allowed
        assert "methods.DENIED" in refused.value.allowed
        assert {name: r.llen(name) for name in all_queue_lists()} == queued  # nothing published
        with pytest.raises(MethodNotAllowed, match=re.escape(f"{entry} {DENIED[entry]}")):
            resolve_job_callable(path)
