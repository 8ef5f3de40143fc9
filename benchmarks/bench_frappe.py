"""Drain N Frappe jobs through RQ's workers as Frappe ships them and through frappe-celery.

Run from the repository root with the bench's own Python (it re-executes itself with the
bench's Python when started with another one)::

    $FRAPPE_VENV/bin/python -m benchmarks.bench_frappe [--bench-env ROOT/bench.env] [-n 200]
        [-r 3] [--kinds ping,todo,email] [--quick] [--no-write] [--json FILE]

The bench is a real one (``/work/shared/frappe/make-bench.sh``, described by its ``bench.env``):
its MariaDB, its queue Redis, its site. For every job kind, variant and repetition:

1. **Enqueue with no worker running**: a small script run with the bench's Python in the
   bench's ``sites/`` (``frappe.init(site); frappe.connect(); frappe.enqueue(...)`` N times;
   ``frappe.db.commit()``), with ``FRAPPE_CELERY_SWITCH=off`` for the RQ variants (Frappe's own
   enqueue) and with the bench switch on for Celery. The script checks which enqueue it got and
   records each job's id and the time its enqueue call returned.
2. **Start the workers** (each in its own session, so its whole process group is stopped
   later), wait (bounded) until every job of the batch is finished or failed, stop them
   (SIGTERM, then SIGKILL after a bound).
3. **Read the job records**: RQ's ``started_at``/``ended_at`` (``rq.job.Job.fetch_many``) or
   frappe-celery's (``frappe_celery.Job``). Reported: jobs/s from the first job start to the last
   job end (the drain), jobs/s from the worker spawn to the last job end (with start-up),
   start-up (spawn to first start), the median time inside a job (its start to its end) and the
   p50 of enqueue-return to job start.
4. **Clean up what the batch made**, nothing else: its RQ job keys and registry entries, its
   frappe-celery records, the ToDos it inserted (counted first: one per finished insert).

Variants: two ``bench worker --queue short,default,long`` (RQ, a fork per job), one ``bench
worker-pool --num-workers 2`` with ``FRAPPE_BACKGROUND_WORKERS_NOFORK=1`` (RQ's WorkerPool,
Frappe's experimental no-fork mode; n/a where Frappe does not read that variable), and
``celery -A frappe_celery worker -Q short,default,long -c 2`` started in ``sites/``. Variants
are interleaved (rotating order) inside each repetition; medians and ranges over repetitions.

Job kinds: ``frappe.ping``; a ToDo insert (``frappe.client.insert`` with
``doc={"doctype": "ToDo", "description": "bench-frappe ..."}``); an email queue flush
(``frappe.email.queue.flush``, with an empty queue: its reads and Frappe's job path).

Bytecode: the bench's apps and frappe-celery are byte-compiled first and every process may
write bytecode caches (``PYTHONDONTWRITEBYTECODE`` is dropped), as on a running bench; without
them every worker compiles what it imports, from source, on each start.

The bench switch (``frappe-celery bench enable``) is turned on while the benchmark runs and put
back as found. The benchmark waits (bounded) while another worker consumes the bench's queues:
it would run the benchmark's jobs. Every wait is bounded; ``--time-limit`` aborts and cleans up.
Speed is never asserted anywhere: these are numbers for humans to read.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterable
from contextlib import ExitStack, suppress
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS_FILE = ROOT / "BENCHMARKS.md"
BEGIN = "<!-- bench_frappe:start -->"
END = "<!-- bench_frappe:end -->"
DEFAULT_BENCH_ENV = "/tmp/frappe-bench-root/bench.env"

QUEUES = "short,default,long"
QUEUE = "default"
TODO_PREFIX = "bench-frappe"
RESULT_MARK = "BENCH_FRAPPE_RESULT "
SWITCH_OFF = {"FRAPPE_CELERY_SWITCH": "off"}
RQ_FINAL = {"finished", "failed", "stopped", "canceled"}
CELERY_FINAL = {"finished", "failed", "canceled"}

KINDS = {
    "ping": "frappe.ping",
    "todo": "ToDo insert (frappe.client.insert)",
    "email": "email queue flush (frappe.email.queue.flush)",
}


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# -- the bench -------------------------------------------------------------------------------------


@dataclass
class BenchEnv:
    path: Path  # the bench.env file
    values: dict[str, str]

    @property
    def bench(self) -> Path:
        return Path(self.values["FRAPPE_BENCH"])

    @property
    def sites(self) -> Path:
        return self.bench / "sites"

    @property
    def site(self) -> str:
        return self.values.get("FRAPPE_SITE", "test.local")

    @property
    def venv(self) -> Path:
        return Path(self.values["FRAPPE_VENV"])

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"

    @property
    def bench_cli(self) -> Path | None:
        cli = self.values.get("FRAPPE_BENCH_CLI")
        return Path(cli) if cli and Path(cli).is_file() else None

    @property
    def redis_queue(self) -> str:
        conf = json.loads((self.sites / "common_site_config.json").read_text(encoding="utf-8"))
        return str(conf.get("redis_queue") or self.values["FRAPPE_REDIS_QUEUE"])

    def frappe_source(self, relative: str) -> str:
        return (self.bench / "apps" / "frappe" / relative).read_text(encoding="utf-8")

    @property
    def frappe_version(self) -> str:
        match = re.search(
            r"""__version__\s*=\s*["']([^"']+)""", self.frappe_source("frappe/__init__.py")
        )
        return match.group(1) if match else "?"

    @property
    def has_nofork_pool(self) -> bool:
        """Whether Frappe's worker-pool reads FRAPPE_BACKGROUND_WORKERS_NOFORK (16: yes)."""
        source = self.frappe_source("frappe/utils/background_jobs.py")
        return "FRAPPE_BACKGROUND_WORKERS_NOFORK" in source and "def start_worker_pool" in source

    def apps(self) -> list[str]:
        return (self.sites / "apps.txt").read_text(encoding="utf-8").split()


