"""Signed job messages: a worker runs only what a holder of the signing key enqueued.

Anyone who can write to the broker's Redis (passwordless by default in a bench, or through an
SSRF to localhost) could otherwise push a job message naming any allowed function. Every task
message therefore carries an HMAC-SHA256 (``SIGNATURE_HEADER``) over its headers and its body, made
with a secret that the web processes and workers share and Redis never sees: the
``signing_key`` setting (in a bench ``frappe_celery.signing_key`` in common_site_config.json,
generated once like Frappe's own ``encryption_key``; outside one ``FRAPPE_CELERY_SIGNING_KEY``).
A worker drops a message that is unsigned or signed with no accepted key before Celery sees it
(transport.py), logs it, counts it (``keys.REFUSED_MESSAGES``) and fails the job's record.

What is signed: every header except the signature itself and ``redelivered`` (which kombu's
restore and recovery.py set on a message going back to its queue), as sorted compact JSON in
kombu's encoding, then the body exactly as it travels (base64 text). The properties are not:
kombu and the transport rewrite them (delivery info, the start check), and they decide no code.

Rotation: ``previous_signing_key`` is accepted too (never used to sign), so that messages signed
before a change still run while every process restarts with the new key (README, "Signed
messages").
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kombu.utils.json import dumps

from frappe_celery.errors import ConfigError

SIGNATURE_HEADER = "frappe_celery_signature"
# Headers a message may gain on its way without being re-signed.
UNSIGNED_HEADERS = frozenset({SIGNATURE_HEADER, "redelivered"})

# A key shorter than this is refused: the HMAC is only as strong as its secret.
MIN_KEY_LENGTH = 32
# Where the setting lives, for messages: in a bench's common_site_config.json, and outside one.
KEY_SETTING = "frappe_celery.signing_key"
KEY_ENV = "FRAPPE_CELERY_SIGNING_KEY"
PREVIOUS_KEY_SETTING = "frappe_celery.previous_signing_key"
PREVIOUS_KEY_ENV = "FRAPPE_CELERY_PREVIOUS_SIGNING_KEY"


def generate_key() -> str:
    return secrets.token_hex(32)


def checked_key(source: str, name: str, value: Any) -> str | None:
    """``value`` as a signing key, or None when unset; never echoes the key in an error."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ConfigError(f"{source}: {name} must be a string, got {type(value).__name__}")
    if len(value) < MIN_KEY_LENGTH:
        raise ConfigError(
            f"{source}: {name} is {len(value)} characters long; at least {MIN_KEY_LENGTH} are "
            "needed (`python -c 'import secrets; print(secrets.token_hex(32))'` makes one)"
        )
    return value


def canonical_headers(headers: Mapping[str, Any]) -> str:
    """The headers as signed: sorted compact JSON in kombu's encoding (its type tags), which
    reads the same whether built from the sender's values or from what the worker decoded."""
    signed = {name: value for name, value in headers.items() if name not in UNSIGNED_HEADERS}
    return str(dumps(signed, sort_keys=True, separators=(",", ":")))


def signature_of(key: str, canonical: str, body: str) -> str:
    data = b"frappe-celery-v1\n" + canonical.encode("utf-8") + b"\n" + body.encode("utf-8")
    return hmac.new(key.encode("utf-8"), data, hashlib.sha256).hexdigest()


def sign(key: str, headers: Mapping[str, Any], body: str) -> str:
    return signature_of(key, canonical_headers(headers), body)


def problem(message: Mapping[str, Any], keys: tuple[str, ...]) -> str | None:
    """Why ``message`` (kombu's decoded envelope) must not run, or None when a key in ``keys``
    signed it."""
    headers = message.get("headers")
    if not isinstance(headers, dict):
        return "it has no headers, so no signature"
    given = headers.get(SIGNATURE_HEADER)
    if not isinstance(given, str) or not given:
        return "it is not signed"
    body = message.get("body")
    try:
        canonical = canonical_headers(headers)
    except (TypeError, ValueError):
        return "its headers cannot be read back as signed"
    for key in keys:
        if hmac.compare_digest(
            signature_of(key, canonical, body if isinstance(body, str) else ""), given
        ):
            return None
    return "its signature matches no accepted signing key"


def ensure_bench_key(config_path: Path) -> str:
    """The bench's signing key, generated into its common_site_config.json when it has none (as
    Frappe generates a site's encryption_key on first use). Web processes and workers of the
    bench may start together: a lock beside the file makes them all read one key, and the file
    is replaced whole, so Frappe never reads it half written."""
    import fcntl

    lock_path = config_path.parent / ".frappe-celery-config.lock"
    with open(lock_path, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        conf = json.loads(config_path.read_text("utf-8")) if config_path.exists() else {}
        own = conf.setdefault("frappe_celery", {})
        if not isinstance(own, dict):
            raise ConfigError(f"{config_path}: 'frappe_celery' must be a JSON object")
        key = own.get("signing_key")
        if key:
            return str(key)
        own["signing_key"] = key = generate_key()
        temporary = config_path.with_name(f".{config_path.name}.{os.getpid()}.tmp")
        temporary.write_text(json.dumps(conf, indent=1, sort_keys=True) + "\n", "utf-8")
        os.chmod(temporary, config_path.stat().st_mode & 0o777 if config_path.exists() else 0o600)
        os.replace(temporary, config_path)
        return str(key)
