"""Soak: a bounded mixed load on real workers, with crashes, and what it must not lose.

``bash run.sh soak`` (SOAK_SECONDS, default 600). Not part of the default ``pytest`` run (the
``soak`` marker is deselected in pyproject.toml).

Load: a few threads enqueue plain jobs, at_front jobs, jobs that fail, jobs that retry (through
RetryBackgroundJobError and a configured ``retry_exceptions`` class), deduplicated jobs on a few
fixed ids, and a long-ish job now and then; a real beat fires one scheduled entry every 5 s.
Chaos: a pool child is SIGKILLed every ~15 s, a whole worker (its process group) is SIGKILLed and
replaced by a fresh one twice, and Redis (appendonly, fsync always, same data dir) is SIGKILLed
and restarted on the same port once. One worker, "steady", is never killed whole: its memory
is sampled throughout.

At the end: every enqueue that returned a handle ended as designed (lost = 0), no two runs of a
deduplicated id (or of the scheduled entry) overlapped, and the steady worker's memory (PSS) in
the last window is close to that of the first window after a warm-up (memory_windows: minutes
10-15 against 55-60 of a 1-hour soak, within x1.1). The figures are printed as a table.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis
from tabulate import tabulate

import frappe_celery as frappe
from frappe_celery.broker import keys
from frappe_celery.broker.signing import generate_key
from frappe_celery.config import DEFAULT_HEARTBEAT_INTERVAL
from frappe_celery.ops.embedded import find_redis_server, free_port

from ..support.processes import Beat, Worker, wait_for
from ..support.settings import settings_env

pytestmark = pytest.mark.soak

SOAK_SECONDS = int(os.environ.get("SOAK_SECONDS", "600"))
PRODUCERS = 3
DEDUP_IDS = 4
FINAL = ("finished", "failed", "canceled")
# After the load stops: a worker killed last needs its liveness key to expire and the
# confirmation wait (~35 s, recovery.py) before its jobs run again elsewhere.
DRAIN_LIMIT = 150.0
# The steady worker's memory (PSS, main process plus pool children) is compared between the
# first window after a warm-up and the last window (memory_windows). A long soak (the 1-hour one
# in RELIABILITY.md) may grow by at most MEMORY_GROWTH_LIMIT; a short one has few samples, and
# its warm-up is cut to a quarter of it, so it keeps the looser SHORT_SOAK_MEMORY_GROWTH_LIMIT.
MEMORY_WARMUP = 600.0
MEMORY_WINDOW = 300.0
LONG_SOAK = 1800
MEMORY_GROWTH_LIMIT = 1.1
SHORT_SOAK_MEMORY_GROWTH_LIMIT = 1.3


class SoakRedis:
    """A redis-server that can crash and come back on the same port with the same data."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir, self.port = data_dir, free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.client = redis.Redis(port=self.port, socket_timeout=5)
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        # appendfsync always: every write Redis acknowledged survives the SIGKILL below.
        self.process = subprocess.Popen(
            [find_redis_server(), "--port", str(self.port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "yes", "--appendfsync", "always",
             "--dir", str(self.data_dir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        wait_for(self.answers, 30, interval=0.1)

    def answers(self) -> bool:
        try:
            return bool(self.client.ping())
        except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError):
            return False

    def crash(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


@dataclass
class Handle:
    label: str
    kind: str
    job_id: str
    token: str
    expected: str
    outcome: str | None = None


@dataclass
class Ledger:
    """Everything the threads observed, under one lock."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    handles: list[Handle] = field(default_factory=list)
    enqueued: Counter[str] = field(default_factory=Counter)
    deduplicated: int = 0
    refused: Counter[str] = field(default_factory=Counter)
    # pid -> when it was SIGKILLed (pool children and whole workers)
    killed: dict[int, float] = field(default_factory=dict)
    events: list[tuple[float, str]] = field(default_factory=list)
    memory: list[dict[str, Any]] = field(default_factory=list)

    def note(self, event: str) -> None:
        with self.lock:
            self.events.append((time.time(), event))


# -- processes -----------------------------------------------------------------------------------


def children_of(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(part) for part in text.split()]


def memory_kib(pid: int) -> tuple[int, int, int]:
    """(PSS, RSS, USS) of one process in KiB; (0, 0, 0) once it is gone. USS (its private pages)
    does not move with the other processes that map the same files (the Python binary, shared
    libraries), as PSS does: PSS divides those pages among every process on the machine."""
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return 0, 0, 0
    values = {}
    for line in text.splitlines():
        name, _, rest = line.partition(":")
        if name in ("Pss", "Rss", "Private_Clean", "Private_Dirty"):
            values[name] = int(rest.split()[0])
    uss = values.get("Private_Clean", 0) + values.get("Private_Dirty", 0)
    return values.get("Pss", 0), values.get("Rss", 0), uss


# -- the load --------------------------------------------------------------------------------------

KINDS = {  # kind -> weight
    "plain": 40,
    "at_front": 10,
    "failing": 10,
    "retry": 8,
    "retry_custom": 4,
    "dedup": 20,
    "long": 3,
}


def enqueue_one(ledger: Ledger, kind: str, n: int) -> None:
    label = f"{kind}-{n}"
    options: dict[str, Any] = {}
    job_kwargs: dict[str, Any] = {"label": label, "seconds": random.uniform(0.02, 0.4)}
    expected = "finished"
    if kind == "at_front":
        options["at_front"] = True
    elif kind == "failing":
        job_kwargs["fail"] = True
        expected = "failed"
    elif kind in ("retry", "retry_custom"):
        job_kwargs.update(retry_failures=2, custom_retry=kind == "retry_custom")
    elif kind == "dedup":
        options.update(job_id=f"soak-dedup-{random.randrange(DEDUP_IDS)}", deduplicate=True)
        job_kwargs["seconds"] = random.uniform(0.5, 2.0)
    elif kind == "long":
        job_kwargs["seconds"] = random.uniform(3, 8)
    queue = random.choice(("short", "default", "long"))
    try:
        job = frappe.enqueue("tests.soak.jobs.run", queue=queue, **options, **job_kwargs)
    except (frappe.BrokerUnreachable, frappe.QueueOverloaded) as exc:
        with ledger.lock:
            ledger.refused[type(exc).__name__] += 1
        return
    with ledger.lock:
        if job is None:
            ledger.deduplicated += 1
            return
        ledger.enqueued[kind] += 1
        ledger.handles.append(Handle(label, kind, job.id, job.record["token"], expected))


def produce(ledger: Ledger, index: int, stop: threading.Event) -> None:
    names, weights = list(KINDS), list(KINDS.values())
    n = 0
    while not stop.is_set():
        n += 1
        enqueue_one(ledger, random.choices(names, weights)[0], index * 1_000_000 + n)
        stop.wait(random.uniform(0.15, 0.5))


def poll_outcomes(ledger: Ledger, client: redis.Redis, stop: threading.Event) -> None:
    """Read each open handle's record until it is final for its own token (records of finished
    jobs expire after rq_results_ttl, so they are read while they exist)."""
    while not stop.wait(1.0):
        with ledger.lock:
            open_handles = [h for h in ledger.handles if h.outcome is None]
        if not open_handles:
            continue
        try:
            pipe = client.pipeline(transaction=False)
            for handle in open_handles:
                pipe.hmget(keys.job(handle.job_id), "token", "status")
            replies = pipe.execute()
        except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError):
            continue  # Redis is restarting
        with ledger.lock:
            for handle, (token, status) in zip(open_handles, replies, strict=True):
                if token is None or token.decode() != handle.token:
                    # Replaced by a newer enqueue of its id (dedup), or expired: the run log
                    # says whether it ran to the end.
                    handle.outcome = "replaced"
                elif status.decode() in FINAL:
                    handle.outcome = status.decode()


def sample_memory(ledger: Ledger, workers: dict[str, Worker], stop: threading.Event) -> None:
    interval = max(1.0, SOAK_SECONDS / 120)
    while not stop.wait(interval):
        for role, worker in list(workers.items()):
            main = worker.process.pid
            children = children_of(main)
            main_pss, main_rss, main_uss = memory_kib(main)
            child = [memory_kib(pid) for pid in children]
            ledger.memory.append({
                "at": time.time(), "role": role, "main_pss": main_pss, "main_rss": main_rss,
                "main_uss": main_uss, "children_pss": sum(c[0] for c in child),
                "children_rss": sum(c[1] for c in child), "children_uss": sum(c[2] for c in child),
                "children": len(children),
            })  # fmt: skip


def chaos(
    ledger: Ledger,
    workers: dict[str, Worker],
    start_victim: Callable[[], Worker],
    server: SoakRedis,
    began: float,
    stop: threading.Event,
) -> None:
    """Child kills every ~15 s; whole-worker kills at 25 % and 65 % of the soak (and every
    ~150 s in between for long soaks); one Redis crash and restart at 45 %."""
    d = SOAK_SECONDS
    plan: list[tuple[float, str]] = [(0.45 * d, "redis")]
    plan += [(at, "worker") for at in (0.25 * d, 0.65 * d)]
    plan += [(at, "worker") for at in range(150, int(0.8 * d), 150) if abs(at - 0.45 * d) > 20]
    plan += [(at, "child") for at in range(10, int(0.8 * d), 15)]
    for at, what in sorted(plan):
        if stop.wait(max(0.0, began + at - time.time())):
            return
        if what == "child":
            role = random.choice(list(workers))
            pids = children_of(workers[role].process.pid)
            if pids:
                pid = random.choice(pids)
                ledger.killed[pid] = time.time()
                os.kill(pid, signal.SIGKILL)
                ledger.note(f"SIGKILL pool child {pid} of {role}")
        elif what == "worker":
            victim = workers["victim"]
            pids = [victim.process.pid, *children_of(victim.process.pid)]
            now = time.time()
            for pid in pids:
                ledger.killed[pid] = now
            victim.kill()
            ledger.note(f"SIGKILL worker {victim.name} (pids {pids})")
            workers["victim"] = start_victim()
            ledger.note(f"started worker {workers['victim'].name}")
        else:
            server.crash()
            ledger.note("SIGKILL redis-server")
            time.sleep(1)
            server.start()
            ledger.note("redis-server back (same port, same appendonly file)")


# -- the analysis --------------------------------------------------------------------------------


def read_runs(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def run_intervals(
    runs: list[dict[str, Any]], killed: dict[int, float]
) -> dict[str, list[tuple[float, float]]]:
    """Job id -> (start, end) of each run. A run without an end line ended when its process was
    SIGKILLed; one whose process was never killed is still open (end: infinity)."""
    open_runs: dict[tuple[int, str], float] = {}
    intervals: dict[str, list[tuple[float, float]]] = defaultdict(list)
    ids: dict[tuple[int, str], str] = {}
    for run in sorted(runs, key=lambda r: r["at"]):
        key = (run["pid"], run["label"])
        if run["event"] == "start":
            open_runs[key] = run["at"]
            ids[key] = run["job_id"] or run["label"]
        elif key in open_runs:
            intervals[ids[key]].append((open_runs.pop(key), run["at"]))
    for key, started in open_runs.items():
        intervals[ids[key]].append((started, killed.get(key[0], float("inf"))))
    return intervals


def overlaps(intervals: list[tuple[float, float]]) -> int:
    """How many runs started before an earlier-started run of the same job had ended."""
    count, latest_end = 0, float("-inf")
    for start, end in sorted(intervals):
        count += start < latest_end
        latest_end = max(latest_end, end)
    return count


def memory_windows(began: float, ended: float) -> tuple[tuple[float, float], tuple[float, float]]:
    """The two windows of the load phase whose steady-worker memory is compared: the first after
    the warm-up, and the last. The warm-up (pool children importing and allocating what the jobs
    need, the main process's first connections and buffers) is the first 10 minutes, or the
    first quarter of a shorter soak; each window is a quarter of the load phase, at most 5
    minutes. For the 60 s cut: 15-30 s against 45-60 s; for the 1-hour soak: minutes 10-15
    against minutes 55-60."""
    length = ended - began
    warmup = min(MEMORY_WARMUP, length / 4)
    window = min(MEMORY_WINDOW, length / 4)
    return (began + warmup, began + warmup + window), (ended - window, ended)


def window_means(samples: list[dict[str, Any]], began: float, ended: float) -> tuple[float, ...]:
    """Mean (main PSS, children PSS, total PSS, total RSS, total USS) in MiB over the first window
    after the warm-up and over the last window (memory_windows): (first..., last...)."""

    def mean(part: list[dict[str, Any]], name: str) -> float:
        return sum(s[name] for s in part) / max(1, len(part)) / 1024

    figures: list[float] = []
    for start, end in memory_windows(began, ended):
        part = [s for s in samples if start <= s["at"] <= end]
        for sample in part:
            sample["total_pss"] = sample["main_pss"] + sample["children_pss"]
            sample["total_rss"] = sample["main_rss"] + sample["children_rss"]
            sample["total_uss"] = sample["main_uss"] + sample["children_uss"]
        names = ("main_pss", "children_pss", "total_pss", "total_rss", "total_uss")
        figures += [mean(part, n) for n in names]
    return tuple(figures)


def pss_by_tenth(samples: list[dict[str, Any]], began: float, ended: float) -> str:
    """The steady worker's mean total PSS (MiB) in each tenth of the load phase: the curve the
    two windows compare, to tell a slow climb from a step."""
    tenth = (ended - began) / 10
    means = []
    for i in range(10):
        part = [
            s["main_pss"] + s["children_pss"]
            for s in samples
            if began + i * tenth <= s["at"] < began + (i + 1) * tenth
        ]
        means.append(f"{sum(part) / len(part) / 1024:.0f}" if part else "-")
    return " ".join(means)


# -- the soak --------------------------------------------------------------------------------------


@pytest.fixture
def soak_redis(tmp_path: Path) -> Iterator[SoakRedis]:
    server = SoakRedis(tmp_path / "redis-data")
    server.data_dir.mkdir()
    server.start()
    yield server
    server.crash()


def test_soak_loses_no_job_runs_no_deduplicated_job_twice_at_once_and_keeps_memory_flat(
    soak_redis: SoakRedis, worker_env: dict[str, str], tmp_path: Path
) -> None:
    run_log = tmp_path / "runs.jsonl"
    env = {
        "FRAPPE_CELERY_BROKER_URL": soak_redis.url,
        "FRAPPE_CELERY_SIGNING_KEY": generate_key(),
        "FRAPPE_CELERY_RESULT_BACKEND": soak_redis.url,
        "FRAPPE_CELERY_HOOKS": "tests.soak.hooks_soak",
        # Production's heartbeat (the suite's TEST_CONFIG shortens it): recovery at its real pace.
        "FRAPPE_CELERY_HEARTBEAT_INTERVAL": str(DEFAULT_HEARTBEAT_INTERVAL),
        "SOAK_RUN_LOG": str(run_log),
    }
    worker_env = {**worker_env, **env}
    ledger = Ledger()
    workers: dict[str, Worker] = {}
    started: list[Worker | Beat] = []

    def start_worker() -> Worker:
        worker = Worker("short,default,long", 2, worker_env, tmp_path)
        started.append(worker)
        return worker

    stop_load, stop_watch = threading.Event(), threading.Event()
    threads: list[threading.Thread] = []
    with settings_env(**env):
        try:
            workers["steady"] = start_worker()
            workers["victim"] = start_worker()
            beat = Beat(worker_env, tmp_path)
            started.append(beat)
            began = time.time()
            threads = [
                threading.Thread(target=produce, args=(ledger, i, stop_load), daemon=True)
                for i in range(PRODUCERS)
            ]
            threads += [
                threading.Thread(target=chaos, daemon=True,
                                 args=(ledger, workers, start_worker, soak_redis, began,
                                       stop_load)),
                threading.Thread(target=poll_outcomes, args=(ledger, soak_redis.client,
                                                              stop_watch), daemon=True),
                threading.Thread(target=sample_memory, args=(ledger, workers, stop_watch),
                                 daemon=True),
            ]  # fmt: skip
            for thread in threads:
                thread.start()
            time.sleep(SOAK_SECONDS)
            stop_load.set()
            load_ended = time.time()
            for thread in threads[: PRODUCERS + 1]:
                thread.join(60)

            def drained() -> bool:
                with ledger.lock:
                    return all(h.outcome is not None for h in ledger.handles)

            with contextlib.suppress(AssertionError):  # what never ended is reported as lost
                wait_for(drained, DRAIN_LIMIT, interval=1)
            drain_seconds = time.time() - load_ended
            stop_watch.set()
            for thread in threads:
                thread.join(10)
        finally:
            stop_load.set()
            stop_watch.set()
            for process in started:
                process.stop()
    runs = read_runs(run_log)
    summarize(ledger, runs, began, load_ended, drain_seconds, tmp_path)


def summarize(
    ledger: Ledger,
    runs: list[dict[str, Any]],
    began: float,
    load_ended: float,
    drain_seconds: float,
    logdir: Path,
) -> None:
    ended_labels = {r["label"] for r in runs if r["event"] == "end"}
    outcomes: Counter[str] = Counter()
    lost: list[Handle] = []
    for handle in ledger.handles:
        outcome = handle.outcome
        if outcome == "replaced":
            # Its record was replaced by a newer enqueue of the id: it ran if its run ended.
            outcome = handle.expected if handle.label in ended_labels else "replaced, never ran"
        outcomes[outcome or "not final"] += 1
        if outcome != handle.expected:
            lost.append(handle)
    intervals = run_intervals(runs, ledger.killed)
    dedup_overlaps = sum(overlaps(v) for k, v in intervals.items() if "soak-dedup-" in k)
    tick_runs = [r for r in runs if r["label"] == "tick" and r["event"] == "start"]
    tick_overlaps = sum(overlaps(v) for k, v in intervals.items() if "tick" in k)
    starts = Counter(r["label"] for r in runs if r["event"] == "start")
    steady = [s for s in ledger.memory if s["role"] == "steady"]
    m = window_means(steady, began, load_ended)
    growth = m[7] / m[2] if m[2] else float("inf")
    long_soak = load_ended - began >= LONG_SOAK
    limit = MEMORY_GROWTH_LIMIT if long_soak else SHORT_SOAK_MEMORY_GROWTH_LIMIT
    windows = " -> ".join(
        f"{start - began:.0f}-{end - began:.0f} s"
        for start, end in memory_windows(began, load_ended)
    )
    rows = [
        ("soak length (s)", f"{load_ended - began:.0f}, drained in {drain_seconds:.0f}"),
        ("handles returned", len(ledger.handles)),
        ("  by kind", dict(ledger.enqueued)),
        ("enqueues deduplicated (None)", ledger.deduplicated),
        ("enqueues refused", dict(ledger.refused) or 0),
        ("outcomes", dict(outcomes)),
        ("LOST (not as designed)", len(lost)),
        ("runs in all (start lines)", sum(starts.values())),
        (
            "jobs run more than once (not retries)",
            sum(
                1 for h in ledger.handles if starts[h.label] > 1 and not h.kind.startswith("retry")
            ),
        ),
        ("scheduled ticks run", f"{len(tick_runs)} (every 5 s: ~{SOAK_SECONDS // 5})"),
        ("concurrent runs of a dedup id", dedup_overlaps),
        ("concurrent runs of the tick", tick_overlaps),
        ("pool children SIGKILLed", sum(1 for _, e in ledger.events if "pool child" in e)),
        ("workers SIGKILLed", sum(1 for _, e in ledger.events if e.startswith("SIGKILL worker"))),
        ("redis restarts", sum(1 for _, e in ledger.events if "redis-server back" in e)),
        ("steady worker PSS MiB, main", f"{m[0]:.1f} -> {m[5]:.1f}"),
        ("steady worker PSS MiB, pool", f"{m[1]:.1f} -> {m[6]:.1f}"),
        (
            "steady worker PSS MiB, total",
            f"{m[2]:.1f} -> {m[7]:.1f} (x{growth:.2f}, at most x{limit})",
        ),
        ("steady worker RSS MiB, total", f"{m[3]:.1f} -> {m[8]:.1f}"),
        ("steady worker USS MiB, total", f"{m[4]:.1f} -> {m[9]:.1f}"),
        ("steady worker PSS MiB by tenth of the load", pss_by_tenth(steady, began, load_ended)),
        ("memory samples (steady, all)", f"{len(steady)}, {len(ledger.memory)}"),
    ]
    print(f"\n== soak summary (memory: {windows})")
    print(tabulate(rows, tablefmt="github"))
    print("== chaos")
    for at, event in ledger.events:
        print(f"  {at - began:7.1f} s  {event}")
    for handle in lost[:20]:
        print(f"  lost: {handle}, runs: {[r for r in runs if r['label'] == handle.label]}")
    # Every memory sample, for a closer look than the table's (per child process: the curve).
    (logdir / "memory.json").write_text(json.dumps(ledger.memory))
    # Kept out of pytest's temporary folders, which later sessions prune (a 1-hour soak's
    # worker logs were gone before its one finding could be read).
    kept = Path(tempfile.gettempdir()) / f"frappe-celery-soak-{time.strftime('%Y%m%d-%H%M%S')}"
    shutil.copytree(logdir, kept, ignore=shutil.ignore_patterns("redis-data"))
    print(f"== logs (and memory.json, the memory samples) in {kept}")
    assert not lost, f"{len(lost)} jobs did not end as designed (see the list above)"
    assert dedup_overlaps == 0
    assert tick_overlaps == 0
    assert tick_runs, "the scheduled entry never ran"
    assert m[2] and m[7], "no memory samples in the first or the last window"
    assert growth <= limit, f"steady worker memory grew x{growth:.2f}"
