"""The process-wide Redis client for our own keys and the enqueue fast path.

One connection pool per process (redis-py resets pools after fork), bounded timeouts so a dead
Redis surfaces as :class:`BrokerUnreachable` within seconds instead of hanging a web request.

Three URL forms, the ones kombu's Redis transport takes, so one URL configures every component:

* ``redis://[[user]:password@]host[:port][/db]``;
* ``rediss://...?ssl_cert_reqs=required&ssl_ca_certs=/path/ca.pem`` (TLS; see :func:`tls_options`);
* ``sentinel://[[user]:password@]host:port[/db];sentinel://host:port;...``: the master the
  sentinels name for the ``sentinel_master`` setting, found again on every new connection, so a
  failover needs no restart. The password is the master's, as in kombu.
"""

from __future__ import annotations

import inspect
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TypeAlias

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from redis.sentinel import Sentinel

from frappe_celery.config import get_settings
from frappe_celery.errors import BrokerUnreachable, ConfigError
from frappe_celery.urls import (
    is_sentinel_url,
    parse_sentinel_url,
    redact_url,
)

# Connect fails fast (refused is immediate; a black-holed host costs this), one retry covers a
# blip: an unreachable broker is reported in about 2 x 2 s, under the 5 s the contract allows.
CONNECT_TIMEOUT = 2.0
# Reads are single commands or short scripts; none blocks.
SOCKET_TIMEOUT = 5.0

# What get_redis() returns, as mypy sees it; at runtime a ``redis.Redis``. redis-py before 7 types
# every command as ``Awaitable[T] | T`` (one signature for its sync and asyncio clients) and 4.5
# ships no types at all, so across the supported range (4.5.5 to 6.4) no command result has a
# usable type: callers would need a cast at every call.
Client: TypeAlias = Any

_lock = threading.Lock()
_client: redis.Redis | None = None


def as_text(value: bytes | str) -> str:
    """A Redis reply as text (clients return bytes)."""
    return value.decode() if isinstance(value, bytes) else value


def make_client(
    url: str,
    sentinel_master: str | None = None,
    *,
    connect_timeout: float = CONNECT_TIMEOUT,
    socket_timeout: float = SOCKET_TIMEOUT,
) -> Client:
    """A Redis client with frappe-celery's bounded timeouts, for any URL form above.

    Raises :class:`ConfigError` for a sentinel URL without ``sentinel_master``.
    """
    options: dict[str, Any] = {
        "socket_connect_timeout": connect_timeout,
        "socket_timeout": socket_timeout,
        "retry": Retry(NoBackoff(), 1),
        "health_check_interval": 30,
    }
    if not is_sentinel_url(url):
        return redis.Redis.from_url(url, **options)
    if not sentinel_master:
        raise ConfigError(
            f"sentinel_master: a sentinel:// broker URL ({redact_url(url)}) needs the name of the "
            "master its sentinels monitor; set FRAPPE_CELERY_SENTINEL_MASTER or "
            '"frappe_celery": {"sentinel_master": "mymaster"} in common_site_config.json'
        )
    address = parse_sentinel_url(url)
    # The sentinels are asked with the same bounded timeouts; they get no password (kombu's
    # rule: the URL's credentials are the master's).
    sentinels = Sentinel(
        address.sentinels,
        sentinel_kwargs={
            "socket_connect_timeout": connect_timeout,
            "socket_timeout": socket_timeout,
        },
    )
    return sentinels.master_for(
        sentinel_master,
        username=address.username,
        password=address.password,
        db=address.db,
        **options,
    )


def answers(url: str, sentinel_master: str | None = None, timeout: float = 1.0) -> bool:
    """True if the Redis at ``url`` (through its sentinels) answers PING within ``timeout``."""
    client = make_client(url, sentinel_master, connect_timeout=timeout, socket_timeout=timeout)
    try:
        return bool(client.ping())
    except (redis.ConnectionError, redis.TimeoutError, redis.ResponseError):
        return False
    finally:
        client.close()


def get_redis() -> Client:
    """The shared client for the configured broker."""
    global _client
    if _client is None:
        with _lock:
            if _client is None:
                settings = get_settings()
                _client = make_client(settings.broker_url, settings.sentinel_master)
    return _client


def reset() -> None:
    """Drop the shared client (after settings changed)."""
    global _client
    with _lock:
        if _client is not None:
            _client.close()
        _client = None


# redis-py before 5.3 needs a command name to hand out a pooled connection; later ones warn
# when given one.
_POOL_NEEDS_COMMAND_NAME = (
    inspect.signature(redis.ConnectionPool.get_connection).parameters["command_name"].default
    is inspect.Parameter.empty
)


@contextmanager
def checked_out(client: Client) -> Iterator[Any]:
    """One of ``client``'s pooled connections, for commands sent without waiting for their
    replies. A connection given back with replies still unread (an error on the way) is
    disconnected, so the next user never reads them."""
    pool = client.connection_pool
    # Handing out a connection checks it (and reconnects): Redis gone surfaces here first.
    with broker_errors():
        connection = (
            pool.get_connection("EVAL") if _POOL_NEEDS_COMMAND_NAME else pool.get_connection()
        )
    try:
        yield connection
    except BaseException:
        connection.disconnect()
        raise
    finally:
        pool.release(connection)


@contextmanager
def broker_errors() -> Iterator[None]:
    """Turn redis-py connection failures into :class:`BrokerUnreachable` naming the URL."""
    try:
        yield
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        url = redact_url(get_settings().broker_url)
        raise BrokerUnreachable(f"cannot reach the Redis broker at {url}: {exc}") from None
