"""Signed messages on a real bench: the key lives in common_site_config.json, and a message
without a valid signature never runs, whatever it names."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from frappe_celery.broker import signing

from ..support.frappe_bench import Bench, publish_unvalidated, wait_for_status

pytestmark = pytest.mark.usefixtures("celery_worker")


def test_the_bench_keeps_its_signing_key_in_common_site_config(bench: Bench, celery_worker):
    conf = json.loads((bench.sites / "common_site_config.json").read_text())
    key = conf["frappe_celery"]["signing_key"]
    assert len(key) >= signing.MIN_KEY_LENGTH
    assert key not in celery_worker.log.read_text(errors="replace")


def test_an_unsigned_message_naming_a_shell_never_runs(site: Any, tmp_path: Path, celery_worker):
    """A forged message, as anyone able to write to the bench's passwordless redis_queue could
    push it, naming Frappe's execute_in_shell: dropped before Celery reads it."""
    marker = tmp_path / "shell-ran"
    job = publish_unvalidated(
        "frappe.utils.execute_in_shell", {"cmd": f"touch {marker}"}, signed=False
    )
    done = wait_for_status(job.id, ("finished", "failed"))
    assert done.get_status() == "failed"
    assert job.refresh()["exc_type"] == "UnsignedMessage", job.exc_info
    assert "it is not signed" in job.exc_info
    assert not marker.exists()
    assert f"(job '{job.id}'): it is not signed" in celery_worker.log.read_text(errors="replace")
    after = site.enqueue("frappe.ping", queue="short")  # the worker goes on
    assert wait_for_status(after.id, ("finished", "failed")).return_value() == "pong"


def test_bench_enable_generates_the_key_a_bench_lacks_without_printing_it(bench: Bench):
    """A bench switched before messages were signed has no key: `frappe-celery bench enable`
    (run again on upgrade, a no-op for the switch) writes one, keeping the rest of the file."""
    import subprocess

    path = bench.sites / "common_site_config.json"
    original = path.read_text()
    conf = json.loads(original)
    del conf["frappe_celery"]["signing_key"]
    path.write_text(json.dumps(conf, indent=1))
    try:
        enabled = subprocess.run(
            [str(bench.bin / "frappe-celery"), "bench", "enable"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert enabled.returncode == 0, enabled.stderr
        written = json.loads(path.read_text())
        key = written["frappe_celery"]["signing_key"]
        assert len(key) >= signing.MIN_KEY_LENGTH
        assert "frappe_celery.signing_key" in enabled.stdout
        assert key not in enabled.stdout + enabled.stderr
        assert {name: value for name, value in written.items() if name != "frappe_celery"} == {
            name: value for name, value in conf.items() if name != "frappe_celery"
        }
    finally:
        path.write_text(original)  # the running worker signs and checks with the first key
