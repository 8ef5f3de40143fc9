"""Opt-in automatic retries of a job function, with exponential backoff and jitter.

Frappe retries only what it means to (a deadlock, a lock wait timeout,
``RetryBackgroundJobError``: 5 times, 1 to 5 s apart), and that rule stays as it is
(worker/attempt.py ``decide``). Any other failure fails the job, unless its function asks for
retries, without a new keyword to ``enqueue`` (a reserved keyword would be taken from every job's
own arguments: frappe/frappe#42561). Two ways, the first found wins:

* a decorator on the function::

      @frappe_celery.retry_policy(max_retries=4, backoff=30, on=["requests.ConnectionError"])
      def sync_orders(): ...

* a ``job_retries`` mapping, method path -> the same settings, in the config file's
  ``frappe_celery`` block or in a hooks module (beside ``scheduler_events``)::

      job_retries = {"myapp.tasks.sync_orders": {"max_retries": 4, "backoff": 30}}

Attempt n (0 for the first retry) waits ``min(max_backoff, backoff * 2**n)``; with ``jitter``
(the default) a random part of its second half is taken off ("equal jitter": half the wait,
plus up to the other half), so retries of many jobs failing together spread out. A job out of
retries fails as before and keeps every attempt's traceback (records.py ``attempts``).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from frappe_celery.errors import ConfigError, InvalidArgumentError

F = TypeVar("F", bound=Callable[..., Any])

ATTRIBUTE = "__frappe_celery_retry_policy__"
SETTINGS = ("max_retries", "backoff", "max_backoff", "jitter", "on")
# A wait longer than a day would outlive most records (failure_ttl is a week).
MAX_BACKOFF_LIMIT = 24 * 3600.0
MAX_RETRIES_LIMIT = 50


@dataclass(frozen=True)
class RetryPolicy:
    max_retries: int = 5
    backoff: float = 10.0  # seconds before the first retry
    max_backoff: float = 3600.0
    jitter: bool = True
    # Exception classes that are retried: dotted paths ("requests.ConnectionError") or class
    # names ("TimeoutError"), matched against the raised exception's classes; all by default.
    on: tuple[str, ...] = field(default=("Exception",))

    def delay(self, retry: int, rng: random.Random | None = None) -> float:
        """Seconds before retry number ``retry`` (0 for the first)."""
        wait = min(self.max_backoff, self.backoff * 2**retry)
        if self.jitter:
            wait = wait / 2 + (rng or random).uniform(0, wait / 2)
        return float(wait)

    def covers(self, exc: BaseException) -> bool:
        """Whether ``exc`` is one this policy retries."""
        names = set()
        for cls in type(exc).__mro__:
            names.add(cls.__name__)
            names.add(f"{cls.__module__}.{cls.__qualname__}")
        return any(name in names for name in self.on)


def make_policy(source: str, given: Mapping[str, Any]) -> RetryPolicy:
    """A policy from its settings, each checked; ``source`` names where they came from."""

    def refuse(name: str, value: Any, allowed: str) -> InvalidArgumentError:
        return InvalidArgumentError(f"{source}: {name}", value, allowed)

    unknown = set(given) - set(SETTINGS)
    if unknown:
        raise refuse(", ".join(sorted(unknown)), given, f"settings: {', '.join(SETTINGS)}")
    max_retries = given.get("max_retries", 5)
    if (
        isinstance(max_retries, bool)
        or not isinstance(max_retries, int)
        or not (1 <= max_retries <= MAX_RETRIES_LIMIT)
    ):
        raise refuse("max_retries", max_retries, f"a whole number from 1 to {MAX_RETRIES_LIMIT}")
    numbers = {}
    for name, default in (("backoff", 10.0), ("max_backoff", 3600.0)):
        value = given.get(name, default)
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not (0 < value <= MAX_BACKOFF_LIMIT)
        ):
            raise refuse(name, value, f"seconds, more than 0 and at most {MAX_BACKOFF_LIMIT:g}")
        numbers[name] = float(value)
    jitter = given.get("jitter", True)
    if not isinstance(jitter, bool):
        raise refuse("jitter", jitter, "true or false")
    on = given.get("on", ("Exception",))
    if isinstance(on, str | type):
        on = (on,)
    names = []
    for item in on if isinstance(on, Iterable) else [on]:
        if isinstance(item, type) and issubclass(item, BaseException):
            names.append(f"{item.__module__}.{item.__qualname__}")
        elif isinstance(item, str) and item.strip():
            names.append(item.strip())
        else:
            raise refuse("on", on, "exception classes, or their dotted paths or names")
    return RetryPolicy(max_retries, numbers["backoff"], numbers["max_backoff"], jitter,
                       tuple(names) or ("Exception",))  # fmt: skip


def retry_policy(
    *,
    max_retries: int = 5,
    backoff: float = 10.0,
    max_backoff: float = 3600.0,
    jitter: bool = True,
    on: Iterable[type[BaseException] | str] | type[BaseException] | str = ("Exception",),
) -> Callable[[F], F]:
    """Decorate a job function: its failures are retried (see the module's docstring). Bad
    settings raise :class:`InvalidArgumentError` at once, where the function is defined."""
    policy = make_policy(
        "retry_policy",
        {"max_retries": max_retries, "backoff": backoff, "max_backoff": max_backoff,
         "jitter": jitter, "on": on},
    )  # fmt: skip

    def decorate(function: F) -> F:
        setattr(function, ATTRIBUTE, policy)
        return function

    return decorate


def policies_from(source: str, mapping: Any) -> dict[str, RetryPolicy]:
    """A ``job_retries`` mapping (method path -> settings) read from ``source``."""
    if mapping is None:
        return {}
    if not isinstance(mapping, Mapping):
        raise ConfigError(f"{source}: job_retries must be an object of method path -> settings")
    found = {}
    for method, given in mapping.items():
        if not isinstance(method, str) or not isinstance(given, Mapping):
            raise ConfigError(
                f"{source}: job_retries[{method!r}] must be an object of settings "
                f"({', '.join(SETTINGS)})"
            )
        try:
            found[method] = make_policy(f"{source}: job_retries[{method!r}]", given)
        except InvalidArgumentError as exc:
            raise ConfigError(str(exc)) from None
    return found


def policy_of(
    method_path: str, function: Any, configured: Mapping[str, RetryPolicy]
) -> RetryPolicy | None:
    """The function's own policy (the decorator's), else the configured one, else None."""
    own = getattr(function, ATTRIBUTE, None)
    if isinstance(own, RetryPolicy):
        return own
    return configured.get(method_path)


__all__ = ["RetryPolicy", "make_policy", "policies_from", "policy_of", "retry_policy"]
