"""Property-based tests (hypothesis): every valid ``enqueue`` call and ``scheduler_events`` dict is
accepted; every invalid one raises a documented exception naming the field, and an invalid
``enqueue`` writes nothing to Redis (real redis-server, see conftest.py)."""

from __future__ import annotations

import math
import re
import uuid
import warnings
from typing import Any

import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import frappe_celery as frappe
from frappe_celery.broker import keys
from frappe_celery.config import get_settings
from frappe_celery.errors import ConfigError
from frappe_celery.scheduler.entries import CRON_KEYS, FREQUENCY_CRON, build_entries

from .support.broker_state import redis_state

QUEUES = ("short", "default", "long", "reports", "batch")  # conftest's configured queues
# enqueue's own parameters: a user argument may not be named like one.
ENQUEUE_PARAMETERS = {
    "method", "queue", "timeout", "event", "is_async", "job_name", "now", "enqueue_after_commit",
    "on_success", "on_failure", "at_front", "job_id", "deduplicate", "at_front_when_starved",
    "async",
}  # fmt: skip
EXAMPLES = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=20)
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=12,
)  # fmt: skip
argument_names = st.from_regex(r"[a-z_][a-z0-9_]{0,12}", fullmatch=True).filter(
    lambda name: name not in ENQUEUE_PARAMETERS
)
valid_calls = st.fixed_dictionaries(
    {
        "queue": st.sampled_from(QUEUES),
        "timeout": st.none() | st.integers(1, 10_000) | st.floats(0.5, 10_000),
        "event": st.none() | st.text(max_size=20),
        "at_front": st.booleans(),
        "deduplicate": st.booleans(),
        "job_id": st.none() | st.text(min_size=1, max_size=30).filter(str.strip),
        "kwargs": st.dictionaries(argument_names, json_values, max_size=5),
    }
)


def clean_job(r: redis.Redis, job: frappe.Job | None) -> None:
    """Forget what one accepted call wrote, so examples do not fill the queues."""
    if job is None:
        return
    for queue in QUEUES:
        for name in keys.queue_lists(queue):
            r.delete(name)
    r.delete(keys.job(job.id))


def call(spec: dict[str, Any], **override: Any) -> Any:
    arguments = {**spec, **override}
    kwargs = arguments.pop("kwargs")
    if arguments["deduplicate"] and arguments["job_id"] is None:
        arguments["deduplicate"] = False  # the one combination that is invalid on its own
    if arguments["job_id"] is not None and "job_id" not in override:
        arguments["job_id"] = f"{arguments['job_id']}-{uuid.uuid4().hex[:6]}"  # never a duplicate
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return frappe.enqueue("tests.jobs.describe", **arguments, **kwargs)


@EXAMPLES
@given(spec=valid_calls)
def test_every_valid_enqueue_is_accepted(r, spec):
    job = call(spec)
    try:
        # Queued, or already taken by a worker of the session consuming short, default, long.
        assert job is not None and job.get_status() is not None
        assert job.queue == spec["queue"]
    finally:
        clean_job(r, job)


# One invalid field at a time: (field, strategy of values enqueue must refuse).
INVALID = {
    "queue": st.text(max_size=12).filter(lambda q: q not in QUEUES) | st.integers() | st.none(),
    # 0 (and 0.0, -0.0, "0") is valid: "the queue's", as in Frappe (README); so are "12", "1h".
    "timeout": st.integers(max_value=-1) | st.floats(max_value=0).filter(bool) | st.booleans()
    | st.just(math.nan) | st.lists(st.integers(), max_size=2)
    | st.text(max_size=5).filter(lambda t: not re.fullmatch(r"\d+[smhd]?", t.strip(), re.I)),
    "job_id": st.just("") | st.text(" \t", min_size=1, max_size=3) | st.integers()
    | st.lists(st.text(), max_size=2),
    "event": st.integers() | st.lists(st.text(), max_size=2) | st.booleans(),
    "kwargs": st.sampled_from([object(), {1, 2}, frappe.Job]),
}  # fmt: skip


@EXAMPLES
@given(spec=valid_calls, field=st.sampled_from(sorted(INVALID)), data=st.data())
def test_every_invalid_enqueue_names_the_field_and_writes_nothing(r, spec, field, data):
    bad = data.draw(INVALID[field])
    # Every key but what running workers write on their own (heartbeats, held messages): the
    # same keys, with the same values, afterwards.
    before = redis_state(r)
    try:
        if field == "kwargs":
            job = call(spec, kwargs={"customer": bad})
        else:
            job = call(spec, **{field: bad})
    except (frappe.InvalidArgumentError, frappe.UnserializableArgumentError) as exc:
        assert exc.argument == ("customer" if field == "kwargs" else field), str(exc)
    else:
        clean_job(r, job)
        raise AssertionError(f"enqueue accepted {field}={bad!r}")
    assert redis_state(r) == before


simple_keys = st.sampled_from(
    ["all", *(f"{freq}{suffix}" for freq in FREQUENCY_CRON for suffix in ("", "_long", "_short")),
     "hourly_maintenance", "daily_maintenance"]
)  # fmt: skip
cron_expressions = st.sampled_from(
    ["* * * * *", "*/5 * * * *", "0 0 * * *", "30 2 1 * *", "@daily", "* * * * * */10"]
)
methods = st.sampled_from(["tests.jobs.add", "tests.jobs.record", "tests.jobs.sched.tick"])
valid_events = st.dictionaries(simple_keys, st.lists(methods, min_size=1, max_size=3),
                               max_size=4) | st.dictionaries(
    st.sampled_from(sorted(CRON_KEYS)),
    st.dictionaries(cron_expressions, st.lists(methods, min_size=1, max_size=2), min_size=1,
                    max_size=2),
    min_size=1, max_size=3,
)  # fmt: skip


@EXAMPLES
@given(events=valid_events)
def test_every_valid_scheduler_events_dict_builds_its_entries(events):
    entries = build_entries(events, get_settings())
    expected = sum(
        len(methods) for value in events.values()
        for methods in (value.values() if isinstance(value, dict) else [value])
    ) * len(get_settings().scheduler_sites)  # fmt: skip
    assert len(entries) == expected


@EXAMPLES
@given(
    events=valid_events,
    bad=st.one_of(
        st.tuples(st.just("key"), st.text(min_size=1, max_size=15).filter(
            lambda k: k not in {"all", *CRON_KEYS} and not k.startswith(tuple(FREQUENCY_CRON)))),
        st.tuples(st.just("cron"), st.sampled_from(["every day", "61 * * * *", "* * *", ""])),
        st.tuples(st.just("shape"), st.sampled_from(["daily", "cron_long"])),
    ),
)  # fmt: skip
def test_every_invalid_scheduler_events_dict_names_the_key(events, bad):
    kind, value = bad
    events = dict(events)
    if kind == "key":
        events[value] = ["tests.jobs.add"]
        named = repr(value)
    elif kind == "cron":
        events["cron"] = {value: ["tests.jobs.add"]}
        named = repr(value)
    else:  # a list where a dict is expected, or the reverse
        events[value] = {"* * * * *": ["tests.jobs.add"]} if value == "daily" else ["x"]
        named = repr(value)
    try:
        build_entries(events, get_settings())
    except ConfigError as exc:
        assert named in str(exc)
    else:
        raise AssertionError(f"accepted {events!r}")
