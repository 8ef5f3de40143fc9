"""Worker side: frappe-celery's worker against raw Celery and against RQ run Frappe's way.

Run from the repository root (``pip install -e ".[bench]"`` for RQ and matplotlib)::

    python -m benchmarks.bench_workers                      # full run: -n 2000 -m 200 -r 5
    python -m benchmarks.bench_workers --quick              # smoke run (CI), well under 90 s
    python -m benchmarks.bench_workers --json out.json --plot out.png
    python -m benchmarks.bench_workers --variants frappe-celery,rq-2-forking -r 3

Variants (every one runs the same no-op job, ``benchmarks.jobs.stamp``):

- ``frappe-celery``: ``frappe_celery.enqueue("benchmarks.jobs.stamp", queue="default", ...)``;
  ``celery -A frappe_celery worker -c 2 -P prefork -Q default`` with frappe-celery's defaults
  (the repository's example celeryconfig.py is not loaded, so the package's own settings apply).
- ``celery-reliable``: raw ``send_task`` to ``celery -A benchmarks.celery_raw worker`` with acks
  late, reject on worker lost, prefetch 1 (the reliability settings frappe-celery derives).
- ``celery-default``: the same app with Celery's defaults (early ack, prefetch multiplier 4).
- ``rq-2-forking``: two ``rq worker default`` (RQ's default ``Worker``, one fork per job), RQ at
  the installed version, jobs enqueued the way Frappe does (``bench_enqueue.rq_frappe_enqueue``:
  pickled ``execute_job`` with Frappe's payload and TTLs; ``execute_job`` calls the method).
- ``rq-simple``: one ``rq worker --worker-class rq.worker.SimpleWorker default`` (no fork).

Both Celery workers and RQ start with their own defaults otherwise (raw Celery keeps mingle,
gossip and heartbeat, which frappe-celery's worker turns off; RQ logs every job at INFO).

Method. ONE redis-server (``frappe_celery.ops.embedded.EmbeddedRedis``, loopback, free port),
cleared between variants. Each job records, with ``time.time()``, when the caller sent it, when
it started and when it ended, into one Redis list (one RPUSH, the same cost for every variant);
all timestamps come from one machine's clock, so they compare across processes. In each
repetition (``-r``) every variant runs once per part, in an order rotated by one per repetition,
so drift over the run hits all of them alike. Workers run in their own process groups and are
stopped with SIGTERM to the group, SIGKILL after a bound; every wait is bounded; everything is
stopped on errors, Ctrl-C and SIGTERM.

1. Drain: N jobs queued on ``default`` with no worker running, then the worker(s) started.
   Reported: jobs/s from the first job's start to the last job's end, and jobs/s from the
   worker's spawn to the last job's end (with start-up), min / median / max; also the rate of
   the middle 90 % of job starts (the steady state) and the longest pause between two starts.
   A pause shows a stall of the whole worker: frappe-celery replaces a pool child after 1000
   jobs (its default), so with N=2000 on -c 2 the replacement falls on the drain's last jobs;
   the last job was seen waiting 0 to 4.7 s for it (Celery's pool also maintains itself on a
   5 s timer), and the first-start-to-last-end rate then mostly measures that wait.
2. Latency: on an idle, warmed-up worker, M jobs sent one at a time, each only after the
   previous one recorded itself plus a short gap (``--gap-ms``) that lets the worker settle
   (ack, bookkeeping, RQ's work horse exiting). Latency = job start - send time (taken just
   before the enqueue/send call). p50 / p95 / p99 pooled over repetitions, and the median of
   the per-repetition p50. For RQ's forking worker the fork is in the latency: that is its cost.
3. Idle memory: the PSS (``Pss:`` of /proc/<pid>/smaps_rollup) summed over every process of the
   worker's process group(s) -- main process and pool children -- after the warm-up jobs ran
   and the worker sat idle ``--idle-s`` seconds. Same concurrency: ``-c 2`` for Celery, two
   forking RQ workers summed, one SimpleWorker alone. PSS divides shared pages among the
   processes sharing them, so a sum over the group counts each page once.

Speed is never asserted: these are numbers for humans. ``main(argv)`` returns 0 on success.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any, cast

import redis
from tabulate import tabulate

from benchmarks.bench_enqueue import MAX_QUEUED_JOBS, clear_broker, log, versions
from benchmarks.jobs import STAMPS_KEY

ROOT = Path(__file__).resolve().parent.parent
STAMP = "benchmarks.jobs.stamp"
QUEUE = "default"
CONCURRENCY = 2
VARIANT_KEYS = ("frappe-celery", "celery-reliable", "celery-default", "rq-2-forking", "rq-simple")
BASELINE = "celery-reliable"
WARMUP_JOBS = 10
MIB = 1024 * 1024

# (sent, start, end) of one job, all time.time() seconds.
Stamp = tuple[float, float, float]
Send = Callable[[float], Any]

# Worker groups alive right now: main()'s finally stops whatever an error left behind.
_LIVE: set[WorkerGroup] = set()


# -- workers ---------------------------------------------------------------------------------------


class WorkerGroup:
    """One variant's worker processes, each in its own session (so its own process group).

    Stopped with SIGTERM to every group (warm shutdown), then SIGKILL to what is left after
    ``grace`` seconds: a worker that hangs cannot hang the benchmark.
    """

    def __init__(
        self, name: str, commands: list[list[str]], env: dict[str, str], logdir: Path
    ) -> None:
        self.name = name
        self.processes: list[subprocess.Popen[bytes]] = []
        self.logs: list[Path] = []
        _LIVE.add(self)
        # The spawn time: the drain's "with start-up" rate counts from here.
        self.spawned = time.time()
        for index, command in enumerate(commands):
            path = logdir / f"{name}-{index}-{uuid.uuid4().hex[:6]}.log"
            self.logs.append(path)
            with path.open("wb") as log_file:  # the child keeps its own descriptor
                self.processes.append(
                    subprocess.Popen(
                        command,
                        cwd=ROOT,
                        env=env,
                        stdin=subprocess.DEVNULL,
                        stdout=log_file,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                )

    def check_alive(self) -> None:
        for process, path in zip(self.processes, self.logs, strict=True):
            if process.poll() is not None:
                tail = path.read_text(errors="replace")[-3000:]
                raise RuntimeError(
                    f"{self.name}: worker pid {process.pid} exited early "
                    f"({process.returncode}):\n{tail}"
                )

    def members(self) -> dict[int, str]:
        """Pid -> start time (clock ticks after boot) of every process in the workers' process
        groups and of all their descendants.

        Descendants count too: RQ's work horse calls setsid(), so it leaves the group. The
        start time tells a member from a later process that reused its pid.
        """
        parents: dict[int, int] = {}
        groups: dict[int, int] = {}
        started: dict[int, str] = {}
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                pid = int(entry.name)
                fields = _stat_fields(pid)
                if fields:
                    # After the command name: state ppid pgrp session ... starttime (20th).
                    parents[pid], groups[pid], started[pid] = (
                        int(fields[1]),
                        int(fields[2]),
                        fields[19],
                    )
        leaders = {p.pid for p in self.processes}  # with start_new_session, pgid == pid
        found = {pid for pid, pgrp in groups.items() if pgrp in leaders}
        while True:
            more = {pid for pid, ppid in parents.items() if ppid in found} - found
            if not more:
                return {pid: started[pid] for pid in found}
            found |= more

    def pss_bytes(self) -> tuple[int, int]:
        """(PSS summed over the members, number of members)."""
        total = count = 0
        for pid in self.members():
            try:
                for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                    if line.startswith("Pss:"):
                        total += int(line.split()[1]) * 1024
                        count += 1
                        break
            except OSError:
                continue  # a process that ended while we looked
        return total, count

    def stop(self, grace: float = 15.0) -> None:
        # Collected before the parents go: an orphan is re-parented and could not be found.
        members = self.members()
        leaders = {p.pid for p in self.processes}
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
            alive = [p for p in self.processes if p.poll() is None]
            if not alive:
                break
            for process in alive:
                with suppress(ProcessLookupError):
                    os.killpg(process.pid, sig)
            deadline = time.monotonic() + wait
            for process in alive:
                with suppress(subprocess.TimeoutExpired):
                    process.wait(max(0.0, deadline - time.monotonic()))
        # What is left of the groups (a pool child whose parent was killed) and the
        # descendants outside them; pids of the processes we started are ours until reaped.
        for process in self.processes:
            with suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
        for pid, start in members.items():
            fields = _stat_fields(pid)
            if pid not in leaders and fields and fields[19] == start:
                with suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        _LIVE.discard(self)


def _stat_fields(pid: int) -> list[str] | None:
    """/proc/<pid>/stat's fields after the parenthesised command name; None if it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