def read_bench_env(path: str) -> BenchEnv:
    values = {}
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip().strip("'\"")
    missing = [k for k in ("FRAPPE_BENCH", "FRAPPE_VENV") if k not in values]
    if missing:
        raise SystemExit(f"{path}: missing {', '.join(missing)}")
    return BenchEnv(Path(path), values)


def base_env(extra: dict[str, str] | None = None, *, switch_off: bool = False) -> dict[str, str]:
    """This process's environment without frappe-celery's own settings (the bench's apply)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FRAPPE_CELERY_")}
    env.pop("FRAPPE_BACKGROUND_WORKERS_NOFORK", None)
    # A bench's processes read and write bytecode caches (see compile_bytecode).
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONUNBUFFERED"] = "1"
    if switch_off:
        env.update(SWITCH_OFF)
    env.update(extra or {})
    return env


# -- scripts run inside the site -------------------------------------------------------------------

ENQUEUE_SCRIPT = r"""
import json, sys, time
cfg = json.loads(sys.argv[1])
import frappe
frappe.init(cfg["site"], sites_path=cfg["sites_path"])
frappe.connect()
# Frappe 16's frappe.enqueue is background_jobs.enqueue; 15's is a wrapper calling it.
import frappe.utils.background_jobs as background_jobs
where = background_jobs.enqueue.__module__
backend = "celery" if where.startswith("frappe_celery") else "rq"
if backend != cfg["expect"]:
    raise SystemExit(f"background_jobs.enqueue is from {where}, not {cfg['expect']}")
kind, tag = cfg["kind"], cfg["tag"]
ids, stamps = [], []
begin = time.time()
for i in range(cfg["n"]):
    if kind == "ping":
        job = frappe.enqueue("frappe.ping", queue=cfg["queue"])
    elif kind == "todo":
        job = frappe.enqueue(
            "frappe.client.insert", queue=cfg["queue"],
            doc={"doctype": "ToDo", "description": f"{tag} {i}"},
        )
    elif kind == "email":
        job = frappe.enqueue("frappe.email.queue.flush", queue=cfg["queue"])
    else:
        raise SystemExit(f"unknown kind {kind}")
    stamps.append(time.time())
    ids.append(job.id)
frappe.db.commit()
out = {"backend": backend, "ids": ids, "enqueued": stamps, "seconds": time.time() - begin}
frappe.destroy()
print("BENCH_FRAPPE_RESULT " + json.dumps(out), flush=True)
"""

TODO_SCRIPT = r"""
import json, sys
cfg = json.loads(sys.argv[1])
import frappe
frappe.init(cfg["site"], sites_path=cfg["sites_path"])
frappe.connect()
pattern = cfg["pattern"]
count = frappe.db.count("ToDo", {"description": ("like", pattern)})
if cfg["delete"]:
    frappe.db.delete("ToDo", {"description": ("like", pattern)})
    frappe.db.commit()
