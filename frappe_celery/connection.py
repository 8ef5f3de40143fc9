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
import os
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeAlias
from urllib.parse import parse_qsl, unquote, urlsplit

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from redis.sentinel import Sentinel

from frappe_celery.config import get_settings
from frappe_celery.errors import BrokerUnreachable, ConfigError

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


SENTINEL_SCHEME = "sentinel"
# The schemes whose URL names a host (unix:// names a socket file).
NETWORK_SCHEMES = ("redis", "rediss", SENTINEL_SCHEME)
DEFAULT_SENTINEL_PORT = 26379
# The TLS options a rediss:// URL may carry in its query, as redis-py, kombu and Celery's result
# backend all read them; and the values of ssl_cert_reqs all three accept (redis-py takes only
# these lowercase spellings).
TLS_QUERY_OPTIONS = ("ssl_cert_reqs", "ssl_ca_certs", "ssl_certfile", "ssl_keyfile")
TLS_CERT_REQS = ("required", "optional", "none")


# An address of a list (sentinel://a;sentinel://b) starts where a scheme follows a ";"; any other
# ";" is part of a password.
_NEXT_ADDRESS = re.compile(r";(?=[A-Za-z][A-Za-z0-9+.-]*://)")
# redis-py takes a password from the query as well (redis://host?password=...).
_QUERY_PASSWORD = re.compile(r"[?&;]password=", re.IGNORECASE)


def redact_url(url: str) -> str:
    """The URL with every password replaced by ``***``: credentials are never printed.

    Each address of a ``;``-separated list is redacted on its own. Nothing is parsed by URL
    rules, since a password written without percent-encoding breaks them (urllib ends the host
    at its first ``/``, ``?`` or ``#``): everything after a ``password=`` of the query is hidden
    (a raw ``&`` or ``#`` in the value cannot be told from its end), and everything after the
    user name up to the last ``@`` before that. An ``@`` in another query value hides the host
    as well: more than the password, never less.
    """
    return ";".join(_redact_address(address) for address in _NEXT_ADDRESS.split(url))


def _redact_address(address: str) -> str:
    start = address.find("://") + 3 if "://" in address else 0
    query_password = _QUERY_PASSWORD.search(address, start)
    end = query_password.end() if query_password else len(address)
    tail = "***" if query_password and end < len(address) else ""
    at = address.rfind("@", start, end)
    if at < 0:
        return address[:end] + tail
    # A user name cannot hold an unencoded ":"; without one, the whole userinfo may be a
    # password (redis://password@host).
    colon = address.find(":", start, at)
    hidden_from = colon + 1 if colon >= 0 else start
    stars = "***" if at > hidden_from else ""
    return address[:hidden_from] + stars + address[at:end] + tail


def check_password_encoded(url: str, setting: str = "broker URL") -> None:
    """Refuse a URL whose userinfo holds an unencoded ``/``, ``?`` or ``#``: redis-py and kombu
    end the host there, read the password's start as the port (urllib's error then prints it)
    or the host, and would connect with the rest. Raises :class:`ConfigError`."""
    if any(_password_spills(address) for address in _NEXT_ADDRESS.split(url)):
        raise ConfigError(
            f"{setting}: {redact_url(url)!r} cannot be parsed: its port is not a number, or its "
            "password holds a character that ends the host (/, ? or #); percent-encode the "
            "password (urllib.parse.quote(password, safe=''))"
        )


def _password_spills(address: str) -> bool:
    parts = urlsplit(address)
    try:
        parts.port  # noqa: B018 - urllib checks the port only when it is read
    except ValueError:
        return True
    if parts.scheme.lower() not in NETWORK_SCHEMES:
        # unix://: the host is empty and the path is a socket's, which may hold an "@".
        return False
    after_host = address.partition("://")[2][len(parts.netloc) :]
    return "@" in parts.path or "@" in parts.fragment or (not parts.hostname and "@" in after_host)


def is_sentinel_url(url: str) -> bool:
    return url.split("://", 1)[0].lower() == SENTINEL_SCHEME


@dataclass(frozen=True)
class SentinelAddress:
    """A parsed ``sentinel://`` URL: the sentinels, and the credentials and db of the master."""

    sentinels: list[tuple[str, int]]
    username: str | None
    password: str | None
    db: int


def parse_sentinel_url(url: str, setting: str = "broker URL") -> SentinelAddress:
    """Parse kombu's ``sentinel://`` form; raises :class:`ConfigError` naming ``setting``."""
    sentinels: list[tuple[str, int]] = []
    first = None
    for part in url.split(";"):
        parts = urlsplit(part.strip())
        problem = None
        if parts.scheme.lower() != SENTINEL_SCHEME:
            problem = "every address of the list must be sentinel://host:port"
        elif not parts.hostname:
            problem = "an address has no host"
        elif parts.query:
            # kombu passes query keys to its Connection, which refuses unknown ones.
            problem = "a sentinel:// URL takes no query options"
        if problem:
            raise ConfigError(
                f"{setting}: {problem}, got {redact_url(url)!r}; allowed: "
                "sentinel://[[user]:password@]host:port[/db];sentinel://host:port;..."
            )
        try:
            port = parts.port or DEFAULT_SENTINEL_PORT
        except ValueError:
            raise ConfigError(f"{setting}: bad port in {redact_url(url)!r}") from None
        sentinels.append((parts.hostname or "", port))
        first = first or parts
    assert first is not None  # split() yields at least one part
    db_text = first.path.strip("/") or "0"
    if not db_text.isdigit():
        raise ConfigError(
            f"{setting}: the db of {redact_url(url)!r} must be a number, got {db_text!r}"
        )
    return SentinelAddress(
        sentinels,
        unquote(first.username) if first.username else None,
        unquote(first.password) if first.password is not None else None,
        int(db_text),
    )


def tls_options(url: str, setting: str = "broker URL") -> dict[str, str] | None:
    """The TLS options of a ``rediss://`` URL (None for any other scheme), checked.

    ``ssl_cert_reqs`` defaults to ``required``, as in redis-py: kombu alone would fall back to no
    certificate check at all, and Celery's result backend would refuse the URL. Raises
    :class:`ConfigError` for an unknown ``ssl_cert_reqs`` or a certificate file that does not exist.
    """
    parts = urlsplit(url)
    if parts.scheme.lower() != "rediss":
        return None
    query = dict(parse_qsl(parts.query))
    options = {name: query[name] for name in TLS_QUERY_OPTIONS if query.get(name)}
    options.setdefault("ssl_cert_reqs", "required")
    if options["ssl_cert_reqs"] not in TLS_CERT_REQS:
        raise ConfigError(
            f"{setting}: ssl_cert_reqs must be one of {', '.join(TLS_CERT_REQS)}, "
            f"got {options['ssl_cert_reqs']!r}"
        )
    for name in ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile"):
        if name in options and not os.path.isfile(options[name]):
            raise ConfigError(f"{setting}: {name} names no file: {options[name]!r}")
    return options


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
