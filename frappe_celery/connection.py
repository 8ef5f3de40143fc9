"""The process-wide Redis client for our own keys and the enqueue fast path.

One connection pool per process (redis-py resets pools after fork), bounded timeouts so a dead
Redis surfaces as :class:`BrokerUnreachable` within seconds instead of hanging a web request.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TypeAlias
from urllib.parse import urlsplit, urlunsplit

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from .config import get_settings
from .errors import BrokerUnreachable

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


def redact_url(url: str) -> str:
    """The URL with any password replaced by ``***`` (credentials are never printed)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def make_client(url: str) -> Client:
    """A Redis client with frappe-celery's bounded timeouts."""
    return redis.Redis.from_url(
        url,
        socket_connect_timeout=CONNECT_TIMEOUT,
        socket_timeout=SOCKET_TIMEOUT,
        retry=Retry(NoBackoff(), 1),
        health_check_interval=30,
    )


def get_redis() -> Client:
    """The shared client for the configured broker."""
    global _client
    if _client is None:
        with _lock:
            if _client is None:
                _client = make_client(get_settings().broker_url)
    return _client


def reset() -> None:
    """Drop the shared client (after settings changed)."""
    global _client
    with _lock:
        if _client is not None:
            _client.close()
        _client = None


@contextmanager
def broker_errors() -> Iterator[None]:
    """Turn redis-py connection failures into :class:`BrokerUnreachable` naming the URL."""
    try:
        yield
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        url = redact_url(get_settings().broker_url)
        raise BrokerUnreachable(f"cannot reach the Redis broker at {url}: {exc}") from None