frappe.destroy()
print("BENCH_FRAPPE_RESULT " + json.dumps({"count": count}), flush=True)
"""


def run_in_site(
    bench: BenchEnv, script: str, cfg: dict[str, Any], env: dict[str, str], timeout: float
) -> dict[str, Any]:
    cfg = {"site": bench.site, "sites_path": str(bench.sites), **cfg}
    try:
        proc = subprocess.run(
            [str(bench.python), "-c", script, json.dumps(cfg)],
            cwd=bench.sites,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as exc:
        raise RuntimeError(f"site script did not finish within {timeout:.0f} s") from exc
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(RESULT_MARK):
            return json.loads(line[len(RESULT_MARK) :])  # type: ignore[no-any-return]
    raise RuntimeError(
        f"site script failed (exit {proc.returncode}):\n"
        f"{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    )


def count_todos(bench: BenchEnv, *, delete: bool) -> int:
    out = run_in_site(
        bench, TODO_SCRIPT, {"pattern": f"{TODO_PREFIX}%", "delete": delete},
        base_env(switch_off=True), timeout=120,
    )  # fmt: skip
    return int(out["count"])


def compile_bytecode(bench: BenchEnv) -> None:
    """Byte-compile the bench's apps and frappe-celery, as a running bench has them.

    pip compiles what it installs into site-packages, but not editable installs (Frappe's apps,
    a development checkout of frappe-celery); a shell with PYTHONDONTWRITEBYTECODE set (some
    CI and sandbox environments) never writes the caches at all, and every worker then compiles
    each module it imports from source: half a second of a worker's start and of each pool
    child's first ToDo insert, on this 2-vCPU machine. Fast when the caches are current.
    """
    targets = [str(bench.bench / "apps"), str(ROOT / "frappe_celery")]
    proc = subprocess.run(
        [str(bench.python), "-m", "compileall", "-q", "-j", "0", *targets],
        capture_output=True, text=True, timeout=600, env=base_env(),
    )  # fmt: skip
    # compileall exits 1 when a file does not compile (a template, Python 2 code in an app):
    # that file is simply never imported.
    if proc.returncode not in (0, 1):
        raise RuntimeError(f"compileall failed: {proc.stderr[-2000:]}")


# -- the switch ------------------------------------------------------------------------------------


def switch_enabled(bench: BenchEnv) -> bool:
    proc = subprocess.run(
        [str(bench.venv / "bin" / "frappe-celery"), "bench", "status"],
        capture_output=True, text=True, timeout=60, env=base_env(),
    )  # fmt: skip
    if proc.returncode not in (0, 1):
        raise RuntimeError(f"frappe-celery bench status failed: {proc.stderr[-2000:]}")
    return proc.returncode == 0


def set_switch(bench: BenchEnv, enabled: bool) -> None:
    proc = subprocess.run(
        [str(bench.venv / "bin" / "frappe-celery"), "bench", "enable" if enabled else "disable"],
        capture_output=True, text=True, timeout=60, env=base_env(),
    )  # fmt: skip
    if proc.returncode != 0:
        raise RuntimeError(f"frappe-celery bench switch failed: {proc.stderr[-2000:]}")
    log(f"  {proc.stdout.strip()}")


# -- worker processes ------------------------------------------------------------------------------


class Workers:
    """Worker processes, each the leader of its own session (its children share its group)."""

    def __init__(self, logdir: Path, label: str) -> None:
        self.logdir = logdir
        self.label = label
        self.procs: list[tuple[subprocess.Popen[bytes], Path, Any]] = []

    def spawn(self, argv: list[str], cwd: Path, env: dict[str, str]) -> None:
        path = self.logdir / f"{self.label}-{len(self.procs)}-{uuid.uuid4().hex[:6]}.log"
        handle = path.open("wb")
        proc = subprocess.Popen(
            argv, cwd=cwd, env=env, stdout=handle, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        self.procs.append((proc, path, handle))

    def processes(self) -> dict[int, str]:
        """Every live process of the workers: their groups and their descendants (RQ's work
        horse calls setsid, so it leaves the group), as pid -> start time (from /proc)."""
        table: dict[int, tuple[int, int, str]] = {}  # pid -> (ppid, pgrp, start time)
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                with suppress(OSError, IndexError, ValueError):
                    stat = (entry / "stat").read_text()
                    fields = stat[stat.rindex(")") + 2 :].split()
                    table[int(entry.name)] = (int(fields[1]), int(fields[2]), fields[19])
        leaders = {proc.pid for proc, _, _ in self.procs}
        found = {pid for pid, (_, pgrp, _) in table.items() if pgrp in leaders or pid in leaders}
        for _ in range(10):  # descendants, a few levels deep
            more = {pid for pid, (ppid, _, _) in table.items() if ppid in found} - found
            if not more:
                break
            found |= more
        return {pid: table[pid][2] for pid in found}

    def pids(self) -> set[int]:
        return set(self.processes())

    def check_alive(self) -> None:
        for proc, path, _ in self.procs:
            if proc.poll() is not None:
                tail = path.read_text(errors="replace")[-3000:]
                raise RuntimeError(f"{self.label} worker exited early ({proc.returncode}):\n{tail}")

    def log_tail(self, chars: int = 2000) -> str:
        return "\n".join(
            f"--- {path.name}\n{path.read_text(errors='replace')[-chars:]}"
            for _, path, _ in self.procs
        )

    def stop(self, term_wait: float = 20, kill_wait: float = 10) -> None:
        """SIGTERM each leader (a warm shutdown: the running job ends), then the whole group;
        SIGKILL what is left after ``term_wait``."""
        seen = self.processes()
        for proc, _, _ in self.procs:
            if proc.poll() is None:
                with suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + term_wait
        for proc, _, _ in self.procs:
            with suppress(subprocess.TimeoutExpired):
                proc.wait(max(0.1, deadline - time.monotonic()))
        for proc, _, handle in self.procs:
            if proc.poll() is None:
                log(
                    f"  {self.label}: pid {proc.pid} still running after SIGTERM; killing its group"
                )
            for sig in (signal.SIGTERM, signal.SIGKILL):
                with suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, sig)
                with suppress(subprocess.TimeoutExpired):
                    proc.wait(kill_wait if sig == signal.SIGKILL else 2)
            handle.close()
        for pid, started in seen.items():  # an orphaned work horse, say
            with suppress(OSError, IndexError):
                stat = Path(f"/proc/{pid}/stat").read_text()
                if stat[stat.rindex(")") + 2 :].split()[19] == started:
                    os.kill(pid, signal.SIGKILL)
        self.procs.clear()


# -- variants --------------------------------------------------------------------------------------


class Variant:
    key = ""
    label = ""
    backend = "rq"

    def __init__(self, bench: BenchEnv) -> None:
        self.bench = bench
        self.node = ""

    def available(self) -> str | None:
        """None, or why this variant cannot run on this bench."""
        return None

    def frappe_cmd(self, *args: str) -> tuple[list[str], Path]:
        """``bench ARGS`` as a bench runs it (the bench CLI execs
        ``python -m frappe.utils.bench_helper frappe ARGS`` in sites/); without the CLI, that."""
        cli = self.bench.bench_cli
        if cli is not None:
            return [str(cli), *args], self.bench.bench
        return [
            str(self.bench.python),
            "-m",
            "frappe.utils.bench_helper",
            "frappe",
            *args,
        ], self.bench.sites

    def start(self, workers: Workers) -> None:
        raise NotImplementedError


class BenchWorkers(Variant):
    key = "rq_fork"
    label = "2 x bench worker (RQ, fork per job)"

    def start(self, workers: Workers) -> None:
        argv, cwd = self.frappe_cmd("worker", "--queue", QUEUES)
        for _ in range(2):
            workers.spawn(argv, cwd, base_env(switch_off=True))


class NoForkPool(Variant):
    key = "rq_pool"
    label = "bench worker-pool --num-workers 2, NOFORK=1"

    def available(self) -> str | None:
        if not self.bench.has_nofork_pool:
            return "this Frappe's worker-pool does not read FRAPPE_BACKGROUND_WORKERS_NOFORK"
        return None

    def start(self, workers: Workers) -> None:
        argv, cwd = self.frappe_cmd("worker-pool", "--num-workers", "2", "--queue", QUEUES)
        env = base_env({"FRAPPE_BACKGROUND_WORKERS_NOFORK": "1"}, switch_off=True)
        workers.spawn(argv, cwd, env)


class CeleryWorker(Variant):
    key = "celery"
    label = "celery -A frappe_celery worker -c 2"
    backend = "celery"

    def start(self, workers: Workers) -> None:
        self.node = f"bench-frappe-{uuid.uuid4().hex[:8]}"
        argv = [
            str(self.bench.venv / "bin" / "celery"), "-A", "frappe_celery", "worker",
            "-Q", QUEUES, "-c", "2", "--loglevel", "WARNING", "-n", f"{self.node}@%h",
        ]  # fmt: skip
        workers.spawn(argv, self.bench.sites, base_env())


VARIANTS: list[type[Variant]] = [BenchWorkers, NoForkPool, CeleryWorker]


# -- Redis: polling, records, clean-up -------------------------------------------------------------


class Store:
    """The bench's queue Redis, RQ's and frappe-celery's records in it."""

    def __init__(self, bench: BenchEnv) -> None:
        import redis

        self.bench = bench
        self.conn = redis.Redis.from_url(bench.redis_queue, socket_timeout=30)
        os.environ["FRAPPE_CELERY_SITES_PATH"] = str(bench.sites)
        import frappe_celery

        frappe_celery.reload_settings()

    def close(self) -> None:
        self.conn.close()

    # -- who else is consuming
    def foreign_workers(self, mine: set[int], my_node: str = "") -> list[str]:
        from rq.worker import Worker

        found = []
        for worker in Worker.all(connection=self.conn):
            if worker.pid not in mine:
                found.append(f"RQ {worker.name} (pid {worker.pid})")
        now = time.time()
        for name, raw in self.conn.hgetall("frappe_celery:workers").items():
            node = name.decode()
            with suppress(ValueError, TypeError):
                beat = json.loads(raw)
                seen = float(beat.get("last_heartbeat") or 0)
                if now - seen < 30 and not (my_node and node.startswith(my_node)):
                    found.append(f"Celery {node} (pid {beat.get('pid')})")
        return found

    def others_queued(self, backend: str, ids: list[str]) -> int:
        """Jobs waiting in the bench's queues besides the batch (our workers will run them)."""
        if backend == "rq":
            mine = {i.encode() for i in ids}
            return sum(
                sum(1 for item in self.conn.lrange(key, 0, -1) if item not in mine)
                for key in self._scan("rq:queue:*")
            )
        from frappe_celery.broker import keys

        total = sum(self.conn.llen(name) for q in QUEUES.split(",") for name in keys.queue_lists(q))
        return max(0, int(total) - len(ids))

    # -- statuses
    def statuses(self, backend: str, ids: list[str]) -> list[str | None]:
        prefix = "rq:job:" if backend == "rq" else "frappe_celery:job:"
        with self.conn.pipeline(transaction=False) as pipe:
            for job_id in ids:
                pipe.hget(prefix + job_id, "status")
            return [v.decode() if v else None for v in pipe.execute()]

    def records(self, backend: str, ids: list[str]) -> list[dict[str, Any]]:
        """Per job: status, started/ended (epoch s), worker, error (first line)."""
        out: list[dict[str, Any]] = []
        if backend == "rq":
            from rq.job import Job as RQJob

            def epoch(value: dt.datetime | None) -> float | None:
                if value is None:
                    return None
                if value.tzinfo is None:
                    value = value.replace(tzinfo=dt.timezone.utc)
                return value.timestamp()

            for start in range(0, len(ids), 100):
                for job in RQJob.fetch_many(ids[start : start + 100], connection=self.conn):
                    if job is None:
                        out.append({"status": None})
                        continue
                    status = job.get_status(refresh=False)
                    error = None
                    if status == "failed":
                        with suppress(Exception):
                            error = (job.exc_info or "").strip().splitlines()[-1]
                    out.append(
                        {
                            "status": str(getattr(status, "value", status)),
                            "started": epoch(job.started_at),
                            "ended": epoch(job.ended_at),
                            "worker": job.worker_name,
                            "error": error,
                        }
                    )
            return out
        from frappe_celery import Job

        for job_id in ids:
            job = Job(job_id)
            record = job.refresh()
            if not record:
                out.append({"status": None})
                continue
            started, ended = job.started_at, job.ended_at
            error = None
            if record.get("status") == "failed":
                error = (job.exc_info or record.get("exc_type") or "").strip().splitlines()[
                    -1:
                ] or None
                error = error[0] if error else None
            out.append(
                {
                    "status": record.get("status"),
                    "started": started.timestamp() if started else None,
                    "ended": ended.timestamp() if ended else None,
                    "worker": record.get("worker"),
                    "error": error,
                }
            )
        return out

    # -- clean-up of one batch
    def cleanup(self, backend: str, ids: list[str]) -> None:
        if not ids:
            return
        mine = set(ids)
        if backend == "rq":
            self._cleanup_rq(mine)
        else:
            self._cleanup_celery(mine)

    def _scan(self, pattern: str) -> list[bytes]:
        return list(self.conn.scan_iter(match=pattern, count=1000))

    def _cleanup_rq(self, mine: set[str]) -> None:
        doomed = []
        encoded = [i.encode() for i in mine]
        with self.conn.pipeline(transaction=False) as pipe:
            for key in self._scan("rq:*"):
                name = key.decode(errors="replace")
                if any(job_id in name for job_id in mine):
                    doomed.append(key)  # rq:job:ID, rq:results:ID, rq:executions:ID, ...
                    continue
                kind = self.conn.type(key)
                if kind == b"zset":
                    for start in range(0, len(encoded), 500):
                        pipe.zrem(key, *encoded[start : start + 500])
                elif kind == b"list" and name.startswith("rq:queue:"):
                    for job_id in encoded:
                        pipe.lrem(key, 0, job_id)
            for start in range(0, len(doomed), 500):
                pipe.unlink(*doomed[start : start + 500])
            pipe.execute()

    def _cleanup_celery(self, mine: set[str]) -> None:
        from frappe_celery import Job

        # Anything still queued (a run that timed out): take its message off the queue.
        for job_id, status in zip(sorted(mine), self.statuses("celery", sorted(mine)), strict=True):
            if status == "queued":
                with suppress(Exception):
                    Job(job_id).cancel()
        # Messages held by a killed worker would be restored later and run on someone's worker.
        for tag, raw in self.conn.hgetall("unacked").items():
            with suppress(ValueError, TypeError, IndexError, KeyError):
                message = json.loads(raw)[0]
                if message.get("headers", {}).get("id") in mine:
                    self.conn.hdel("unacked", tag)
                    self.conn.zrem("unacked_index", tag)
        encoded = [i.encode() for i in mine]
        with self.conn.pipeline(transaction=False) as pipe:
            for key in self._scan("frappe_celery:*"):
                name = key.decode(errors="replace")
                if name.startswith("frappe_celery:job:"):
                    if name[len("frappe_celery:job:") :] in mine:
                        pipe.unlink(key)
                elif re.match(r"frappe_celery:(finished|failed|started|canceled|scheduled):", name):
                    for start in range(0, len(encoded), 500):
                        pipe.zrem(key, *encoded[start : start + 500])
            pipe.execute()


