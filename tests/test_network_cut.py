"""A worker cut off from Redis, not dead: its jobs and their records.

The cut-off worker runs in its own network namespace, joined to the host by a veth pair; the
test's redis-server listens on the host end (and on loopback, for everyone else). Cutting the
host end (``ip link set ... down``) leaves the worker and its running jobs alive but unable to
reach Redis; a second worker in the root namespace keeps running jobs meanwhile.

What this proves (README "Faults"): at-least-once, every job ends finished; and a record is
token-checked, so a run cut off while its job id was enqueued again never overwrites the newer
enqueue's outcome. The run log (tests.jobs.logged_run, a file: the cut-off runs cannot reach
Redis) counts every run of each job.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis

import frappe_celery as frappe
from frappe_celery.ops.embedded import find_redis_server, free_port

from .support.processes import pings, wait_for
from .support.settings import settings_env

IN_CI = os.environ.get("CI") == "true"


def netns_unavailable() -> str | None:
    """Why this machine cannot make network namespaces, or None when it can."""
    if os.geteuid() != 0:
        return "not root: ip netns needs CAP_SYS_ADMIN and CAP_NET_ADMIN"
    if shutil.which("ip") is None:
        return "no ip command (iproute2)"
    probe = f"fcprobe{uuid.uuid4().hex[:6]}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        return f"ip netns add failed: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


@pytest.fixture(scope="module")
def netns_ok() -> None:
    reason = netns_unavailable()
    if reason is None:
        return
    # CI is root with iproute2: there a missing netns is a broken runner, never a skip.
    if IN_CI:
        pytest.fail(f"CI=true and network namespaces are unavailable: {reason}")
    pytest.skip(reason)


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=10)


def used_addresses() -> str:
    return subprocess.run(["ip", "-o", "addr"], capture_output=True, text=True).stdout


@dataclass
class Link:
    """A network namespace joined to the root namespace by a veth pair (a /30)."""

    namespace: str
    host_if: str
    host_ip: str
    ns_ip: str

    @property
    def exec_prefix(self) -> list[str]:
        return ["ip", "netns", "exec", self.namespace]

    def cut(self) -> None:
        ip("link", "set", self.host_if, "down")

    def restore(self) -> None:
        ip("link", "set", self.host_if, "up")


@pytest.fixture
def link(netns_ok: None) -> Iterator[Link]:
    suffix = uuid.uuid4().hex[:6]
    # Interface names: at most 15 characters. Names and the /30 are unique per run, so two runs
    # on one machine never share a namespace or an address.
    namespace, host_if, ns_if = f"fccut{suffix}", f"fch{suffix}", f"fcn{suffix}"
    taken = used_addresses()
    while True:
        block = random.randrange(0, 256 * 64) * 4
        host_ip = f"10.231.{block // 256}.{block % 256 + 1}"
        ns_ip = f"10.231.{block // 256}.{block % 256 + 2}"
        if f" {host_ip}/" not in taken and f" {ns_ip}/" not in taken:
            break
    try:
        ip("netns", "add", namespace)
        ip("link", "add", host_if, "type", "veth", "peer", "name", ns_if)
        ip("link", "set", ns_if, "netns", namespace)
        ip("addr", "add", f"{host_ip}/30", "dev", host_if)
        ip("link", "set", host_if, "up")
        ip("-n", namespace, "addr", "add", f"{ns_ip}/30", "dev", ns_if)
        ip("-n", namespace, "link", "set", ns_if, "up")
        ip("-n", namespace, "link", "set", "lo", "up")
        yield Link(namespace, host_if, host_ip, ns_ip)
    finally:
        # Deleting the namespace deletes its end of the pair, and with it the host end.
        subprocess.run(["ip", "netns", "del", namespace], capture_output=True)
        subprocess.run(["ip", "link", "del", host_if], capture_output=True)


@dataclass
class CutRedis:
    port: int
    local_url: str
    ns_url: str
    client: redis.Redis


@pytest.fixture
def cut_redis(link: Link, tmp_path: Path) -> Iterator[CutRedis]:
    """A redis-server on the host end of the link and on loopback. Taking the host end down
    removes its address from the root namespace too, so everyone but the cut-off worker talks
    to Redis over loopback."""
    port = free_port()
    process = subprocess.Popen(
        [find_redis_server(), "--port", str(port), "--bind", "127.0.0.1", link.host_ip,
         "--protected-mode", "no", "--save", "", "--appendonly", "no", "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    client = redis.Redis(port=port, socket_timeout=5)
    try:
        wait_for(lambda: pings(client), 10)
        yield CutRedis(
            port, f"redis://127.0.0.1:{port}/0", f"redis://{link.host_ip}:{port}/0", client
        )
    finally:
        process.kill()
        process.wait(10)


def read_runs(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def record(job: frappe.Job) -> dict[str, str]:
    keep = ("status", "token", "worker", "started_at", "ended_at", "result", "exc_type", "retries")
    return {k: v for k, v in job.refresh().items() if k in keep}


def report(title: str, lines: list[str]) -> None:
    print(f"\n== {title}")
    for line in lines:
        print("  " + line)


# The link stays cut until a peer has taken over the cut-off worker's job (dead-worker recovery
# returns the messages of a worker whose liveness key expired, about 45 s after its last
# heartbeat), or this long at most; the whole test stays under 90 s.
CUT_LIMIT = 60.0
LONG_JOB = 6.0  # seconds: still running when the link is cut, finished long before it returns


def test_cut_off_worker_jobs_end_finished_and_a_stale_run_never_overwrites_a_newer_enqueue(
    link: Link, cut_redis: CutRedis, start_worker, tmp_path: Path
) -> None:
    runs = tmp_path / "runs.jsonl"
    local = {"FRAPPE_CELERY_BROKER_URL": cut_redis.local_url,
             "FRAPPE_CELERY_RESULT_BACKEND": cut_redis.local_url}  # fmt: skip
    remote = {"FRAPPE_CELERY_BROKER_URL": cut_redis.ns_url,
              "FRAPPE_CELERY_RESULT_BACKEND": cut_redis.ns_url}  # fmt: skip
    with settings_env(**local):
        # The cut-off worker alone consumes "short": after the cut, a short job shows it is back.
        cutoff = start_worker("short,default", 2, prefix=link.exec_prefix,
                              TEST_WORKER_ROLE="cutoff", **remote)  # fmt: skip

        def enqueue(name: str, label: str, seconds: float, queue: str = "default") -> frappe.Job:
            job = frappe.enqueue("tests.jobs.logged_run", queue=queue, job_id=name,
                                 path=str(runs), label=label, seconds=seconds)  # fmt: skip
            assert job is not None
            return job

        a_old = enqueue("cut-a", "a-old", LONG_JOB)
        a_old_token = a_old.refresh()["token"]
        b = enqueue("cut-b", "b", LONG_JOB)
        wait_for(lambda: a_old.get_status() == b.get_status() == "started", 30)
        peer = start_worker("default", 2, TEST_WORKER_ROLE="peer", **local)
        others = [enqueue(f"cut-other-{i}", f"other-{i}", 0.5) for i in range(4)]
        cut_at = time.time()
        link.cut()
        try:
            # Enqueued again while its first run is cut off: a new token, a new record.
            time.sleep(1)
            a_new = enqueue("cut-a", "a-new", 0)
            a_new_token = a_new.refresh()["token"]
            wait_for(lambda: a_new.get_status() == "finished", 20)
            # Past the end of the cut-off runs (they cannot record it), then until a peer took
            # over b, or CUT_LIMIT.
            time.sleep(LONG_JOB)
            taken_over = _wait_quietly(
                lambda: _worker_of(b) == peer.name.replace("%h", _host()), CUT_LIMIT - LONG_JOB
            )
        finally:
            link.restore()
        restored_at = time.time()
        jobs = {"a": a_new, "b": b, **{f"other-{i}": j for i, j in enumerate(others)}}

        def all_final() -> bool:
            return all(j.get_status() in ("finished", "failed", "canceled") for j in jobs.values())

        try:
            wait_for(all_final, 20, interval=0.2)
            settled_after = time.time() - restored_at
            b_when_final = record(b)
            back = enqueue("cut-back", "back", 0, queue="short")
            wait_for(lambda: back.get_status() == "finished", 20)
            # Every run that started (a peer's re-runs included) has ended.
            wait_for(lambda: _all_ended(read_runs(runs)), 3 * LONG_JOB)
        finally:
            log = read_runs(runs)
            report(
                f"cut {restored_at - cut_at:.1f} s, b taken over by the peer: {taken_over}",
                [f"{name}: {record(job)}" for name, job in jobs.items()],
            )
            report("runs (s after the cut)", [
                f"{r['at'] - cut_at:7.2f} {r['event']:5} {r['label']:8} {r['role']}" for r in log
            ])  # fmt: skip
            report("cut-off worker log", [line[:200] for line in cutoff.output().splitlines()
                                          if line.startswith("[")])  # fmt: skip
        starts = Counter(r["label"] for r in log if r["event"] == "start")
        b_runs = [r for r in log if r["label"] == "b"]
        # The cut-off run's finish command, sent before the cut was noticed and retransmitted by
        # TCP, lands when the link returns: it may close b's record (same token) while the peer's
        # re-run is still going.
        closed_early = float(b_when_final.get("ended_at", 0)) < float(
            b_when_final.get("started_at", 0)
        )
        report("figures", [
            f"records final {settled_after:.1f} s after the link returned",
            "runs per job: " + ", ".join(f"{label} {n}" for label, n in sorted(starts.items())),
            "b's runs: " + ", ".join(f"{r['event']} {r['role']} {r['at'] - cut_at:.1f}"
                                     for r in b_runs),
            f"b's record final while a re-run was still going: {closed_early}",
        ])  # fmt: skip
        # At-least-once: every job ended finished, each ran at least once.
        assert {name: str(job.get_status()) for name, job in jobs.items()} == dict.fromkeys(
            jobs, "finished"
        )
        assert all(starts[label] >= 1 for label in ("a-old", "a-new", "b", "back"))
        # Token-checked: whatever the cut-off run of the first enqueue did when it got through,
        # the record is the second enqueue's.
        assert a_new.refresh()["token"] == a_new_token != a_old_token
        assert a_new.return_value() == "a-new"
        # The cut-off worker runs jobs again once the link is back.
        assert back.refresh().get("worker", "").startswith(cutoff.name.split("@")[0])


def _all_ended(log: list[dict[str, Any]]) -> bool:
    count = Counter((r["label"], r["event"]) for r in log)
    return all(count[label, "end"] == n for (label, event), n in count.items() if event == "start")


def _host() -> str:
    return os.uname().nodename


def _worker_of(job: frappe.Job) -> str:
    return job.refresh().get("worker", "")


def _wait_quietly(predicate: Callable[[], object], timeout: float) -> bool:
    """Like wait_for, but a timeout is an answer (False), not a failure."""
    try:
        wait_for(predicate, timeout, interval=0.5)
    except AssertionError:
        return False
    return True
