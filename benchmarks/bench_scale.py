"""frappe-celery at scale: Redis bytes per job, a million pending jobs, `status` and the scheduler.

Run from the repository root::

    python -m benchmarks.bench_scale                      # full run: ~5 min, ~5 GB of Redis
    python -m benchmarks.bench_scale --quick              # smoke run for CI (< ~60 s)
    python -m benchmarks.bench_scale --parts bytes,scheduler -r 7 --json out.json

Parts (``--parts``, default all, always run in this order):

``bytes``
    Redis bytes per pending job. Each repetition runs both variants, in a rotating order, each on
    a FLUSHALLed Redis: a warm-up publish (scripts loaded, kombu's binding set written), then
    every key but kombu's ``_kombu.binding.*`` deleted, ``INFO memory`` ``used_memory`` read,
    K jobs published, ``used_memory`` read again; (after - before) / K is the figure.
    frappe-celery publishes ``enqueue_many`` calls of ``benchmarks.jobs.noop(x=1)`` in batches
    of 1000 (one Lua script per job: a status record hash plus the message LPUSHed); raw Celery
    is ``benchmarks.celery_raw.make_app(url, profile="reliable").send_task(...)`` in a loop (the
    message LPUSHed, nothing else). Also reported: the size of one message of each (``LINDEX``),
    and of one frappe-celery record (``MEMORY USAGE``, and the bytes of its fields, among them
    its full copy of the message).
``pending``
    ``--pending`` jobs (default 1,000,000) spread over the queues short/default/long and over
    ``--sites`` sites (default 100), published by ``--fill-procs`` processes with
    ``enqueue_many`` batches of 1000. Each batch belongs to one site and one queue (batch b:
    site b mod S, queue b mod 3); a job's site is what enqueue asks the job context for
    (``JobContext.current_site``), so each filler installs a context naming the batch's site,
    as a Frappe web process does. Reported once (the fill is not repeated): fill time, jobs/s,
    ``used_memory`` total and per job.
``status``
    On top of those pending jobs, as whole commands in a subprocess (interpreter start-up and
    imports included), interleaved per repetition: ``frappe-celery status``, ``status --json``,
    ``jobs --limit 50``, ``jobs --site <a site> --limit 50`` and ``status`` with the
    scheduler configured for every site (``--sites`` x ``--entries-per-site`` entries, which
    `status` summarises). Also the in-process data collection of ``status`` and ``jobs``.
    Target (the issue): <= 1 s per command.
``scheduler``
    ``--sites`` x ``--entries-per-site`` entries (default 100 x 100 = 10,000): one hooks module
    with ``--entries-per-site`` entries over every kind of key, fired for every site listed in
    ``FRAPPE_CELERY_SITES``. Timed: building the schedule (``build_entries``), the first tick of
    a new leader (reads and seeds every last run), the usual tick (nothing due) and a tick where
    every entry is due (every entry claimed, one job each published). Targets: usual tick
    <= 50 ms, all-due tick <= 1 s.

Every timing is min / median / max over ``-r`` repetitions (default 5). A measurement that misses
its target is profiled once afterwards with cProfile (and, for a command, ``-X importtime``), and
the top of the profile is printed (``--no-profile`` skips it). Nothing is asserted about timings.
One redis-server (frappe_celery.ops.embedded.EmbeddedRedis, no maxmemory, no persistence) on a free
loopback port is started here and stopped at the end, on errors and on Ctrl-C.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import multiprocessing
import os
import pstats
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from frappe_celery.broker.signing import generate_key
from frappe_celery.connection import Client
from frappe_celery.context import JobContext
from frappe_celery.ops.embedded import EmbeddedRedis

NOOP = "benchmarks.jobs.noop"
QUEUES = ("short", "default", "long")
BATCH = 1000
HOOKS_MODULE = "bench_scale_hooks"
REPO_ROOT = Path(__file__).resolve().parent.parent
# A bounded wait for every command run in a subprocess.
COMMAND_TIMEOUT = 300.0
# Targets from the issue (seconds).
STATUS_TARGET = 1.0
USUAL_TICK_TARGET = 0.050
ALL_DUE_TARGET = 1.0
PROFILE_LINES = 25


# -- helpers -------------------------------------------------------------------------------------


def summary(samples: Sequence[float]) -> dict[str, float]:
    return {
        "min": min(samples),
        "median": statistics.median(samples),
        "max": max(samples),
        "n": len(samples),
    }


def site_name(index: int) -> str:
    return f"site-{index:03d}.example.com"


def used_memory(client: Client) -> int:
    return int(client.info("memory")["used_memory"])


def clear_except_bindings(client: Client) -> None:
    """Delete every key but kombu's queue bindings: the warm-up's jobs go, what every publish
    needs once (the binding set raw Celery writes on its first send) stays."""
    doomed = [key for key in client.scan_iter(count=1000) if not key.startswith(b"_kombu.binding")]
    if doomed:
        client.delete(*doomed)


class SiteContext(JobContext):
    """A job context naming the site the next enqueues belong to: enqueue asks the context for
    the current site (a Frappe web process answers with the request's site)."""

    def __init__(self, site: str) -> None:
        self.site = site

    def current_site(self) -> str | None:
        return self.site


def fmt_s(seconds: float) -> str:
    return f"{seconds * 1000:,.1f} ms" if seconds < 10 else f"{seconds:,.2f} s"


def markdown_table(headers: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def timing_row(name: str, samples: Sequence[float], target: float | None) -> list[str]:
    s = summary(samples)
    verdict = ""
    if target is not None:
        verdict = f"<= {fmt_s(target)}: " + ("met" if s["median"] <= target else "**missed**")
    return [name, fmt_s(s["min"]), fmt_s(s["median"]), fmt_s(s["max"]), verdict]


TIMING_HEADERS = ["what", "min", "median", "max", "target (median)"]


def profile_call(func: Callable[[], Any]) -> str:
    """cProfile of one call: the top functions by cumulative and by own time (file:line)."""
    profiler = cProfile.Profile()
    profiler.enable()
    try:
        func()
    finally:
        profiler.disable()
    return format_stats(pstats.Stats(profiler))


def format_stats(stats: pstats.Stats) -> str:
    out = io.StringIO()
    stats.stream = out  # type: ignore[attr-defined]
    # frappe-celery's own functions first (full paths: file and line say where to look), then
    # everything, by cumulative and by own time.
    stats.sort_stats("cumulative").print_stats(r"frappe_celery[/\\]", PROFILE_LINES)
    stats.strip_dirs()
    stats.sort_stats("cumulative").print_stats(PROFILE_LINES)
    stats.sort_stats("tottime").print_stats(PROFILE_LINES)
    # pstats's banner lines (date, file name) repeat for every listing: keep the tables.
    return "\n".join(
        line
        for line in out.getvalue().splitlines()
        if line.strip() and not line.endswith(".prof") and "List reduced" not in line
    )


# Runs the CLI under cProfile in a subprocess (argv: stats file, then the CLI's arguments).
_PROFILE_RUNNER = """
import cProfile, sys
out = sys.argv[1]
sys.argv = ["frappe-celery", *sys.argv[2:]]
profiler = cProfile.Profile()
profiler.enable()
try:
    from frappe_celery.cli import main
    main()
except SystemExit:
    pass
finally:
    profiler.disable()
    profiler.dump_stats(out)
"""


def profile_command(args: list[str], env: dict[str, str], workdir: Path) -> str:
    """Where a CLI command's time goes: cProfile of the whole run (imports included) and the
    slowest top-level imports from ``-X importtime``."""
    stats_file = workdir / "command.prof"
    subprocess.run(
        [sys.executable, "-c", _PROFILE_RUNNER, str(stats_file), *args],
        env=env, check=True, capture_output=True, timeout=COMMAND_TIMEOUT,
    )  # fmt: skip
    text = format_stats(pstats.Stats(str(stats_file)))
    imports = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "from frappe_celery.cli import main"],
        env=env, check=True, capture_output=True, text=True, timeout=COMMAND_TIMEOUT,
    )  # fmt: skip
    top_level = []
    for line in imports.stderr.splitlines():
        match = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)", line)
        # Only the outermost imports (no indentation): their cumulative times add up.
        if match and len(match.group(3)) == 1:
            top_level.append((int(match.group(2)), match.group(4)))
    top_level.sort(reverse=True)
    rows = "\n".join(f"  {us / 1000:8.1f} ms  {name}" for us, name in top_level[:12])
    return f"{text}\n-X importtime, slowest top-level imports (cumulative):\n{rows}"