# -- one run ---------------------------------------------------------------------------------------


@dataclass
class Run:
    variant: str
    kind: str
    rep: int
    n: int
    enqueue_s: float
    drain_rate: float  # jobs/s, first start -> last end
    total_rate: float  # jobs/s, worker spawn -> last end
    startup_s: float  # worker spawn -> first start
    latency_p50_s: float  # enqueue return -> start
    in_job_ms: float  # median of (end - start)
    finished: int
    failed: int
    lost: int
    foreign: int
    errors: list[str] = field(default_factory=list)
    todos: int | None = None


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def wait_drained(
    store: Store, backend: str, ids: list[str], workers: Workers, timeout: float
) -> list[str | None]:
    deadline = time.monotonic() + timeout
    final = RQ_FINAL if backend == "rq" else CELERY_FINAL
    while True:
        statuses = store.statuses(backend, ids)
        if all(s in final or s is None for s in statuses):
            return statuses
        if time.monotonic() > deadline:
            return statuses
        workers.check_alive()
        time.sleep(0.2)


def wait_no_foreign(store: Store, wait: float) -> None:
    deadline = time.monotonic() + wait
    warned = False
    while True:
        foreign = store.foreign_workers(set())
        if not foreign:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"other workers consume this bench's queues and would run the benchmark's jobs: "
                f"{', '.join(foreign)}; stop them (or raise --wait-foreign)"
            )
        if not warned:
            log(f"  waiting up to {wait:.0f} s for other workers to stop: {', '.join(foreign)}")
            warned = True
        time.sleep(2)


