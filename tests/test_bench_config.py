"""A bench read as configuration (no Frappe needed): settings, bad config files, the switch's
refusal where Frappe is not importable."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from frappe_celery.cli import main
from frappe_celery.config import FRAPPE_JOB_CONTEXT, load_settings
from frappe_celery.errors import ConfigError
from frappe_celery.integrations.frappe import switch

from .support.settings import make_bench

pytestmark = pytest.mark.unit  # pure: no Redis, no worker


def bench_settings(sites: Path, **env: str):
    return load_settings({"FRAPPE_CELERY_SITES_PATH": str(sites), **env})


def test_a_bench_is_read_from_its_sites_folder(tmp_path):
    sites = make_bench(
        tmp_path,
        {
            "redis_queue": "redis://127.0.0.1:11000",
            "default_site": "one.local",
            "workers": {"reports": {"timeout": 900}},
            "rq_results_ttl": 60,
        },
    )
    settings = bench_settings(sites)
    assert settings.broker_url == "redis://127.0.0.1:11000"
    assert settings.sites_path == str(sites)
    assert settings.sites == ("one.local", "two.local")
    assert settings.site == "one.local"
    assert settings.queues["reports"] == 900
    assert settings.results_ttl == 60
    # Every app of the bench may run as a job; nothing else.
    assert set(settings.effective_allowed_modules()) == {"frappe", "erpnext"}
    assert settings.job_context == FRAPPE_JOB_CONTEXT
    # Frappe's rule: max_queued_jobs (or 500) plus 50 per site.
    assert settings.max_queued_jobs == 500 + 2 * 50
    assert settings.job_id_style == "v16"


def test_the_current_folder_is_the_bench_when_it_is_a_sites_folder(tmp_path, monkeypatch):
    sites = make_bench(tmp_path, {"redis_queue": "redis://127.0.0.1:11000"})
    monkeypatch.chdir(sites)
    assert load_settings({}).sites_path == str(sites)
    monkeypatch.chdir(tmp_path)
    assert load_settings({}).sites_path is None


def test_frappe_15_benches_get_frappe_15_job_ids(tmp_path):
    sites = make_bench(tmp_path, {"redis_queue": "redis://127.0.0.1:11000"}, version="15.44.2")
    assert bench_settings(sites).job_id_style == "v15"


def test_frappe_15_benches_have_no_queue_limit_unless_their_config_sets_one(tmp_path):
    # Frappe 15.44's enqueue never raises QueueOverloaded; 16's does (_check_queue_size).
    sites = make_bench(tmp_path, {"redis_queue": "redis://127.0.0.1:11000"}, version="15.44.2")
    assert bench_settings(sites).max_queued_jobs == 0
    config = {"redis_queue": "redis://127.0.0.1:11000", "max_queued_jobs": 40}
    (sites / "common_site_config.json").write_text(json.dumps(config))
    assert bench_settings(sites).max_queued_jobs == 40 + 2 * 50


def test_use_rq_auth_puts_frappes_credentials_into_the_broker_url(tmp_path):
    sites = make_bench(
        tmp_path,
        {
            "redis_queue": "redis://127.0.0.1:11000",
            "use_rq_auth": 1,
            "rq_username": "bench-user",
            "rq_password": "s3cret/pw",
        },
    )
    assert bench_settings(sites).broker_url == "redis://bench-user:s3cret%2Fpw@127.0.0.1:11000"


def test_use_rq_auth_without_a_username_uses_the_bench_id(tmp_path):
    sites = make_bench(
        tmp_path,
        {"redis_queue": "redis://127.0.0.1:11000", "use_rq_auth": 1, "rq_password": "pw"},
    )
    bench_id = str(tmp_path.resolve()).strip("/").replace("/", "-")
    assert bench_settings(sites).broker_url == f"redis://{bench_id}:pw@127.0.0.1:11000"


@pytest.mark.parametrize(
    ("config", "named"),
    [
        ("{not json", "is not valid JSON"),
        ("[]", "must hold a JSON object"),
        ({}, "redis_queue"),
        ({"redis_queue": "redis://x", "workers": []}, "'workers'"),
        ({"redis_queue": "redis://x", "workers": {"q": {"timeout": "soon"}}}, "workers.q.timeout"),
        ({"redis_queue": "redis://x", "rq_job_failure_ttl": -1}, "rq_job_failure_ttl"),
        ({"redis_queue": "redis://x", "use_rq_auth": 1}, "rq_password"),
    ],
)
def test_a_malformed_common_site_config_names_the_file_and_the_key(tmp_path, config, named):
    sites = make_bench(tmp_path, config)
    with pytest.raises(ConfigError) as raised:
        bench_settings(sites)
    assert str(sites / "common_site_config.json") in str(raised.value)
    assert named in str(raised.value)


def test_a_sites_path_that_is_no_bench_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="FRAPPE_CELERY_SITES_PATH"):
        bench_settings(tmp_path)


def test_the_switch_refuses_a_python_that_cannot_import_frappe():
    result = CliRunner().invoke(main, ["bench", "enable"])
    assert result.exit_code == 1
    assert "cannot import Frappe" in result.output
    assert not switch.pth_path().exists()


def test_apply_refuses_clearly_where_frappe_is_not_importable():
    with pytest.raises(switch.FrappeNotImportable, match="cannot import it"):
        switch.apply()
    assert not switch.is_applied()


def test_bench_workers_lower_their_cpu_priority_as_frappes_do(tmp_path):
    # Frappe's set_niceness: 10 in a bench unless background_process_niceness says otherwise.
    assert bench_settings(make_bench(tmp_path / "a", {"redis_queue": "redis://x"})).niceness == 10
    configured = {"redis_queue": "redis://x", "background_process_niceness": 3}
    assert bench_settings(make_bench(tmp_path / "b", configured)).niceness == 3
    assert load_settings({}).niceness == 0  # not a bench: left alone
    bad = {"redis_queue": "redis://x", "background_process_niceness": "low"}
    with pytest.raises(ConfigError, match="background_process_niceness"):
        bench_settings(make_bench(tmp_path / "c", bad))
