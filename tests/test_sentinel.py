"""A broker behind Redis Sentinel: one master, one replica, three sentinels, reached through
``sentinel://:password@host:port;sentinel://...`` with the master name in the sentinel_master
setting. Enqueue, a real worker, a real beat and every CLI command work through it; the password
appears in none of their output. (Failover under load: tests/test_sentinel_failover.py.)"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

import frappe_celery as frappe
from frappe_celery.broker import keys
from frappe_celery.config import load_settings
from frappe_celery.connection import make_client
from frappe_celery.errors import ConfigError, NotReplicated
from frappe_celery.ops.embedded import find_redis_server, free_port
from frappe_celery.urls import redact_url

from .broker_tour import assert_never_shown, tour
from .conftest import RedisProcess, wait_for
from .test_cli import settings_env

PASSWORD = "sentinel-pw-" + uuid.uuid4().hex  # unique: any occurrence in an output is a leak
MASTER_NAME = "jobs-master"


class SentinelCluster:
    """A master and a replica (both with a password) and three sentinels monitoring them with a
    quorum of 2, on free loopback ports; the sentinels call the master down after
    ``down_after_ms`` of silence."""

    def __init__(self, workdir: Path, down_after_ms: int = 1000, replicas: int = 1) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.binary = find_redis_server()
        self.master = self._redis("master", [])
        master_port = self.master.port
        self.replicas = [
            self._redis(f"replica{i}", ["--replicaof", "127.0.0.1", str(master_port)])
            for i in range(replicas)
        ]
        self.sentinels: list[RedisProcess] = []
        for i in range(3):
            port = free_port()
            conf = workdir / f"sentinel{i}.conf"
            # Sentinel rewrites its own config file as it learns the topology.
            conf.write_text(
                f"port {port}\nbind 127.0.0.1\ndir {workdir}\n"
                f"sentinel monitor {MASTER_NAME} 127.0.0.1 {master_port} 2\n"
                f"sentinel auth-pass {MASTER_NAME} {PASSWORD}\n"
                f"sentinel down-after-milliseconds {MASTER_NAME} {down_after_ms}\n"
                f"sentinel failover-timeout {MASTER_NAME} 10000\n"
                f"sentinel parallel-syncs {MASTER_NAME} 1\n"
            )
            client = redis.Redis(port=port, socket_timeout=5, socket_connect_timeout=2)
            sentinel = RedisProcess(
                self.binary, [str(conf), "--sentinel"], client, workdir, f"sentinel{i}"
            )
            self.sentinels.append(sentinel.wait_ready())
        # Ready when every sentinel knows the replicas and the other two sentinels (needed for
        # the quorum of a failover).
        wait_for(self._topology_known, 30, interval=0.2)

    def _redis(self, name: str, extra: list[str]) -> RedisProcess:
        port = free_port()
        client = redis.Redis(port=port, password=PASSWORD, socket_timeout=5)
        server = RedisProcess(
            self.binary,
            ["--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.workdir), "--dbfilename", f"{name}.rdb",
             "--requirepass", PASSWORD, "--masterauth", PASSWORD, *extra],
            client, self.workdir, f"{name}-{port}",
        )  # fmt: skip
        return server.wait_ready()

    def _topology_known(self) -> bool:
        try:
            states = [self.sentinel_state(s) for s in self.sentinels]
        except redis.RedisError:
            return False
        return all(
            int(state["num-slaves"]) >= len(self.replicas)
            and int(state["num-other-sentinels"]) == 2
            for state in states
        )

    @staticmethod
    def sentinel_state(sentinel: RedisProcess) -> dict[str, str]:
        # A raw command: redis-py 6.4's SENTINEL MASTER reply parser fails on its own options.
        reply = sentinel.client.execute_command("SENTINEL", "MASTER", MASTER_NAME)
        pairs = [value.decode() for value in reply]
        return dict(zip(pairs[::2], pairs[1::2], strict=True))

    @property
    def url(self) -> str:
        return ";".join(f"sentinel://:{PASSWORD}@127.0.0.1:{s.port}/0" for s in self.sentinels)

    def master_address(self) -> tuple[str, int]:
        reply = self.sentinels[0].client.execute_command(
            "SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER_NAME
        )
        host, port = (value.decode() for value in reply)
        return host, int(port)

    def stop(self) -> None:
        for server in [*self.sentinels, *self.replicas, self.master]:
            server.stop()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SentinelCluster]:
    cluster = SentinelCluster(tmp_path_factory.mktemp("sentinel"))
    yield cluster
    cluster.stop()


def sentinel_env(cluster: SentinelCluster) -> dict[str, str]:
    return {
        "FRAPPE_CELERY_BROKER_URL": cluster.url,
        "FRAPPE_CELERY_RESULT_BACKEND": cluster.url,
        "FRAPPE_CELERY_SENTINEL_MASTER": MASTER_NAME,
    }


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
    from .test_sentinel_failover import config_env

    replica = cluster.replicas[0].client
    with settings_env(**sentinel_env(cluster), **config_env(tmp_path, enqueue_wait_replicas=1)):
        for _ in range(20):
            job = frappe.enqueue("tests.jobs.add", queue="batch", a=1, b=2)
            # WAIT returned: the replica has it, so a failover now cannot lose it.
            assert replica.exists(keys.job(job.id))


def test_fewer_replicas_than_enqueue_wait_replicas_raises_not_replicated(
    redis_server, cluster, tmp_path
):
    from .test_sentinel_failover import config_env

    env = config_env(tmp_path, enqueue_wait_replicas=2, enqueue_wait_timeout_ms=200)
    with settings_env(**sentinel_env(cluster), **env), pytest.raises(NotReplicated) as refused:
        frappe.enqueue("tests.jobs.add", queue="batch", a=1, b=2)
    assert refused.value.acked == 1 and refused.value.wanted == 2
    assert "only 1 of 2 replicas (enqueue_wait_replicas) confirmed it within 200 ms" in str(
        refused.value
    )
