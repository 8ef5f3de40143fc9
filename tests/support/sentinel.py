"""A Redis Sentinel setup of real processes: a master, replicas and three sentinels, all with
a password, on free loopback ports."""

from __future__ import annotations

import uuid
from pathlib import Path

import redis

from frappe_celery.ops.embedded import find_redis_server, free_port

from .processes import RedisProcess, wait_for

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


def sentinel_env(cluster: SentinelCluster) -> dict[str, str]:
    return {
        "FRAPPE_CELERY_BROKER_URL": cluster.url,
        "FRAPPE_CELERY_RESULT_BACKEND": cluster.url,
        "FRAPPE_CELERY_SENTINEL_MASTER": MASTER_NAME,
    }