def run_once(
    bench: BenchEnv,
    store: Store,
    cls: type[Variant],
    kind: str,
    rep: int,
    args: argparse.Namespace,
    logdir: Path,
) -> Run:
    variant = cls(bench)
    wait_no_foreign(store, args.wait_foreign)
    tag = f"{TODO_PREFIX} {variant.key} r{rep}"
    env = base_env(switch_off=variant.backend == "rq")
    out = run_in_site(
        bench, ENQUEUE_SCRIPT,
        {"n": args.n, "kind": kind, "tag": tag, "queue": QUEUE, "expect": variant.backend},
        env, timeout=120 + args.n * 0.1,
    )  # fmt: skip
    ids: list[str] = out["ids"]
    enqueued: list[float] = out["enqueued"]
    others = store.others_queued(variant.backend, ids)
    workers = Workers(logdir, variant.key)
    statuses: list[str | None] = []
    foreign_names: list[str] = []
    try:
        spawned = time.time()
        variant.start(workers)
        statuses = wait_drained(store, variant.backend, ids, workers, args.drain_timeout)
        foreign_names = store.foreign_workers(workers.pids(), variant.node)
    except BaseException:
        log(workers.log_tail())
        workers.stop()
        store.cleanup(variant.backend, ids)
        raise
    workers.stop()
    records = store.records(variant.backend, ids)
    store.cleanup(variant.backend, ids)
    todos = None
    if kind == "todo":
        todos = count_todos(bench, delete=True)
    done = [
        (e, r)
        for e, r in zip(enqueued, records, strict=True)
        if r.get("started") and r.get("ended")
    ]
    finished = sum(1 for r in records if r.get("status") == "finished")
    failed = sum(1 for r in records if r.get("status") == "failed")
    if variant.backend == "celery":
        foreign = sum(
            1 for r in records if r.get("worker") and not str(r["worker"]).startswith(variant.node)
        )
    else:
        foreign = len(foreign_names)  # RQ: names of workers that were not ours, seen at the end
    errors = sorted({str(r["error"]) for r in records if r.get("error")})
    not_final = sum(1 for s in statuses if s not in (RQ_FINAL | CELERY_FINAL))
    if not_final:
        errors.append(
            f"{not_final} jobs not done within --drain-timeout {args.drain_timeout:.0f} s"
        )
    if others:
        errors.append(f"{others} other jobs were queued too")
    if foreign_names:
        errors.append(f"other workers were consuming: {', '.join(foreign_names)}")
    if not done:
        raise RuntimeError(f"{variant.key}/{kind}: no job ran: {errors}\n{workers.log_tail()}")
    first_start = min(r["started"] for _, r in done)
    last_end = max(r["ended"] for _, r in done)
    return Run(
        variant=variant.key,
        kind=kind,
        rep=rep,
        n=len(ids),
        enqueue_s=float(out["seconds"]),
        drain_rate=len(done) / max(last_end - first_start, 1e-9),
        total_rate=len(done) / max(last_end - spawned, 1e-9),
        startup_s=first_start - spawned,
        latency_p50_s=percentile([r["started"] - e for e, r in done], 0.5),
        in_job_ms=statistics.median((r["ended"] - r["started"]) * 1000 for _, r in done),
        finished=finished,
        failed=failed,
        lost=len(ids) - finished - failed,
        foreign=foreign,
        errors=errors,
        todos=todos,
    )


