"""Redis URLs as frappe-celery reads them: redis://, rediss:// (with TLS options in the query)
and sentinel:// (a list of sentinels); their checks, and their passwords redacted.

Pure functions of a URL: config.py checks the settings with them at start-up, and
connection.py, celery_app.py and the CLI read URLs with them; nothing here connects.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from urllib.parse import parse_qsl, unquote, urlsplit

from frappe_celery.errors import ConfigError

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
