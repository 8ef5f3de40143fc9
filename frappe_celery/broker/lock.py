"""A token-checked Redis lock for jobs that need exclusive access (Frappe apps' "run_with_lock").

    from frappe_celery import job_lock, LockHeld

    with job_lock("rebuild-stock-ledger", timeout=600):
        rebuild()

    @job_lock("nightly-sync", timeout=3600)
    def nightly_sync(): ...

The lock is ``SET key token NX PX timeout``: it expires by itself if its holder dies, and it is
released by a script that deletes it only while it still holds this holder's token, so a holder
whose lock expired can never release a newer holder's lock.
"""

from __future__ import annotations

import functools
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import ParamSpec, TypeVar

from frappe_celery.broker import keys, scripts
from frappe_celery.connection import broker_errors, get_redis
from frappe_celery.errors import FrappeCeleryError, InvalidArgumentError

P = ParamSpec("P")
R = TypeVar("R")


class LockHeld(FrappeCeleryError):
    """Another holder has the lock (raised when it could not be taken in time)."""

    def __init__(self, name: str, remaining_ms: int) -> None:
        self.name = name
        self.remaining = remaining_ms / 1000 if remaining_ms > 0 else None
        expires = f"; it expires in {self.remaining:.1f} s" if self.remaining else ""
        super().__init__(f"lock {name!r} is held by another job{expires}")


class JobLock:
    """One acquisition of a named lock; use :func:`job_lock` rather than this directly."""

    def __init__(self, name: str, timeout: float, wait: float) -> None:
        if not isinstance(name, str) or not name:
            raise InvalidArgumentError("name", name, "expected a non-empty string")
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
            raise InvalidArgumentError("timeout", timeout, "expected a positive number of seconds")
        if isinstance(wait, bool) or not isinstance(wait, int | float) or wait < 0:
            raise InvalidArgumentError("wait", wait, "expected 0 or more seconds")
        self.name = name
        self.key = keys.lock(name)
        self.timeout_ms = int(timeout * 1000)
        self.wait = wait
        self.token = uuid.uuid4().hex

    def acquire(self) -> None:
        """Take the lock, polling up to ``wait`` seconds; raises :class:`LockHeld`."""
        deadline = time.monotonic() + self.wait
        client = get_redis()
        with broker_errors():
            while not client.set(self.key, self.token, nx=True, px=self.timeout_ms):
                if time.monotonic() >= deadline:
                    raise LockHeld(self.name, int(client.pttl(self.key)))
                time.sleep(min(0.1, max(deadline - time.monotonic(), 0)))

    def release(self) -> bool:
        """Release if still ours; False when it had expired (and maybe been taken by another)."""
        with broker_errors():
            return bool(scripts.RELEASE_LOCK(get_redis(), [self.key], [self.token]))


class job_lock:  # lowercase, like contextlib's helpers: it reads as a function
    """Context manager and decorator holding the lock ``name`` for at most ``timeout`` seconds.

    ``wait`` (default 0) is how long to wait for a held lock before raising :class:`LockHeld`.
    """

    def __init__(self, name: str, timeout: float, wait: float = 0) -> None:
        self.name, self.timeout, self.wait = name, timeout, wait
        # Validate now, so a bad decorator argument fails at import time.
        JobLock(name, timeout, wait)
        self._held: list[JobLock] = []

    def __enter__(self) -> JobLock:
        lock = JobLock(self.name, self.timeout, self.wait)
        lock.acquire()
        self._held.append(lock)
        return lock

    def __exit__(self, *exc: object) -> None:
        self._held.pop().release()

    def __call__(self, func: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(func)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            with _held(self.name, self.timeout, self.wait):
                return func(*args, **kwargs)

        return wrapper


@contextmanager
def _held(name: str, timeout: float, wait: float) -> Iterator[JobLock]:
    lock = JobLock(name, timeout, wait)
    lock.acquire()
    try:
        yield lock
    finally:
        lock.release()