# -- report ----------------------------------------------------------------------------------------


def versions(bench: BenchEnv, load_before: float, wall: float) -> dict[str, str]:
    def v(dist: str) -> str:
        try:
            return version(dist)
        except PackageNotFoundError:
            return "not installed"

    try:
        commit = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True, text=True, timeout=10,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        commit = "?"
    cpu = "?"
    with suppress(OSError):
        match = re.search(r"model name\s*:\s*(.+)", Path("/proc/cpuinfo").read_text())
        cpu = match.group(1).strip() if match else "?"
    return {
        "date (UTC)": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M"),
        "machine": f"{os.cpu_count()} vCPUs, {cpu}, {platform.system()} {platform.release()}",
        "Frappe": f"{bench.frappe_version} ({bench.bench}, site {bench.site})",
        "python": platform.python_version(),
        "frappe-celery": f"{v('frappe-celery')} (git {commit or '?'}, working tree as run)",
        "celery / kombu / billiard": f"{v('celery')} / {v('kombu')} / {v('billiard')}",
        "rq / redis-py / hiredis": f"{v('rq')} / {v('redis')} / {v('hiredis')}",
        "benchmark wall time": f"{wall:.0f} s",
        "load average (1 min) before / after": f"{load_before:.2f} / {os.getloadavg()[0]:.2f}",
    }


def fmt_range(values: list[float], spec: str) -> str:
    med = statistics.median(values)
    if len(values) == 1:
        return format(med, spec)
    return f"{format(med, spec)} ({format(min(values), spec)}-{format(max(values), spec)})"


