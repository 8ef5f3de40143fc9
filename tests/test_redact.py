"""Broker URLs as they are printed: no password in any form redis-py or kombu accepts, nor in
the malformed ones a hand-written password produces (no Redis needed)."""

from __future__ import annotations

from urllib.parse import quote

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from frappe_celery.config import load_settings
from frappe_celery.errors import ConfigError
from frappe_celery.urls import redact_url

pytestmark = pytest.mark.unit  # pure: no Redis, no worker

SECRET = "s3cr;e/t?x#y@z"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:pw@h:6379/0", "redis://:***@h:6379/0"),
        ("redis://user:pw@h:6379/0", "redis://user:***@h:6379/0"),
        (
            "rediss://user:pw@h:6380/1?ssl_cert_reqs=required",
            "rediss://user:***@h:6380/1?ssl_cert_reqs=required",
        ),
        # A password alone in the user's place is still a password to redis-py.
        ("redis://pw@h/0", "redis://***@h/0"),
        (
            "sentinel://:pw@h1:26379;sentinel://:pw@h2:26379;sentinel://h3:26379",
            "sentinel://:***@h1:26379;sentinel://:***@h2:26379;sentinel://h3:26379",
        ),
        # Unencoded ; / ? # @ in the password: everything up to the last @ of the address.
        (f"redis://:{SECRET}@h:6379/0", "redis://:***@h:6379/0"),
        (f"redis://user:{SECRET}@h:6379/0", "redis://user:***@h:6379/0"),
        (
            f"sentinel://:{SECRET}@h1:26379;sentinel://h2:26379",
            "sentinel://:***@h1:26379;sentinel://h2:26379",
        ),
        (f"redis://:{quote(SECRET, safe='')}@h/0", "redis://:***@h/0"),
        # A query password hides the rest of its address: its end cannot be told from a raw & or #.
        ("redis://h:6379/0?password=pw", "redis://h:6379/0?password=***"),
        (f"redis://h/0?db=1&password={SECRET}", "redis://h/0?db=1&password=***"),
        ("unix:///run/redis.sock?db=2&password=pw", "unix:///run/redis.sock?db=2&password=***"),
        ("unix://user:pw@/run/redis.sock?db=2", "unix://user:***@/run/redis.sock?db=2"),
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
    ],
)
def test_redact_url_hides_the_password(url, shown):
    assert redact_url(url) == shown


PASSWORDS = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=1)
FORMS = [
    "redis://:{}@redis.example:6379/0",
    "redis://user:{}@redis.example:6379/0",
    "rediss://user:{}@redis.example:6380/0?ssl_cert_reqs=required",
    "redis://{}@redis.example/0",
    "sentinel://:{}@s1:26379;sentinel://s2:26379;sentinel://:{}@s3:26379",
    "unix://:{}@/run/redis.sock?db=1",
    "unix:///run/redis.sock?password={}",
    "redis://redis.example:6379/0?db=1&password={}",
]


@given(password=PASSWORDS, form=st.sampled_from(FORMS), encoded=st.booleans())
def test_no_printable_password_survives_redaction(password, form, encoded):
    written = quote(password, safe="") if encoded else password
    # In the user's place a raw ":" ends the user name, which is shown (redis://user:pw@host).
    assume(encoded or "//{}@" not in form or ":" not in password)
    shown = redact_url(form.replace("{}", written))
    # A password that is part of what is rightly shown (a host name, "***") proves nothing.
    assume(password not in redact_url(form.replace("{}", "")).replace("***", "") + "***")
    assert password not in shown
    assert written not in shown


@pytest.mark.parametrize(
    "url",
    [
        f"redis://:{SECRET}@127.0.0.1:6379/0",
        "redis://:sec/ret@127.0.0.1:6379/0",
        "redis://:sec#ret@127.0.0.1:6379/0",
        "redis://:sec?ret@127.0.0.1:6379/0",
        "redis://:1234/ret@127.0.0.1:6379/0",
        "sentinel://:sec/ret@127.0.0.1:26379;sentinel://127.0.0.1:26380",
    ],
)
def test_an_unencoded_password_is_refused_without_showing_it(url):
    # urllib's own error names the "port" it read: the password's first characters.
    with pytest.raises(ConfigError, match="percent-encode") as refused:
        load_settings({"FRAPPE_CELERY_BROKER_URL": url, "FRAPPE_CELERY_SENTINEL_MASTER": "m"})
    assert "sec" not in str(refused.value) and "1234" not in str(refused.value)
