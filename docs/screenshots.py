"""Draw README's "Operating it" pictures from a real run: `python docs/screenshots.py`.

Starts a redis-server (embedded), a worker (-c 2) and beat on hooks_example.py, the metrics
endpoint and a real Prometheus server (Debian's package, scraping every second), then runs a
mixed load for a few minutes: jobs that finish, fail, retry and time out, a queue nobody
consumes. Then it writes:

* docs/img/top.svg: `frappe-celery top` of that moment (rich's own SVG export of the screen);
* docs/img/dashboard.png: the Grafana dashboard's panels (docs/monitoring/dashboard.json),
  each query run through Prometheus' query_range API and drawn with matplotlib; the rate and
  quantile windows are 1 minute here instead of the dashboard's 5 (the run is short).

Needs the `bench` extra (matplotlib) and `prometheus` on PATH. Nothing asserts: it draws.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

LOAD_SECONDS = float(os.environ.get("SCREENSHOT_LOAD_SECONDS", "240"))


def main() -> int:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from rich.console import Console

    from frappe_celery.broker.signing import generate_key
    from frappe_celery.ops.embedded import EmbeddedRedis, free_port

    prometheus = shutil.which("prometheus")
    if prometheus is None:
        print("prometheus is not installed (apt-get install prometheus)", file=sys.stderr)
        return 1
    work = Path(tempfile.mkdtemp(prefix="frappe-celery-shots-"))
    redis_server = EmbeddedRedis(work / "redis")
    redis_server.start()
    env = {
        **os.environ,
        "FRAPPE_CELERY_BROKER_URL": redis_server.url,
        "FRAPPE_CELERY_SIGNING_KEY": generate_key(),
        "FRAPPE_CELERY_HOOKS": "hooks_example",
        "FRAPPE_CELERY_SITES": "site1.local,site2.local",
        "PYTHONPATH": str(ROOT),
        "FRAPPE_CELERY_CONFIG": str(work / "config.json"),
    }
    # A queue nobody consumes ("reports"): its backlog and oldest age grow.
    (work / "config.json").write_text(json.dumps({"workers": {"reports": {"timeout": 60}}}))
    os.environ.update(env)
    import frappe_celery as frappe
    from frappe_celery import JobContext, set_job_context
    from frappe_celery.errors import QueueOverloaded
    from frappe_celery.ops.top import Filters, read_screen, render

    frappe.reload_settings()
    port, prom_port = free_port(), free_port()
    celery = [sys.executable, "-m", "celery", "-A", "frappe_celery"]
    logs = [(work / f"{name}.log").open("w") for name in ("worker", "beat", "metrics", "prom")]
    config = work / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s}\nscrape_configs:\n  - job_name: frappe_celery\n"
        f"    static_configs: [{{targets: ['127.0.0.1:{port}']}}]\n"
    )
    processes = [
        subprocess.Popen([*celery, "worker", "-Q", "short,default,long", "-c", "2",
                          "--loglevel", "WARNING"], cwd=ROOT, env=env, stdout=logs[0],
                         stderr=subprocess.STDOUT),
        subprocess.Popen([*celery, "beat", "--loglevel", "WARNING"], cwd=ROOT, env=env,
                         stdout=logs[1], stderr=subprocess.STDOUT),
        subprocess.Popen([str(Path(sys.executable).parent / "frappe-celery"), "metrics",
                          "--port", str(port)], cwd=ROOT, env=env, stdout=logs[2],
                         stderr=subprocess.STDOUT),
        subprocess.Popen([prometheus, f"--config.file={config}",
                          f"--storage.tsdb.path={work / 'tsdb'}",
                          f"--web.listen-address=127.0.0.1:{prom_port}"], stdout=logs[3],
                         stderr=subprocess.STDOUT),
    ]  # fmt: skip

    class Site(JobContext):
        def __init__(self, site: str) -> None:
            self.site = site

        def current_site(self) -> str | None:
            return self.site

    started = time.time()
    try:
        time.sleep(5)
        rng = random.Random(7)
        while time.time() - started < LOAD_SECONDS:
            set_job_context(Site(rng.choice(["site1.local", "site2.local"])))
            for _ in range(rng.randint(1, 3)):  # each runs 0.5 s; the worker has 2 slots
                with contextlib.suppress(QueueOverloaded):  # counted "overloaded" if so
                    frappe.enqueue("hooks_example.process_data", queue="short",
                                   customer=f"CUST-{rng.randint(1, 999)}")  # fmt: skip
            if rng.random() < 0.3:
                frappe.enqueue("hooks_example.fail_on_purpose", reason="bad row")
            if rng.random() < 0.2:
                frappe.enqueue("hooks_example.slow_report", queue="long", timeout=2,
                               seconds=rng.choice([0.5, 1.0, 3.0]))  # fmt: skip
            if rng.random() < 0.1:
                frappe.enqueue("hooks_example.flaky_sync", counter_key=f"shots:{time.time()}",
                               failures=1)  # fmt: skip
            if time.time() - started > LOAD_SECONDS / 2 and rng.random() < 0.5:
                # A queue nobody consumes: its backlog and oldest age grow.
                frappe.enqueue("hooks_example.process_data", queue="reports", customer="late")
            time.sleep(rng.uniform(0.5, 1.5))
        set_job_context(None)
        img = ROOT / "docs" / "img"
        img.mkdir(exist_ok=True)
        console = Console(record=True, width=150, file=open(os.devnull, "w"))  # noqa: SIM115
        console.print(render(read_screen(), Filters()))
        console.save_svg(str(img / "top.svg"), title="frappe-celery top")
        draw_dashboard(plt, f"http://127.0.0.1:{prom_port}", started, img / "dashboard.png")
        print(f"wrote {img / 'top.svg'} and {img / 'dashboard.png'}")
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(30)
        redis_server.stop()
    return 0


def draw_dashboard(plt: Any, prometheus: str, started: float, path: Path) -> None:
    board = json.loads((ROOT / "docs" / "monitoring" / "dashboard.json").read_text())
    panels = [p for p in board["panels"] if p["type"] == "timeseries"]
    columns = 3
    rows = (len(panels) + columns - 1) // columns
    figure, axes = plt.subplots(rows, columns, figsize=(18, 3.4 * rows))
    end = time.time()
    for axis, panel in zip(axes.flat, panels, strict=False):
        for target in panel["targets"]:
            expr = target["expr"].replace('=~"$queue"', '=~".*"').replace('=~"$site"', '=~".*"')
            expr = expr.replace("[5m]", "[1m]")
            query = urllib.parse.urlencode({"query": expr, "start": started, "end": end, "step": 5})
            with urllib.request.urlopen(f"{prometheus}/api/v1/query_range?{query}") as reply:
                result = json.loads(reply.read())["data"]["result"]
            for series in result:
                times = [float(t) - started for t, _ in series["values"]]
                values = [float(v) for _, v in series["values"]]
                labels = series["metric"]
                legend = re.sub(r"\{\{(\w+)\}\}", lambda m, labels=labels: labels.get(m[1], ""),
                                target["legendFormat"])  # fmt: skip
                axis.plot(times, values, label=legend)
        axis.set_title(panel["title"])
        axis.set_xlabel("seconds into the run")
        if axis.lines:
            axis.legend(fontsize=7, loc="upper left")
    for axis in list(axes.flat)[len(panels) :]:
        axis.set_visible(False)
    minutes = (end - started) / 60
    figure.suptitle(
        f"frappe-celery dashboard panels (Prometheus query_range, a {minutes:.0f}-minute run)"
    )
    figure.tight_layout()
    figure.savefig(path, dpi=80)


if __name__ == "__main__":
    raise SystemExit(main())