@dataclass
class Report:
    """What the run prints (markdown) and what --json writes (raw samples and summaries)."""

    lines: list[str] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)

    def out(self, text: str = "") -> None:
        print(text, flush=True)
        self.lines.append(text)

    def samples(self, part: str, name: str, values: Sequence[float]) -> None:
        self.data.setdefault(part, {})[name] = {"samples": list(values), **summary(values)}


@dataclass
class Options:
    reps: int
    jobs: int
    pending: int
    sites: int
    entries_per_site: int
    fill_procs: int
    parts: list[str]
    profile: bool
    quick: bool
    json_path: str | None


# -- part 1: bytes per pending job ---------------------------------------------------------------


def publish_frappe(n: int) -> None:
    import frappe_celery

    for start in range(0, n, BATCH):
        count = min(BATCH, n - start)
        frappe_celery.enqueue_many([{"method": NOOP, "queue": "default", "x": 1}] * count)


def part_bytes(opts: Options, server: EmbeddedRedis, client: Client, report: Report) -> None:
    import frappe_celery
    from benchmarks.celery_raw import make_app
    from frappe_celery.broker import keys
    from frappe_celery.config import NORMAL_PRIORITY

    raw_app = make_app(server.url, profile="reliable")

    def publish_raw(n: int) -> None:
        for _ in range(n):
            raw_app.send_task(NOOP, kwargs={"x": 1}, queue="default", ignore_result=True)

    frappe_celery.set_job_context(SiteContext(site_name(0)))
    variants: dict[str, Callable[[int], None]] = {
        "frappe-celery": publish_frappe,
        "raw Celery": publish_raw,
    }
    per_job: dict[str, list[float]] = {name: [] for name in variants}
    publish_time: dict[str, list[float]] = {name: [] for name in variants}
    names = list(variants)
    for rep in range(opts.reps):
        for name in names[rep % 2 :] + names[: rep % 2]:  # rotate who goes first
            client.flushall()
            variants[name](3)  # warm-up: scripts, connections, kombu's binding set
            clear_except_bindings(client)
            before = used_memory(client)
            started = time.perf_counter()
            variants[name](opts.jobs)
            publish_time[name].append(time.perf_counter() - started)
            after = used_memory(client)
            pending = sum(client.llen(key) for key in keys.queue_lists("default"))
            if pending != opts.jobs:
                raise RuntimeError(f"{name}: {pending} pending jobs, expected {opts.jobs}")
            per_job[name].append((after - before) / opts.jobs)

    # Sizes of one job of each, from a last filling of each variant.
    client.flushall()
    publish_raw(1)
    raw_message = client.lindex("default", 0) or b""
    client.flushall()
    publish_frappe(1)
    frappe_list = keys.queue_list("default", NORMAL_PRIORITY)
    frappe_message = client.lindex(frappe_list, 0) or b""
    record_key = next(iter(client.scan_iter(match=keys.JOB_PREFIX + "*")))
    record = client.hgetall(record_key)
    record_usage = int(client.memory_usage(record_key, samples=0) or 0)
    record_fields = sum(len(k) + len(v) for k, v in record.items())
    message_copy = len(record.get(b"message", b""))
    # What the record would cost without its copy of the message: a scratch hash with the
    # other fields. Values over hash-max-ziplist-value (64 bytes) turn a hash from a compact
    # ziplist into a hashtable (per-field allocations), so the copy costs more than its length.
    scratch = "bench_scale:record_without_message"
    client.hset(scratch, mapping={k: v for k, v in record.items() if k != b"message"})
    without_copy = int(client.memory_usage(scratch, samples=0) or 0)
    record_encoding = client.object("encoding", record_key).decode()
    scratch_encoding = client.object("encoding", scratch).decode()
    frappe_celery.set_job_context(None)
    client.flushall()

    report.samples("bytes", "frappe_celery_bytes_per_job", per_job["frappe-celery"])
    report.samples("bytes", "raw_celery_bytes_per_job", per_job["raw Celery"])
    report.samples("bytes", "frappe_celery_publish_s", publish_time["frappe-celery"])
    report.samples("bytes", "raw_celery_publish_s", publish_time["raw Celery"])
    ratios = [f / r for f, r in zip(per_job["frappe-celery"], per_job["raw Celery"], strict=True)]
    report.samples("bytes", "ratio_frappe_over_raw", ratios)
    sizes = {
        "raw_celery_message": len(raw_message),
        "frappe_celery_message": len(frappe_message),
        "frappe_celery_record_memory_usage": record_usage,
        "frappe_celery_record_field_bytes": record_fields,
        "frappe_celery_record_message_copy": message_copy,
        "frappe_celery_record_without_message_memory_usage": without_copy,
        "frappe_celery_record_encoding": record_encoding,
        "record_without_message_encoding": scratch_encoding,
        "frappe_celery_record_fields": len(record),
        "frappe_celery_record_key": len(record_key),
    }
    report.data["bytes"]["sizes"] = sizes

    report.out(f"## 1. Redis bytes per pending job ({opts.jobs:,} jobs, {opts.reps} reps)")
    report.out()
    report.out(
        "used_memory after minus before, divided by the job count; variants interleaved, "
        "FLUSHALL before each."
    )
    report.out()
    rows = []
    for name, samples in per_job.items():
        s = summary(samples)
        rows.append([name, f"{s['min']:,.0f}", f"{s['median']:,.0f}", f"{s['max']:,.0f}"])
    r = summary(ratios)
    rows.append(["ratio frappe-celery / raw", f"{r['min']:.2f}x", f"{r['median']:.2f}x",
                 f"{r['max']:.2f}x"])  # fmt: skip
    report.out(markdown_table(["bytes per job", "min", "median", "max"], rows))
    report.out()
    report.out(
        markdown_table(
            ["one job", "bytes"],
            [
                ["raw Celery message (LINDEX)", f"{len(raw_message):,}"],
                ["frappe-celery message (LINDEX)", f"{len(frappe_message):,}"],
                ["frappe-celery record hash (MEMORY USAGE)", f"{record_usage:,}"],
                [
                    f"frappe-celery record: {len(record)} fields, names + values",
                    f"{record_fields:,}",
                ],
                ["... of which the copy of the message", f"{message_copy:,}"],
                ["frappe-celery record hash encoding", record_encoding],
                [
                    f"the same record without the message copy (MEMORY USAGE, {scratch_encoding})",
                    f"{without_copy:,}",
                ],
                ["frappe-celery record key name", f"{len(record_key):,}"],
            ],
        )
    )
    report.out()
    rows = [
        timing_row(f"publish {opts.jobs:,} jobs: {name}", samples, None)[:4]
        for name, samples in publish_time.items()
    ]
    report.out(markdown_table(TIMING_HEADERS[:4], rows))
    report.out()


