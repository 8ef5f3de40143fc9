"""Settings: precedence, Frappe's keys and defaults, and the Celery settings derived from them."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from frappe_celery.celery_app import apply_settings, celery_settings
from frappe_celery.config import load_settings
from frappe_celery.errors import ConfigError

from .support.settings import settings_env

pytestmark = pytest.mark.unit  # pure: no Redis, no worker


def write_config(tmp_path: Path, data: dict) -> str:
    path = tmp_path / "common_site_config.json"
    path.write_text(json.dumps(data))
    return str(path)


def test_defaults_are_frappes():
    settings = load_settings({})
    assert dict(settings.queues) == {"short": 300, "default": 300, "long": 1500}
    assert (settings.results_ttl, settings.failure_ttl, settings.failed_jobs_limit) == (
        600,
        7 * 24 * 3600,
        1000,
    )
    assert settings.max_queued_jobs == 500
    assert settings.broker_url == "redis://127.0.0.1:6379/0"
    assert settings.result_backend == settings.broker_url


def test_config_file_adds_custom_queues_and_frappes_keys(tmp_path):
    path = write_config(
        tmp_path,
        {
            "redis_queue": "redis://127.0.0.1:11000",
            "workers": {"reports": {"timeout": 900}, "imports": {}},
            "rq_results_ttl": 60,
            "rq_job_failure_ttl": 3600,
            "rq_failed_jobs_limit": 10,
            "max_queued_jobs": 0,
        },
    )
    settings = load_settings({"FRAPPE_CELERY_CONFIG": path})
    # Built-in queues first, in RQ's order, then the custom ones; 300 s when none is given.
    assert list(settings.queues.items()) == [
        ("short", 300),
        ("default", 300),
        ("long", 1500),
        ("reports", 900),
        ("imports", 300),
    ]
    assert settings.broker_url == "redis://127.0.0.1:11000"
    assert (settings.results_ttl, settings.failure_ttl, settings.failed_jobs_limit) == (
        60,
        3600,
        10,
    )
    assert settings.max_queued_jobs == 0


def test_environment_beats_the_config_file(tmp_path):
    path = write_config(
        tmp_path, {"redis_queue": "redis://file:1/0", "frappe_celery": {"site": "x"}}
    )
    settings = load_settings(
        {
            "FRAPPE_CELERY_CONFIG": path,
            "FRAPPE_CELERY_BROKER_URL": "redis://env:2/0",
            "FRAPPE_CELERY_SITE": "env.site",
            "FRAPPE_CELERY_HOOKS": "myapp.hooks, otherapp.hooks",
        }
    )
    assert settings.broker_url == "redis://env:2/0"
    assert settings.site == "env.site"
    assert settings.hooks_modules == ("myapp.hooks", "otherapp.hooks")
    # Each hooks module's app package may run jobs.
    assert settings.effective_allowed_modules() == ("myapp", "otherapp")


@pytest.mark.parametrize(
    ("data", "named"),
    [
        ({"workers": {"reports": {"timeout": 0}}}, "workers.reports.timeout"),
        ({"workers": {"reports": {"timeout": "soon"}}}, "workers.reports.timeout"),
        ({"workers": {"bad name!": {}}}, "bad name!"),
        ({"rq_results_ttl": -1}, "rq_results_ttl"),
        ({"frappe_celery": {"time_limit_grace": True}}, "time_limit_grace"),
        ({"frappe_celery": []}, "frappe_celery"),
        ({"frappe_celery": {"heartbeat_interval": 0}}, "heartbeat_interval must be more than 0"),
        ({"frappe_celery": {"heartbeat_interval": 61}}, "heartbeat_interval must be 1 to 60"),
        ({"frappe_celery": {"metrics_port": 70000}}, "metrics_port must be a TCP port"),
        ({"frappe_celery": {"metrics_port": "x"}}, "metrics_port must be a whole number"),
    ],
)
def test_malformed_config_names_the_key(tmp_path, data, named):
    path = write_config(tmp_path, data)
    with pytest.raises(ConfigError, match=named.replace("!", "!")):
        load_settings({"FRAPPE_CELERY_CONFIG": path})


def test_missing_config_file_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="no file at"):
        load_settings({"FRAPPE_CELERY_CONFIG": str(tmp_path / "absent.json")})


def test_visibility_timeout_outlasts_the_longest_hard_time_limit(tmp_path):
    path = write_config(
        tmp_path,
        {"workers": {"huge": {"timeout": 7200}}, "frappe_celery": {"time_limit_grace": 60}},
    )
    settings = load_settings({"FRAPPE_CELERY_CONFIG": path})
    derived = celery_settings(settings)
    visibility = derived["broker_transport_options"]["visibility_timeout"]
    assert visibility > 7200 + 60
    assert derived["result_backend_transport_options"]["visibility_timeout"] == visibility


def test_derived_celery_settings_are_the_reliable_ones():
    derived = celery_settings(load_settings({}))
    assert derived["accept_content"] == ["json"]
    assert derived["task_serializer"] == "json"
    assert derived["task_acks_late"] is True
    assert derived["task_reject_on_worker_lost"] is True
    assert derived["worker_prefetch_multiplier"] == 1
    assert derived["task_track_started"] is True
    assert derived["broker_transport_options"]["queue_order_strategy"] == "priority"
    assert [q.name for q in derived["task_queues"]] == ["short", "default", "long"]
    # Pool children are recycled: Frappe code expects a fresh process per job (RQ's fork).
    assert derived["worker_max_tasks_per_child"] == 1000
    assert derived["worker_max_memory_per_child"] == 1024 * 1024


def _app_with_celeryconfig(tmp_path, monkeypatch, source: str):
    from celery import Celery

    # A module name of its own per test: imported modules are cached.
    name = f"celeryconfig_{uuid.uuid4().hex}"
    (tmp_path / f"{name}.py").write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("FRAPPE_CELERY_CELERYCONFIG", name)
    app = Celery("config-test")
    apply_settings(app, load_settings({}))
    return app


def test_celeryconfig_overrides_a_celery_setting(tmp_path, monkeypatch):
    app = _app_with_celeryconfig(tmp_path, monkeypatch, "worker_concurrency = 7\n")
    assert app.conf.worker_concurrency == 7
    assert app.conf.accept_content == ["json"]


def test_celeryconfig_dict_settings_merge_with_the_derived_ones(tmp_path, monkeypatch):
    app = _app_with_celeryconfig(
        tmp_path, monkeypatch, "broker_transport_options = {'unacked_restore_interval': 2}\n"
    )
    options = app.conf.broker_transport_options
    assert options["unacked_restore_interval"] == 2
    assert options["queue_order_strategy"] == "priority"
    assert options["visibility_timeout"] > 1500


def test_celeryconfig_may_name_the_transport_by_its_path_before_the_subpackages(
    tmp_path, monkeypatch
):
    """frappe_celery.transport is an alias of frappe_celery.broker.transport: a celeryconfig
    written for the flat layout names the transport this package sets, and is accepted."""
    app = _app_with_celeryconfig(
        tmp_path, monkeypatch, "broker_transport = 'frappe_celery.transport:Transport'\n"
    )
    assert app.conf.broker_transport == "frappe_celery.broker.transport:Transport"
    with pytest.raises(ConfigError, match="broker_transport"):
        _app_with_celeryconfig(tmp_path, monkeypatch, "broker_transport = 'redis'\n")


def test_celeryconfig_cannot_turn_on_pickle(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="accept_content"):
        _app_with_celeryconfig(tmp_path, monkeypatch, "accept_content = ['json', 'pickle']\n")


def test_celeryconfig_cannot_keep_jobs_running_on_a_lost_connection(tmp_path, monkeypatch):
    """Their messages go back to the queue once Redis answers: they would run twice at once."""
    with pytest.raises(ConfigError, match="worker_cancel_long_running_tasks_on_connection_loss"):
        _app_with_celeryconfig(
            tmp_path, monkeypatch, "worker_cancel_long_running_tasks_on_connection_loss = False\n"
        )


def test_celeryconfig_cannot_set_a_visibility_timeout_below_the_hard_limit(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="visibility_timeout"):
        _app_with_celeryconfig(
            tmp_path,
            monkeypatch,
            "broker_transport_options = {'visibility_timeout': 600}\n",
        )


def test_the_heartbeat_sets_how_fast_a_dead_worker_is_found_and_shown_offline(tmp_path):
    from frappe_celery.broker import recovery, workers

    assert load_settings({}).heartbeat_interval == 5
    path = write_config(tmp_path, {"frappe_celery": {"heartbeat_interval": 3}})
    assert load_settings({"FRAPPE_CELERY_CONFIG": path}).heartbeat_interval == 3
    env = {"FRAPPE_CELERY_CONFIG": path, "FRAPPE_CELERY_HEARTBEAT_INTERVAL": "7"}
    assert load_settings(env).heartbeat_interval == 7
    with settings_env(FRAPPE_CELERY_CONFIG=path):
        # Four heartbeats of life for the liveness key, two more to confirm a death, six to be
        # shown offline.
        assert (recovery.alive_ttl(), recovery.missing_confirmation()) == (12, 6.0)
        assert workers.worker_timeout() == 18.0
