"""A broker behind Redis Sentinel: one master, one replica, three sentinels, reached through
``sentinel://:password@host:port;sentinel://...`` with the master name in the sentinel_master
setting. Enqueue, a real worker, a real beat and every CLI command work through it; the password
appears in none of their output. (Failover under load: tests/test_sentinel_failover.py.)"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import frappe_celery as frappe
from frappe_celery.broker import keys
from frappe_celery.config import load_settings
from frappe_celery.connection import make_client
from frappe_celery.errors import ConfigError, NotReplicated
from frappe_celery.urls import redact_url

from .support.broker_tour import assert_never_shown, tour
from .support.processes import wait_for
from .support.sentinel import MASTER_NAME, PASSWORD, SentinelCluster, sentinel_env
from .support.settings import settings_env


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SentinelCluster]:
    cluster = SentinelCluster(tmp_path_factory.mktemp("sentinel"))
    yield cluster
    cluster.stop()


def test_enqueue_worker_beat_and_every_command_work_through_sentinel_without_the_password(
    cluster, start_worker, start_beat
):
    outputs = tour(sentinel_env(cluster), start_worker, start_beat)
    assert_never_shown(outputs, PASSWORD)
    # The jobs went through the master the sentinels name, and reached the replica.
    replica = cluster.replicas[0].client
    wait_for(lambda: replica.exists("test:sched:ticks"), 10)


def test_our_client_finds_the_master_the_sentinels_name(cluster):
    client = make_client(cluster.url, MASTER_NAME)
    try:
        assert client.ping()
        assert client.info("replication")["role"] == "master"
        assert int(client.config_get("port")["port"]) == cluster.master_address()[1]
    finally:
        client.close()


def test_a_sentinel_url_without_a_master_name_is_refused_naming_the_setting(cluster):
    with pytest.raises(ConfigError) as refused:
        load_settings({"FRAPPE_CELERY_BROKER_URL": cluster.url})
    message = str(refused.value)
    assert "sentinel_master is not set" in message
    assert "FRAPPE_CELERY_SENTINEL_MASTER" in message
    assert redact_url(cluster.url) in message and PASSWORD not in message
    with pytest.raises(ConfigError, match="sentinel_master"):
        make_client(cluster.url)


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("sentinel://127.0.0.1:26379;redis://127.0.0.1:6379", "every address of the list"),
        ("sentinel://127.0.0.1:26379?master_name=x", "takes no query options"),
        ("sentinel://127.0.0.1:26379/jobs", "must be a number"),
    ],
)
def test_a_malformed_sentinel_url_is_refused_saying_what_is_allowed(url, problem):
    with pytest.raises(ConfigError, match=problem) as refused:
        load_settings(
            {"FRAPPE_CELERY_BROKER_URL": url, "FRAPPE_CELERY_SENTINEL_MASTER": MASTER_NAME}
        )
    assert "FRAPPE_CELERY_BROKER_URL" in str(refused.value)


def test_redact_url_hides_every_password_of_a_sentinel_list(cluster):
    shown = redact_url(cluster.url)
    assert PASSWORD not in shown
    assert shown.count(":***@127.0.0.1:") == 3


def test_with_enqueue_wait_replicas_a_returned_job_is_already_on_the_replica(
    redis_server, cluster, tmp_path
):
    from .support.settings import config_env

    replica = cluster.replicas[0].client
    with settings_env(**sentinel_env(cluster), **config_env(tmp_path, enqueue_wait_replicas=1)):
        for _ in range(20):
            job = frappe.enqueue("tests.jobs.add", queue="batch", a=1, b=2)
            # WAIT returned: the replica has it, so a failover now cannot lose it.
            assert replica.exists(keys.job(job.id))


def test_fewer_replicas_than_enqueue_wait_replicas_raises_not_replicated(
    redis_server, cluster, tmp_path
):
    from .support.settings import config_env

    env = config_env(tmp_path, enqueue_wait_replicas=2, enqueue_wait_timeout_ms=200)
    with settings_env(**sentinel_env(cluster), **env), pytest.raises(NotReplicated) as refused:
        frappe.enqueue("tests.jobs.add", queue="batch", a=1, b=2)
    assert refused.value.acked == 1 and refused.value.wanted == 2
    assert "only 1 of 2 replicas (enqueue_wait_replicas) confirmed it within 200 ms" in str(
        refused.value
    )