# -- part 2: a million pending jobs --------------------------------------------------------------


def fill_worker(worker: int, workers: int, batches: int, sites: int, last_batch: int) -> int:
    """Publish every ``workers``-th batch, starting at ``worker`` (runs in a spawned process
    that inherited the benchmark's environment); returns how many jobs it published."""
    import frappe_celery

    frappe_celery.reload_settings()
    context = SiteContext(site_name(0))
    frappe_celery.set_job_context(context)
    published = 0
    for batch in range(worker, batches, workers):
        context.site = site_name(batch % sites)
        queue = QUEUES[batch % len(QUEUES)]
        count = last_batch if batch == batches - 1 else BATCH
        frappe_celery.enqueue_many([{"method": NOOP, "queue": queue, "x": 1}] * count)
        published += count
    return published


def part_pending(opts: Options, client: Client, report: Report) -> None:
    from frappe_celery.broker import keys

    client.flushall()
    before = used_memory(client)
    batches = -(-opts.pending // BATCH)
    last_batch = opts.pending - BATCH * (batches - 1)
    started = time.perf_counter()
    # Spawned, not forked: each filler opens its own connections from a clean interpreter.
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(opts.fill_procs) as pool:
        results = [
            pool.apply_async(fill_worker, (w, opts.fill_procs, batches, opts.sites, last_batch))
            for w in range(opts.fill_procs)
        ]
        published = sum(result.get(timeout=3600) for result in results)
    fill = time.perf_counter() - started
    after = used_memory(client)
    by_queue = {queue: sum(client.llen(key) for key in keys.queue_lists(queue)) for queue in QUEUES}
    if sum(by_queue.values()) != opts.pending or published != opts.pending:
        raise RuntimeError(f"pending by queue {by_queue}, published {published}")
    info = client.info("memory")
    per_job = (after - before) / opts.pending
    report.data["pending"] = {
        "jobs": opts.pending,
        "sites": opts.sites,
        "fill_procs": opts.fill_procs,
        "fill_s": fill,
        "jobs_per_s": opts.pending / fill,
        "used_memory_before": before,
        "used_memory_after": after,
        "used_memory_rss": int(info["used_memory_rss"]),
        "bytes_per_job": per_job,
        "pending_by_queue": by_queue,
        "repetitions": 1,
    }
    report.out(f"## 2. Redis memory with {opts.pending:,} pending jobs (frappe-celery)")
    report.out()
    report.out(
        f"One repetition (the fill is not repeated): {opts.fill_procs} processes publishing "
        f"enqueue_many batches of {BATCH}, {opts.sites} sites, queues "
        + ", ".join(f"{q} {n:,}" for q, n in by_queue.items())
        + "."
    )
    report.out()
    report.out(
        markdown_table(
            ["what", "value"],
            [
                ["fill time", f"{fill:,.1f} s ({opts.pending / fill:,.0f} jobs/s)"],
                ["used_memory, empty", f"{before / 2**20:,.1f} MiB"],
                ["used_memory, filled", f"{after / 2**20:,.1f} MiB ({info['used_memory_human']})"],
                ["used_memory_rss, filled", f"{int(info['used_memory_rss']) / 2**20:,.1f} MiB"],
                ["bytes per pending job", f"{per_job:,.0f}"],
            ],
        )
    )
    report.out()


# -- part 3: `frappe-celery status` at scale -----------------------------------------------------


def hooks_source(entries: int) -> str:
    """A hooks module with ``entries`` scheduler_events entries over every kind of key (each
    listed once, fired for every configured site), defining the functions it names."""
    simple = ["hourly", "daily_long", "weekly", "monthly_long", "yearly", "hourly_maintenance",
              "daily_short", "daily_maintenance"]  # fmt: skip
    events: dict[str, Any] = {key: [] for key in simple}
    cron: dict[str, list[str]] = {}
    for i in range(entries):
        method = f"{HOOKS_MODULE}.noop_{i}"
        if i % 2:
            events[simple[i % len(simple)]].append(method)
        else:
            cron.setdefault(f"{i % 60} {i % 24} * * *", []).append(method)
    events["cron_long"] = cron
    functions = "\n".join(f"def noop_{i}(): pass" for i in range(entries))
    return f"scheduler_events = {events!r}\n\n{functions}\n"


def part_status(
    opts: Options, env: dict[str, str], workdir: Path, client: Client, report: Report
) -> None:
    import frappe_celery
    from frappe_celery.cli.status import collect
    from frappe_celery.ops.monitor import list_jobs

    pending = sum(q["pending"] for q in collect()["queues"])
    command = str(Path(sys.executable).parent / "frappe-celery")
    probe_site = site_name(opts.sites // 2)
    with_schedule = {**env, "FRAPPE_CELERY_HOOKS": HOOKS_MODULE}
    entries = opts.sites * opts.entries_per_site
    variants: dict[str, tuple[list[str], dict[str, str]]] = {
        "`frappe-celery status`": (["status"], env),
        "`frappe-celery status --json`": (["status", "--json"], env),
        "`frappe-celery jobs --limit 50`": (["jobs", "--limit", "50"], env),
        f"`frappe-celery jobs --site {probe_site} --limit 50`": (
            ["jobs", "--site", probe_site, "--limit", "50"],
            env,
        ),
        f"`frappe-celery status`, scheduler on ({entries:,} entries)": (["status"], with_schedule),
    }
    times: dict[str, list[float]] = {name: [] for name in variants}
    in_process: dict[str, list[float]] = {"status: collect()": [], "jobs: list_jobs(limit=50)": []}
    outputs: dict[str, str] = {}
    names = list(variants)
    frappe_celery.reload_settings()
    for rep in range(opts.reps):
        shift = rep % len(names)
        for name in names[shift:] + names[:shift]:  # rotate the order every repetition
            args, variant_env = variants[name]
            started = time.perf_counter()
            done = subprocess.run(
                [command, *args], env=variant_env, check=True, capture_output=True, text=True,
                timeout=COMMAND_TIMEOUT,
            )  # fmt: skip
            times[name].append(time.perf_counter() - started)
            outputs[name] = done.stdout
        started = time.perf_counter()
        collect()
        in_process["status: collect()"].append(time.perf_counter() - started)
        started = time.perf_counter()
        listed = list_jobs(limit=50)
        in_process["jobs: list_jobs(limit=50)"].append(time.perf_counter() - started)
        if len(listed) != 50:
            raise RuntimeError(f"jobs --limit 50 listed {len(listed)} rows")

    # `jobs --site` looks at most scan_limit (10,000) messages per queue: say whether it found
    # the site's jobs when they sit further back.
    site_rows = list_jobs(site=probe_site, limit=50)
    site_pending = opts.pending // opts.sites
    for name, samples in {**times, **in_process}.items():
        report.samples("status", name, samples)
    report.data["status"]["jobs_site_rows_found"] = len(site_rows)
    report.out(f"## 3. `frappe-celery status` with {pending:,} pending jobs, {opts.sites} sites")
    report.out()
    report.out(
        f"Whole commands in a subprocess (interpreter start-up and imports included), "
        f"{opts.reps} reps, variants interleaved; no worker online."
    )
    report.out()
    rows = [timing_row(name, samples, STATUS_TARGET) for name, samples in times.items()]
    rows += [timing_row(f"in-process {n}", s, None) for n, s in in_process.items()]
    report.out(markdown_table(TIMING_HEADERS, rows))
    report.out()
    first_line = outputs[names[0]].splitlines()[:1]
    report.out(f"`status` said: {first_line[0] if first_line else '(nothing)'}")
    report.out()
    missing = len(site_rows) < min(50, site_pending)
    report.out(
        f"`jobs --site {probe_site} --limit 50` listed {len(site_rows)} rows; the site has "
        f"about {site_pending:,} pending jobs"
        + (
            " (missing: list_jobs looks at no more than 10,000 messages per queue, and this "
            "site's batches sit further back in every queue)."
            if missing
            else "."
        )
    )
    report.out()
    if not opts.profile:
        return
    for name, samples in times.items():
        if statistics.median(samples) > STATUS_TARGET:
            args, variant_env = variants[name]
            report.out(f"### Profile: {name} (median {fmt_s(statistics.median(samples))})")
            report.out()
            report.out("```")
            report.out(profile_command(args, variant_env, workdir))
            report.out("```")
            report.out()


# -- part 4: the scheduler at scale --------------------------------------------------------------


def part_scheduler(opts: Options, client: Client, report: Report) -> None:
    import frappe_celery
    from frappe_celery.broker import keys
    from frappe_celery.scheduler.beat import FrappeScheduler
    from frappe_celery.scheduler.entries import build_entries, load_events

    settings = frappe_celery.reload_settings()
    expected = opts.sites * opts.entries_per_site
    events = load_events()
    build = []
    for _ in range(opts.reps):
        started = time.perf_counter()
        entries = build_entries(events, settings)
        build.append(time.perf_counter() - started)
    if len(entries) != expected:
        raise RuntimeError(f"{len(entries)} schedule entries, expected {expected}")

    first, usual, all_due = [], [], []

    def fresh(base: float) -> FrappeScheduler:
        """A new leader on an empty Redis that already ran its first tick at ``base``."""
        client.flushall()
        scheduler = FrappeScheduler(frappe_celery.app)
        started = time.perf_counter()
        scheduler.tick_at(base)
        first.append(time.perf_counter() - started)
        return scheduler

    def make_all_due(scheduler: FrappeScheduler) -> None:
        # As after a long downtime: every entry overdue, each fires once.
        client.hset(keys.SCHEDULER_LAST_RUNS, mapping=dict.fromkeys(scheduler.fields, 0))
        scheduler.next_due = [0.0] * len(scheduler.next_due)

    def pending_jobs() -> int:
        return sum(client.llen(k) for q in QUEUES for k in keys.queue_lists(q))

    # Every entry here is minute-granular: ticks at 20.5 s, 21.5 s and 22.5 s past a minute
    # never cross a minute boundary, so the usual tick really has nothing due.
    base = (time.time() // 60) * 60 + 20.5
    for _ in range(opts.reps):
        scheduler = fresh(base)
        try:
            started = time.perf_counter()
            scheduler.tick_at(base + 1)
            usual.append(time.perf_counter() - started)
            if pending_jobs():
                raise RuntimeError("the usual tick published jobs: something was due")
            make_all_due(scheduler)
            started = time.perf_counter()
            scheduler.tick_at(base + 2)
            all_due.append(time.perf_counter() - started)
            if pending_jobs() != expected:
                raise RuntimeError(f"all-due tick published {pending_jobs()}, expected {expected}")
        finally:
            scheduler.close()

    samples = {
        f"build the schedule ({expected:,} entries)": (build, None),
        "tick, nothing due (the usual tick)": (usual, USUAL_TICK_TARGET),
        f"tick, new leader (reads and seeds {expected:,} last runs)": (first, None),
        f"tick, all {expected:,} entries due ({expected:,} jobs published)": (
            all_due,
            ALL_DUE_TARGET,
        ),
    }
    for name, (values, _) in samples.items():
        report.samples("scheduler", name, values)
    report.out(
        f"## 4. Scheduler: {opts.sites} sites x {opts.entries_per_site} entries = "
        f"{expected:,} entries ({opts.reps} reps)"
    )
    report.out()
    rows = [timing_row(name, values, target) for name, (values, target) in samples.items()]
    report.out(markdown_table(TIMING_HEADERS, rows))
    report.out()
    if not opts.profile:
        return
    if statistics.median(usual) > USUAL_TICK_TARGET:
        scheduler = fresh(base)
        try:
            text = profile_call(lambda: scheduler.tick_at(base + 1))
        finally:
            scheduler.close()
        report.out("### Profile: the usual tick\n\n```\n" + text + "\n```\n")
    if statistics.median(all_due) > ALL_DUE_TARGET:
        scheduler = fresh(base)
        try:
            make_all_due(scheduler)
            text = profile_call(lambda: scheduler.tick_at(base + 2))
        finally:
            scheduler.close()
        report.out("### Profile: the all-due tick\n\n```\n" + text + "\n```\n")
    # The new-leader tick has no target, but its cost is the same croniter work: show it too
    # when the all-due tick missed, so the report says how the two split.
    if statistics.median(all_due) > ALL_DUE_TARGET:
        client.flushall()
        scheduler = FrappeScheduler(frappe_celery.app)
        try:
            text = profile_call(lambda: scheduler.tick_at(base))
        finally:
            scheduler.close()
        report.out("### Profile: the first tick of a new leader\n\n```\n" + text + "\n```\n")


# -- main ----------------------------------------------------------------------------------------

PARTS = ("bytes", "pending", "status", "scheduler")


def parse(argv: list[str] | None) -> Options:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.bench_scale", description=__doc__.split("\n", 1)[0]
    )
    parser.add_argument("-r", "--reps", type=int, help="repetitions (default 5; --quick 2)")
    parser.add_argument("--jobs", type=int, help="K jobs per bytes measurement (default 10,000)")
    parser.add_argument("--pending", type=int, help="pending jobs to fill (default 1,000,000)")
    parser.add_argument("--sites", type=int, help="sites (default 100)")
    parser.add_argument("--entries-per-site", type=int, help="scheduler entries per site (100)")
    parser.add_argument("--fill-procs", type=int, default=2, help="filling processes (2)")
    parser.add_argument(
        "--parts", default=",".join(PARTS), help="comma-separated: " + ",".join(PARTS)
    )
    parser.add_argument("--json", dest="json_path", help="write raw samples and summaries here")
    parser.add_argument("--quick", action="store_true", help="smoke run: small sizes, 2 reps")
    parser.add_argument(
        "--no-profile", action="store_true", help="do not profile measurements missing targets"
    )
    args = parser.parse_args(argv)
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        parser.error(f"unknown parts {unknown}; choose from {', '.join(PARTS)}")
    if "status" in parts and "pending" not in parts:
        parser.error("the status part runs on top of the pending part: add 'pending'")
    quick = bool(args.quick)

    def pick(value: int | None, full: int, small: int) -> int:
        return value if value is not None else (small if quick else full)

    options = Options(
        reps=pick(args.reps, 5, 2),
        jobs=pick(args.jobs, 10_000, 500),
        pending=pick(args.pending, 1_000_000, 20_000),
        sites=pick(args.sites, 100, 10),
        entries_per_site=pick(args.entries_per_site, 100, 20),
        fill_procs=max(1, args.fill_procs),
        parts=[p for p in PARTS if p in parts],
        # A smoke run has no targets to miss worth profiling.
        profile=not (args.no_profile or quick),
        quick=quick,
        json_path=args.json_path,
    )
    if min(options.reps, options.jobs, options.pending, options.sites) < 1:
        parser.error("sizes and repetitions must be at least 1")
    return options


def main(argv: list[str] | None = None) -> int:
    opts = parse(argv)
    started = time.perf_counter()
    workdir = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    # The scheduler's hooks module (and the functions it names) lives in the work folder.
    (workdir / f"{HOOKS_MODULE}.py").write_text(hooks_source(opts.entries_per_site))
    config = workdir / "common_site_config.json"
    # max_queued_jobs 0: no QueueOverloaded, a million jobs must fit in one queue.
    config.write_text(json.dumps({"max_queued_jobs": 0}))
    report = Report()
    report.data["options"] = {k: v for k, v in vars(opts).items()}
    server = EmbeddedRedis(workdir / "redis")
    server.start()
    try:
        sites = ",".join(site_name(i) for i in range(opts.sites))
        env = {
            "FRAPPE_CELERY_BROKER_URL": server.url,
            "FRAPPE_CELERY_SIGNING_KEY": generate_key(),
            "FRAPPE_CELERY_ALLOWED_MODULES": "benchmarks",
            "FRAPPE_CELERY_CONFIG": str(config),
            "FRAPPE_CELERY_SITES": sites,
        }
        os.environ.update(env)
        # The worktree's own frappe_celery and the hooks module, for us and every subprocess.
        paths = [str(REPO_ROOT), str(workdir), os.environ.get("PYTHONPATH", "")]
        os.environ["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
        sys.path[:0] = [str(REPO_ROOT), str(workdir)]
        import frappe_celery

        frappe_celery.reload_settings()
        client: Client = redis.Redis.from_url(server.url)
        report.out(
            f"# frappe-celery at scale ({time.strftime('%Y-%m-%d %H:%M')}, "
            f"{os.cpu_count()} CPUs, Redis {client.info('server')['redis_version']}"
            + (", --quick" if opts.quick else "")
            + ")"
        )
        report.out()
        if "bytes" in opts.parts:
            part_bytes(opts, server, client, report)
        if "pending" in opts.parts:
            part_pending(opts, client, report)
        if "status" in opts.parts:
            part_status(opts, dict(os.environ), workdir, client, report)
        if "scheduler" in opts.parts:
            os.environ["FRAPPE_CELERY_HOOKS"] = HOOKS_MODULE
            part_scheduler(opts, client, report)
        client.close()
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        server.stop()
        # The Redis folder, the hooks module, the config file and any profile: all ours.
        shutil.rmtree(workdir, ignore_errors=True)
    wall = time.perf_counter() - started
    report.out(f"Wall time: {wall:,.1f} s")
    report.data["wall_s"] = wall
    if opts.json_path:
        Path(opts.json_path).write_text(json.dumps(report.data, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