def render(
    bench: BenchEnv,
    meta: dict[str, str],
    args: argparse.Namespace,
    runs: list[Run],
    skipped: dict[str, str],
) -> str:
    from tabulate import tabulate

    labels = {cls.key: cls.label for cls in VARIANTS}
    major = bench.frappe_version.split(".")[0]
    rows = []
    medians: dict[tuple[str, str], float] = {}
    for kind in args.kinds:
        for cls in VARIANTS:
            mine = [r for r in runs if r.variant == cls.key and r.kind == kind]
            if not mine:
                if cls.key in skipped:
                    rows.append(
                        [KINDS[kind], labels[cls.key], "n/a", "", "", "", "", "", skipped[cls.key]]
                    )
                continue
            medians[(cls.key, kind)] = statistics.median(r.drain_rate for r in mine)
            notes = []
            failed, lost, foreign = (
                sum(getattr(r, a) for r in mine) for a in ("failed", "lost", "foreign")
            )
            if failed:
                notes.append(f"{failed} failed")
            if lost:
                notes.append(f"{lost} lost/not done")
            if foreign:
                notes.append(f"{foreign} run by other workers")
            todo_runs = [r for r in mine if r.todos is not None]
            if todo_runs and any(r.todos != r.finished for r in todo_runs):
                notes.append("ToDos found: " + "/".join(str(r.todos) for r in todo_runs))
            for error in sorted({e for r in mine for e in r.errors})[:2]:
                notes.append(error[:120])
            rows.append(
                [
                    KINDS[kind],
                    labels[cls.key],
                    fmt_range([r.drain_rate for r in mine], ".1f"),
                    fmt_range([r.total_rate for r in mine], ".1f"),
                    fmt_range([r.startup_s for r in mine], ".1f"),
                    fmt_range([r.latency_p50_s for r in mine], ".1f"),
                    fmt_range([r.in_job_ms for r in mine], ".1f"),
                    f"{statistics.median(r.enqueue_s for r in mine):.2f}",
                    "; ".join(notes) or "-",
                ]
            )
    ratio_rows = []
    for kind in args.kinds:
        celery = medians.get(("celery", kind))
        fork = medians.get(("rq_fork", kind))
        pool = medians.get(("rq_pool", kind))

        def ratio(base: float | None, target: float, celery: float | None = celery) -> str:
            if celery is None or base is None:
                return "n/a"
            value = celery / base
            return f"{value:.2f} ({'meets' if value >= target else 'misses'} ≥ {target:g})"

        ratio_rows.append([KINDS[kind], ratio(fork, 4.0), ratio(pool, 1.0)])
    out = [
        f"### Frappe {major}: {args.n} jobs per batch, {args.rounds} repetitions",
        "",
        tabulate(list(meta.items()), headers=["", ""], tablefmt="github"),
        "",
        tabulate(
            rows,
            headers=[
                "job",
                "workers",
                "jobs/s, drain",
                "jobs/s, with start-up",
                "start-up s",
                "enqueue→start p50 s",
                "in-job ms",
                "enqueue s",
                "notes",
            ],
            tablefmt="github",
            disable_numparse=True,
        ),
        "",
        "Medians over repetitions, (min-max) in brackets. Drain: N / (last job end - first job "
        "start); with start-up: N / (last job end - worker spawn). Start-up: spawn to first job "
        "start. Enqueue→start p50: from the return of the job's `frappe.enqueue` (all N queued "
        "before any worker starts) to its start, so it includes start-up and the wait behind "
        "the batch. In-job: median of a job's start to its end as the job record says (RQ: "
        "inside the work horse, fork excluded; frappe-celery: between its START and FINISH "
        "records). Enqueue s: the N `frappe.enqueue` calls of the enqueuing script.",
        "",
        tabulate(
            ratio_rows,
            headers=[
                "job",
                "Celery / 2 x bench worker (target ≥ 4)",
                "Celery / no-fork pool (target ≥ 1)",
            ],
            tablefmt="github",
            disable_numparse=True,
        ),
        "",
        "Ratios of median drain jobs/s.",
    ]
    return "\n".join(out) + "\n"


def write_results(block: str, major: str) -> None:
    """Replace this Frappe version's block inside the generated section, keep the others."""
    sub_begin = f"<!-- bench_frappe:frappe-{major} -->"
    sub_end = f"<!-- bench_frappe:frappe-{major} end -->"
    mine = f"{sub_begin}\n\n{block}\n{sub_end}"
    text = RESULTS_FILE.read_text(encoding="utf-8") if RESULTS_FILE.exists() else "# Benchmarks\n"
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        inner, tail = rest.split(END, 1)
    else:
        head, inner, tail = text.rstrip("\n") + "\n\n", "", "\n"
    pattern = r"<!-- bench_frappe:frappe-(\d+) -->.*?<!-- bench_frappe:frappe-\1 end -->"
    blocks = {m.group(1): m.group(0) for m in re.finditer(pattern, inner, re.S)}
    blocks[major] = mine
    body = "\n\n".join(blocks[k] for k in sorted(blocks, key=int, reverse=True))
    RESULTS_FILE.write_text(f"{head}{BEGIN}\n\n{body}\n\n{END}{tail}", encoding="utf-8")