@contextmanager
def running(group: WorkerGroup) -> Iterator[WorkerGroup]:
    try:
        yield group
    finally:
        group.stop()


# -- the variants ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Variant:
    key: str
    label: str

    def commands(self, url: str) -> list[list[str]]:
        python = sys.executable
        if self.key == "frappe-celery" or self.key.startswith("celery-"):
            app = "frappe_celery" if self.key == "frappe-celery" else "benchmarks.celery_raw"
            worker = [python, "-m", "celery", "-A", app, "worker"]
            return [[*worker, "-c", str(CONCURRENCY), "-P", "prefork", "-Q", QUEUE]]
        rq = [python, "-m", "rq.cli", "worker", QUEUE, "--url", url]
        if self.key == "rq-simple":
            return [[*rq, "--worker-class", "rq.worker.SimpleWorker"]]
        return [rq for _ in range(CONCURRENCY)]

    def env(self, base: dict[str, str]) -> dict[str, str]:
        if self.key == "celery-reliable":
            return {**base, "BENCH_RAW_PROFILE": "reliable"}
        if self.key == "celery-default":
            return {**base, "BENCH_RAW_PROFILE": "default"}
        return base

    @contextmanager
    def sender(self, url: str) -> Iterator[Send]:
        """A fresh client for one run; yields ``send(sent_time)``, closed afterwards."""
        if self.key == "frappe-celery":
            import frappe_celery

            frappe_celery.reload_settings()  # a fresh client on the benchmark's server
            enqueue = frappe_celery.enqueue
            yield lambda sent: enqueue(STAMP, queue=QUEUE, sent=sent)
        elif self.key.startswith("celery-"):
            from benchmarks.celery_raw import make_app

            app = make_app(url, profile=self.key.removeprefix("celery-"))
            send_task = app.send_task
            try:
                yield lambda sent: send_task(
                    STAMP, kwargs={"sent": sent}, queue=QUEUE, ignore_result=True
                )
            finally:
                app.close()
        else:
            from benchmarks.bench_enqueue import rq_frappe_enqueue

            conn = redis.Redis.from_url(url)  # Frappe: redis.from_url(redis_queue)
            try:
                yield lambda sent: rq_frappe_enqueue(conn, STAMP, queue=QUEUE, sent=sent)
            finally:
                conn.close()


