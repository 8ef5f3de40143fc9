"""The shipped alert rules and Grafana dashboard (frappe_celery/ops/monitoring/, also in
docs/monitoring/): `promtool` checks the rules and runs their tests on recorded series
(tests/monitoring/alerts_test.yml), and every metric name a rule or a dashboard query uses is
one a real endpoint exports."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

import frappe_celery as frappe
from frappe_celery.ops import metrics
from frappe_celery.scheduler import state

from .support.cli import ok
from .support.processes import ROOT, wait_for

MONITORING = ROOT / "frappe_celery" / "ops" / "monitoring"
RULES = MONITORING / "alerts.yml"
DASHBOARD = MONITORING / "dashboard.json"
RULE_TESTS = Path(__file__).parent / "monitoring" / "alerts_test.yml"
METRIC_NAME = re.compile(r"\bfrappe_celery_[a-z_]+\b")


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail(
                "promtool is not installed (Debian's prometheus package; .ci/run installs it)"
            )
        pytest.skip("promtool is not installed (apt-get install prometheus)")
    return found


def test_promtool_checks_the_rules_and_every_alert_fires_on_its_recorded_series() -> None:
    tool = promtool()
    checked = subprocess.run([tool, "check", "rules", str(RULES)], capture_output=True,
                             text=True, timeout=60)  # fmt: skip
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = subprocess.run([tool, "test", "rules", RULE_TESTS.name], cwd=RULE_TESTS.parent,
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout
    # Every alert has a case where it fires (an exp_alerts list that is not empty).
    alerts = set(re.findall(r"- alert: (\w+)", RULES.read_text()))
    firing = set(
        re.findall(r"alertname: (\w+)\n\s+exp_alerts:\n\s+- exp_labels", RULE_TESTS.read_text())
    )
    assert alerts and alerts == firing, alerts ^ firing


def test_the_docs_hold_the_shipped_files_and_the_command_prints_them() -> None:
    for name, path in (("alerts", RULES), ("dashboard", DASHBOARD)):
        assert (ROOT / "docs" / "monitoring" / path.name).read_text() == path.read_text()
        assert ok("metrics", "--print", name).output == path.read_text()


def dashboard_queries() -> list[str]:
    board = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in board["panels"] for t in p.get("targets", [])]
    exprs += [v["definition"] for v in board["templating"]["list"] if v.get("definition")]
    return exprs


def test_every_metric_a_rule_or_a_dashboard_query_names_is_exported(r, shared_worker, start_beat):
    # Every family gets samples: jobs ran (counters, histograms), one waits (per-site pending),
    # a beat passed over the site (scheduler).
    start_beat(FRAPPE_CELERY_HOOKS="tests.jobs.hooks,tests.jobs.hooks_beat")
    job = frappe.enqueue("tests.jobs.add", queue="short", a=1, b=2)
    wait_for(lambda: job.get_status() == "finished", 30)
    frappe.enqueue("tests.jobs.add", queue="batch", a=1, b=2)
    wait_for(lambda: "test.site" in state.read_passes(), 30)
    families = list(text_string_to_metric_families(metrics.render()))
    exported = {sample.name for family in families for sample in family.samples}
    # A gauge with nothing to report (no scheduled job type is late) is still declared.
    exported |= {family.name for family in families if family.type == "gauge"}
    used = {name for text in [RULES.read_text(), *dashboard_queries()]
            for name in METRIC_NAME.findall(text)}  # fmt: skip
    assert used, "no metric names found"
    assert used <= exported, sorted(used - exported)
    # And every panel group the dashboard promises is there.
    titles = {p["title"] for p in json.loads(DASHBOARD.read_text())["panels"]}
    assert {
        "Queues",
        "Latency",
        "Throughput and failures",
        "Workers",
        "Scheduler per site",
    } <= titles