# -- main ------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bench-env", default=DEFAULT_BENCH_ENV, help=f"({DEFAULT_BENCH_ENV})")
    parser.add_argument("-n", type=int, default=200, help="jobs per batch (200)")
    parser.add_argument("-r", "--rounds", type=int, default=3, help="repetitions (3)")
    parser.add_argument("--kinds", default="ping,todo,email", help="job kinds (ping,todo,email)")
    parser.add_argument(
        "--variants", default="rq_fork,rq_pool,celery", help="(rq_fork,rq_pool,celery)"
    )
    parser.add_argument("--drain-timeout", type=float, default=300, help="per batch, s (300)")
    parser.add_argument(
        "--wait-foreign", type=float, default=300,
        help="wait this long for other workers on the bench's queues to stop (300 s)",
    )  # fmt: skip
    parser.add_argument("--json", help="also write every run's figures to this file")
    parser.add_argument("--no-write", action="store_true", help="do not update BENCHMARKS.md")
    parser.add_argument("--quick", action="store_true", help="smoke run: -n 20 -r 1, no write")
    parser.add_argument("--time-limit", type=int, default=1800, help="abort after this many s")
    args = parser.parse_args(argv)
    if args.quick:
        args.n, args.rounds, args.no_write = 20, 1, True
    args.kinds = [k for k in args.kinds.split(",") if k]
    unknown = [k for k in args.kinds if k not in KINDS]
    if unknown:
        parser.error(f"unknown kinds {unknown}; choose from {list(KINDS)}")
    keys = {cls.key for cls in VARIANTS}
    args.variants = [v for v in args.variants.split(",") if v]
    if set(args.variants) - keys:
        parser.error(f"unknown variants; choose from {sorted(keys)}")
    if not 1 <= args.n <= 500:
        parser.error("-n: 1 to 500 (Frappe's and frappe-celery's max_queued_jobs default is 500)")
    return args


def reexec_with_bench_python(bench: BenchEnv) -> None:
    """RQ's and Frappe's versions must be the bench's: run under the bench's interpreter."""
    if Path(sys.prefix).resolve() != bench.venv.resolve():
        log(f"re-running with the bench's Python {bench.python}")
        os.execv(
            str(bench.python), [str(bench.python), "-m", "benchmarks.bench_frappe", *sys.argv[1:]]
        )


def _abort(signum: int, frame: Any) -> None:
    raise SystemExit(f"aborted by signal {signum}; cleaning up")


def _overtime(signum: int, frame: Any) -> None:
    raise TimeoutError("benchmark exceeded --time-limit; cleaning up")


def interleave(items: list[Any], rep: int) -> Iterable[Any]:
    shift = rep % len(items)
    return items[shift:] + items[:shift]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    bench = read_bench_env(args.bench_env)
    reexec_with_bench_python(bench)
    signal.signal(signal.SIGTERM, _abort)
    signal.signal(signal.SIGALRM, _overtime)
    signal.alarm(args.time_limit)
    started = time.monotonic()
    load_before = os.getloadavg()[0]
    log(
        f"Frappe {bench.frappe_version} at {bench.bench}, site {bench.site}; "
        f"N={args.n}, r={args.rounds}"
    )
    variants: list[type[Variant]] = [cls for cls in VARIANTS if cls.key in args.variants]
    skipped = {}
    for cls in list(variants):
        reason = cls(bench).available()
        if reason:
            skipped[cls.key] = reason
            variants.remove(cls)
            log(f"  {cls.key}: n/a ({reason})")
    runs: list[Run] = []
    with ExitStack() as stack:
        logdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-frappe-")))
        was_enabled = switch_enabled(bench)
        if not was_enabled:
            set_switch(bench, True)
            stack.callback(set_switch, bench, False)  # put it back as found
        compile_bytecode(bench)
        store = Store(bench)
        stack.callback(store.close)
        leftovers = count_todos(bench, delete=True)
        if leftovers:
            log(f"  deleted {leftovers} ToDos left by an earlier run")
        stack.callback(count_todos, bench, delete=True)
        for rep in range(args.rounds):
            for kind in args.kinds:
                for cls in interleave(variants, rep):
                    run = run_once(bench, store, cls, kind, rep, args, logdir)
                    runs.append(run)
                    log(
                        f"  r{rep + 1}/{args.rounds} {kind:5} {cls.key:8} "
                        f"drain {run.drain_rate:6.1f}/s "
                        f"with start-up {run.total_rate:6.1f}/s start-up {run.startup_s:4.1f} s "
                        f"p50 {run.latency_p50_s:5.1f} s in-job {run.in_job_ms:6.1f} ms "
                        f"ok {run.finished} failed {run.failed} lost {run.lost}"
                        + (f"  [{'; '.join(run.errors)[:300]}]" if run.errors else "")
                    )
    signal.alarm(0)
    meta = versions(bench, load_before, time.monotonic() - started)
    block = render(bench, meta, args, runs, skipped)
    print(block)
    if args.json:
        dump = {"meta": meta, "skipped": skipped, "runs": [run.__dict__ for run in runs]}
        Path(args.json).write_text(json.dumps(dump, indent=1), encoding="utf-8")
    if not args.no_write:
        write_results(block, bench.frappe_version.split(".")[0])
        log(f"results written to {RESULTS_FILE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