VARIANTS = {
    "frappe-celery": Variant("frappe-celery", "frappe_celery.enqueue → frappe-celery worker -c 2"),
    "celery-reliable": Variant(
        "celery-reliable", "Celery send_task → worker -c 2, acks late + prefetch 1"
    ),
    "celery-default": Variant("celery-default", "Celery send_task → worker -c 2, Celery defaults"),
    "rq-2-forking": Variant("rq-2-forking", "Frappe's enqueue on RQ → 2 forking rq workers"),
    "rq-simple": Variant("rq-simple", "Frappe's enqueue on RQ → 1 rq SimpleWorker"),
}


# -- results ---------------------------------------------------------------------------------------


@dataclass
class Results:
    drain: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    latency_ms: dict[str, list[list[float]]] = field(default_factory=dict)  # per rep, per job
    pss: dict[str, list[dict[str, Any]]] = field(default_factory=dict)


def percentile(values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (q in 0..1)."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    pos = q * (len(ordered) - 1)
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def read_stamps(admin: redis.Redis) -> list[Stamp]:
    stamps = []
    # redis-py's hints cover its asyncio client too: the synchronous client returns lists.
    for raw in cast(list[bytes], admin.lrange(STAMPS_KEY, 0, -1)):
        sent, start, end = (float(x) for x in raw.split())
        stamps.append((sent, start, end))
    return stamps


def wait_stamps(admin: redis.Redis, expected: int, group: WorkerGroup, timeout: float) -> None:
    """Until ``expected`` jobs recorded themselves; raises after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while cast(int, admin.llen(STAMPS_KEY)) < expected:
        if time.monotonic() > deadline:
            done = admin.llen(STAMPS_KEY)
            raise TimeoutError(f"{group.name}: {done}/{expected} jobs done after {timeout:.0f} s")
        group.check_alive()
        time.sleep(0.01)


# -- 1. drain --------------------------------------------------------------------------------------


def drain_once(
    variant: Variant, url: str, admin: redis.Redis, env: dict[str, str], workdir: Path, n: int,
    timeout: float,
) -> dict[str, Any]:  # fmt: skip
    clear_broker(admin)
    with variant.sender(url) as send:
        begin = time.perf_counter()
        for _ in range(n):
            send(time.time())
        enqueue_s = time.perf_counter() - begin
    group = WorkerGroup(variant.key, variant.commands(url), variant.env(env), workdir)
    with running(group):
        wait_stamps(admin, n, group, timeout)
    stamps = read_stamps(admin)
    first_start = min(s[1] for s in stamps)
    last_end = max(s[2] for s in stamps)
    starts = sorted(s[1] for s in stamps)
    # Two views that first start -> last end hides: the rate of the middle 90 % of jobs (the
    # steady state, without ramp-up and tail), and the longest pause between two job starts
    # (a stall of the whole worker, e.g. one job left waiting for a pool child).
    low, high = int(0.05 * (len(starts) - 1)), int(0.95 * (len(starts) - 1))
    middle = (high - low) / (starts[high] - starts[low]) if high > low else float("nan")
    return {
        "jobs": len(stamps),
        "enqueue_s": enqueue_s,
        "startup_s": first_start - group.spawned,  # spawn → first job started
        "run_s": last_end - first_start,
        "total_s": last_end - group.spawned,
        "rate_run": n / (last_end - first_start),
        "rate_total": n / (last_end - group.spawned),
        "rate_middle": middle,
        "longest_pause_s": max((b - a for a, b in pairwise(starts)), default=0.0),
        # Raw samples: each job's start and end, in s after the spawn.
        "starts_s": [round(s[1] - group.spawned, 6) for s in stamps],
        "ends_s": [round(s[2] - group.spawned, 6) for s in stamps],
    }


# -- 2 and 3. latency and idle memory --------------------------------------------------------------


def latency_once(
    variant: Variant, url: str, admin: redis.Redis, env: dict[str, str], workdir: Path, m: int,
    gap: float, idle: float, timeout: float,
) -> tuple[list[float], dict[str, Any]]:  # fmt: skip
    """Latencies in ms of ``m`` jobs on an idle worker, and its idle PSS."""
    clear_broker(admin)
    group = WorkerGroup(variant.key, variant.commands(url), variant.env(env), workdir)
    with running(group), variant.sender(url) as send:
        # A burst of warm-up jobs: the worker is up, connected, and every pool child (with
        # prefetch 1, both get some) has imported the job's module.
        for _ in range(WARMUP_JOBS):
            send(time.time())
        wait_stamps(admin, WARMUP_JOBS, group, timeout)
        time.sleep(idle)
        group.check_alive()
        pss, processes = group.pss_bytes()
        admin.delete(STAMPS_KEY)
        latencies = []
        for i in range(m):
            sent = time.time()
            send(sent)
            # BLPOP wakes us the moment the job recorded itself (no polling step); bounded.
            popped = cast(tuple[bytes, bytes] | None, admin.blpop([STAMPS_KEY], timeout=timeout))
            if popped is None:
                group.check_alive()
                raise TimeoutError(f"{variant.key}: latency job {i} not run within {timeout} s")
            got_sent, start, _end = (float(x) for x in popped[1].split())
            if got_sent != sent:
                raise RuntimeError(f"{variant.key}: job {i} came back out of order")
            latencies.append((start - sent) * 1000)
            time.sleep(gap)
    return latencies, {"pss_bytes": pss, "processes": processes}


# -- report ----------------------------------------------------------------------------------------


def summarize(results: Results) -> dict[str, Any]:
    summary: dict[str, Any] = {"drain": {}, "latency_ms": {}, "pss_mib": {}}
    for key, runs in results.drain.items():
        entry = {}
        metrics = ("rate_run", "rate_total", "rate_middle", "longest_pause_s", "startup_s",
                   "enqueue_s")  # fmt: skip
        for metric in metrics:
            values = [r[metric] for r in runs]
            entry[metric] = {
                "min": min(values), "median": statistics.median(values), "max": max(values)
            }  # fmt: skip
        summary["drain"][key] = entry
    for key, reps in results.latency_ms.items():
        pooled = [x for rep in reps for x in rep]
        summary["latency_ms"][key] = {
            "p50": percentile(pooled, 0.50),
            "p95": percentile(pooled, 0.95),
            "p99": percentile(pooled, 0.99),
            "max": max(pooled),
            "samples": len(pooled),
            "rep_p50": [percentile(rep, 0.5) for rep in reps],
            "median_rep_p50": statistics.median(percentile(rep, 0.5) for rep in reps),
        }
    for key, runs in results.pss.items():
        values = [r["pss_bytes"] / MIB for r in runs]
        summary["pss_mib"][key] = {
            "min": min(values),
            "median": statistics.median(values),
            "max": max(values),
            "processes": statistics.median(r["processes"] for r in runs),
        }
    return summary


def render(summary: dict[str, Any], args: argparse.Namespace, meta: dict[str, str]) -> str:
    keys = [k for k in args.variants if k in summary["drain"] or k in summary["latency_ms"]]
    out = [
        "### Setup of this run",
        "",
        tabulate(list(meta.items()), headers=["", ""], tablefmt="github"),
        "",
        f"N = {args.n} drain jobs, M = {args.m} latency jobs ({args.gap_ms:g} ms gap), "
        f"R = {args.reps} repetitions, variants interleaved in a rotating order.",
    ]
    drain = summary["drain"]
    if drain:
        rows = []
        for key in keys:
            d = drain[key]
            run, total = d["rate_run"], d["rate_total"]
            rows.append([
                key,
                f"{run['median']:,.0f}", f"{run['min']:,.0f} to {run['max']:,.0f}",
                f"{total['median']:,.0f}", f"{total['min']:,.0f} to {total['max']:,.0f}",
                f"{d['rate_middle']['median']:,.0f}",
                f"{d['longest_pause_s']['median']:.3f}",
                f"{d['longest_pause_s']['max']:.3f}",
                f"{d['startup_s']['median']:.2f}",
                f"{args.n / d['enqueue_s']['median']:,.0f}",
            ])  # fmt: skip
        out += [
            "",
            f"### 1. Drain: {args.n} no-op jobs queued, then the worker started",
            "",
            tabulate(
                rows,
                headers=[
                    "variant",
                    "jobs/s (first start → last end), median",
                    "min to max",
                    "jobs/s incl. start-up (spawn → last end), median",
                    "min to max",
                    "jobs/s, middle 90 % of starts",
                    "longest pause between starts (s), median",
                    "max",
                    "start-up s (spawn → first start)",
                    "enqueue rate before (jobs/s)",
                ],
                tablefmt="github",
                disable_numparse=True,
            ),
        ]
    latency = summary["latency_ms"]
    if latency:
        rows = []
        for key in keys:
            lat = latency[key]
            rows.append([
                key, f"{lat['p50']:.2f}", f"{lat['p95']:.2f}", f"{lat['p99']:.2f}",
                f"{lat['max']:.2f}", f"{lat['median_rep_p50']:.2f}",
                f"{min(lat['rep_p50']):.2f} to {max(lat['rep_p50']):.2f}", lat["samples"],
            ])  # fmt: skip
        out += [
            "",
            "### 2. Latency: enqueue call → job start, idle worker (ms)",
            "",
            tabulate(
                rows,
                headers=[
                    "variant",
                    "p50",
                    "p95",
                    "p99",
                    "max",
                    "median of per-rep p50",
                    "per-rep p50 min to max",
                    "samples (pooled)",
                ],
                tablefmt="github",
                disable_numparse=True,
            ),
        ]
    pss = summary["pss_mib"]
    if pss:
        base = pss.get(BASELINE, {}).get("median")
        rows = []
        for key in keys:
            p = pss[key]
            ratio = f"{p['median'] / base:.2f}" if base else "-"
            rows.append([
                key, f"{p['processes']:g}", f"{p['median']:.1f}",
                f"{p['min']:.1f} to {p['max']:.1f}", ratio,
            ])  # fmt: skip
        out += [
            "",
            "### 3. Idle worker memory (PSS summed over the worker's processes)",
            "",
            tabulate(
                rows,
                headers=[
                    "variant",
                    "processes",
                    "PSS MiB, median",
                    "min to max",
                    f"ratio to {BASELINE}",
                ],
                tablefmt="github",
                disable_numparse=True,
            ),
        ]
    ratio_rows = []
    for other in (BASELINE, "rq-2-forking"):
        if "frappe-celery" not in keys or other not in keys:
            continue
        row = [f"frappe-celery ÷ {other}"]
        if drain:
            for metric in ("rate_run", "rate_total", "rate_middle"):
                mine, theirs = drain["frappe-celery"][metric], drain[other][metric]
                row.append(f"{mine['median'] / theirs['median']:.2f}")
        if latency:
            row.append(f"{latency['frappe-celery']['p50'] / latency[other]['p50']:.2f}")
            row.append(f"{latency['frappe-celery']['p99'] / latency[other]['p99']:.2f}")
        if pss:
            row.append(f"{pss['frappe-celery']['median'] / pss[other]['median']:.2f}")
        ratio_rows.append(row)
    if ratio_rows:
        headers = ["ratio of medians"]
        if drain:
            headers += ["drain jobs/s", "drain jobs/s incl. start-up", "drain, middle 90 %"]
        if latency:
            headers += ["latency p50", "latency p99"]
        if pss:
            headers += ["idle PSS"]
        out += [
            "",
            "### Ratios (jobs/s: above 1 = frappe-celery faster; latency, PSS: above 1 = more)",
            "",
            tabulate(ratio_rows, headers=headers, tablefmt="github", disable_numparse=True),
        ]
    return "\n".join(out) + "\n"


def plot(summary: dict[str, Any], keys: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # no display: write the file only
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5))
    drain = summary["drain"]
    dkeys = [k for k in keys if k in drain]
    if dkeys:
        medians = [drain[k]["rate_run"]["median"] for k in dkeys]
        lows = [m - drain[k]["rate_run"]["min"] for k, m in zip(dkeys, medians, strict=True)]
        highs = [drain[k]["rate_run"]["max"] - m for k, m in zip(dkeys, medians, strict=True)]
        left.bar(dkeys, medians, yerr=[lows, highs], capsize=5, color="tab:blue")
        left.set_title("Drain: jobs/s, first start → last end (median, min to max)")
        left.set_ylabel("jobs/s")
        left.tick_params(axis="x", rotation=20)
    latency = summary["latency_ms"]
    lkeys = [k for k in keys if k in latency]
    if lkeys:
        width = 0.27
        for offset, q in enumerate(("p50", "p95", "p99")):
            xs = [i + (offset - 1) * width for i in range(len(lkeys))]
            right.bar(xs, [latency[k][q] for k in lkeys], width, label=q)
        right.set_xticks(range(len(lkeys)), lkeys, rotation=20)
        right.set_title("Latency: enqueue → job start, idle worker")
        right.set_ylabel("ms")
        right.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# -- main ------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("-n", type=int, default=2000, help="drain jobs per run (2000)")
    parser.add_argument("-m", type=int, default=200, help="latency jobs per run (200)")
    parser.add_argument("-r", "--reps", type=int, default=5, help="repetitions (5)")
    parser.add_argument("--gap-ms", type=float, default=20.0, help="pause between latency jobs")
    parser.add_argument("--idle-s", type=float, default=2.0, help="idle time before PSS (2 s)")
    parser.add_argument("--timeout", type=float, default=120.0, help="bound on each wait (120 s)")
    parser.add_argument(
        "--variants", default=",".join(VARIANT_KEYS), help="comma-separated subset, in order"
    )
    parser.add_argument("--skip-drain", action="store_true", help="leave out part 1")
    parser.add_argument("--skip-latency", action="store_true", help="leave out parts 2 and 3")
    parser.add_argument("--json", type=Path, help="write raw samples and summaries here")
    parser.add_argument("--plot", type=Path, help="write a PNG of drain and latency here")
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: -n 100 -m 20 -r 2, --idle-s 1"
    )
    parser.add_argument(
        "--time-limit", type=int, default=3600, help="abort (and clean up) after this many s"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.n, args.m, args.reps, args.idle_s = 100, 20, 2, 1.0
    args.variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in args.variants if v not in VARIANTS]
    if unknown or not args.variants:
        parser.error(f"--variants: unknown {unknown}; choose from {', '.join(VARIANT_KEYS)}")
    if args.reps < 1 or args.n < 1 or args.m < 1:
        parser.error("-n, -m and -r must be at least 1")
    return args


def _abort(signum: int, frame: Any) -> None:
    raise SystemExit(f"aborted by signal {signum}; cleaning up")


def _overtime(signum: int, frame: Any) -> None:
    raise TimeoutError("benchmark exceeded --time-limit; cleaning up")


def run(args: argparse.Namespace, results: Results, workdir: Path) -> dict[str, str]:
    from benchmarks.common import use_broker
    from frappe_celery.ops.embedded import EmbeddedRedis

    server = EmbeddedRedis(workdir / "redis")  # loopback, free port, no persistence
    with ExitStack() as stack:
        stack.callback(server.stop)  # registered first: stopped after every worker
        server.start()
        log(f"redis-server on {server.url}")
        # frappe-celery refuses to queue beyond max_queued_jobs (Frappe's 500): the drain piles
        # up N jobs, so the check stays on but out of reach, as in bench_enqueue.
        use_broker(
            server.url,
            workdir,
            MAX_QUEUED_JOBS,
            **{
                # The repository's celeryconfig.py is an example for users: not loaded, so
                # the worker runs with frappe-celery's own defaults.
                "FRAPPE_CELERY_CELERYCONFIG": "benchmarks._no_such_celeryconfig",
                "BENCH_BROKER_URL": server.url,
                "BENCH_REDIS_URL": server.url,
                "PYTHONPATH": os.pathsep.join(
                    [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
                ),
            },
        )
        import frappe_celery

        frappe_celery.reload_settings()
        admin = redis.Redis.from_url(server.url, socket_timeout=args.timeout + 30)
        stack.callback(admin.close)
        env = dict(os.environ)
        keys = args.variants
        for rep in range(args.reps):
            order = keys[rep % len(keys) :] + keys[: rep % len(keys)]
            if not args.skip_drain:
                for key in order:
                    sample = drain_once(
                        VARIANTS[key], server.url, admin, env, workdir, args.n, args.timeout
                    )
                    sample["rep"], sample["position"] = rep, order.index(key)
                    results.drain.setdefault(key, []).append(sample)
                    log(
                        f"  rep {rep + 1}/{args.reps} drain {key}: {sample['rate_run']:,.0f} "
                        f"jobs/s, {sample['rate_total']:,.0f} with start-up"
                    )
            if not args.skip_latency:
                for key in order:
                    latencies, memory = latency_once(
                        VARIANTS[key], server.url, admin, env, workdir, args.m,
                        args.gap_ms / 1000, args.idle_s, args.timeout,
                    )  # fmt: skip
                    results.latency_ms.setdefault(key, []).append(latencies)
                    results.pss.setdefault(key, []).append({**memory, "rep": rep})
                    log(
                        f"  rep {rep + 1}/{args.reps} latency {key}: p50 "
                        f"{percentile(latencies, 0.5):.2f} ms, idle PSS "
                        f"{memory['pss_bytes'] / MIB:.1f} MiB ({memory['processes']} processes)"
                    )
        clear_broker(admin)
        return versions(admin)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    previous = {
        signal.SIGTERM: signal.signal(signal.SIGTERM, _abort),
        signal.SIGALRM: signal.signal(signal.SIGALRM, _overtime),
    }
    signal.alarm(args.time_limit)
    started = time.monotonic()
    load_before = os.getloadavg()
    saved_env = dict(os.environ)
    results = Results()
    try:
        with tempfile.TemporaryDirectory(prefix="fc-bench-workers-") as tmp:
            meta = run(args, results, Path(tmp))
    finally:
        signal.alarm(0)
        for group in list(_LIVE):  # whatever an error left running
            group.stop(grace=5.0)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        # main() may be called from a suite runner: leave its environment as it was.
        os.environ.clear()
        os.environ.update(saved_env)
    wall = time.monotonic() - started
    meta["benchmark wall time"] = f"{wall:.0f} s"
    # Other processes on the machine add noise: the 1-minute load average shows how busy it was.
    meta["load average (1 min) before / after"] = f"{load_before[0]:.2f} / {os.getloadavg()[0]:.2f}"
    summary = summarize(results)
    print(render(summary, args, meta))
    if args.json:
        raw = {
            "drain": results.drain,
            "latency_ms": results.latency_ms,
            "pss": results.pss,
        }
        settings = {k: v for k, v in vars(args).items() if k not in ("json", "plot")}
        document = {"args": settings, "meta": meta, "summary": summary, "raw": raw}
        args.json.write_text(json.dumps(document, indent=1, default=str))
        log(f"JSON written to {args.json}")
    if args.plot:
        plot(summary, args.variants, args.plot)
        log(f"plot written to {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
