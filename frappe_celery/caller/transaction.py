"""enqueue_after_commit: publish a job only once the surrounding transaction commits.

A job enqueued with ``enqueue_after_commit=True`` is validated and encoded at once (bad input
still raises at the call), then handed to the innermost active *transaction scope*, which
publishes it when the transaction commits and drops it when it rolls back. Scopes:

* the generic one here: ``with transaction_scope(): ...``, or ``begin()`` / ``commit()`` /
  ``rollback()`` for code whose transaction is not a ``with`` block;
* a running job: the job itself is the transaction (as Frappe's execute_job commits at the
  end), so its after-commit jobs are published when it succeeds and dropped when it fails;
* framework adapters (``integrations/``): a SQLAlchemy session's commit/rollback, Frappe's
  ``frappe.db.after_commit``.

Outside any scope the job is published at once. Jobs buffered for one commit are published in
order, pipelined; if some fail, :class:`PublishError` says which (the others are published).
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Protocol

from frappe_celery.caller.publish import Publication, publish, publish_batch
from frappe_celery.errors import FrappeCeleryError
from frappe_celery.job import Job


class TransactionScope(Protocol):
    def defer(self, publication: Publication) -> None:
        """Publish ``publication`` when the transaction commits; drop it on rollback."""


class Transaction:
    """A buffer of jobs to publish on commit; the generic scope."""

    def __init__(self) -> None:
        self.pending: list[Publication] = []
        self.closed = False

    def defer(self, publication: Publication) -> None:
        if self.closed:
            raise FrappeCeleryError("this transaction scope has already committed or rolled back")
        self.pending.append(publication)

    def commit(self) -> list[Job | None]:
        """Publish the buffered jobs in order (pipelined); raises PublishError on failures."""
        pending, self.pending, self.closed = self.pending, [], True
        return publish_batch(pending)

    def rollback(self) -> None:
        self.pending, self.closed = [], True


_scopes: contextvars.ContextVar[tuple[TransactionScope, ...]] = contextvars.ContextVar(
    "frappe_celery_transaction_scopes", default=()
)
# Framework adapters that know whether a transaction is open where no scope was entered
# (Frappe: a request with frappe.db). Each returns a scope, or None when not applicable.
_scope_finders: list[Callable[[], TransactionScope | None]] = []


def register_scope_finder(finder: Callable[[], TransactionScope | None]) -> None:
    if finder not in _scope_finders:
        _scope_finders.append(finder)


def current_scope() -> TransactionScope | None:
    """The innermost entered scope, else one a framework adapter finds, else None."""
    scopes = _scopes.get()
    if scopes:
        return scopes[-1]
    for finder in _scope_finders:
        scope = finder()
        if scope is not None:
            return scope
    return None


def publish_after_commit(publication: Publication) -> None:
    """What enqueue does with ``enqueue_after_commit=True``."""
    scope = current_scope()
    if scope is None:
        publish(publication)
    else:
        scope.defer(publication)


@contextmanager
def enter_scope(active: TransactionScope) -> Iterator[TransactionScope]:
    """Make ``active`` the current scope inside the block (adapters use this)."""
    token = _scopes.set((*_scopes.get(), active))
    try:
        yield active
    finally:
        _scopes.reset(token)


@contextmanager
def transaction_scope() -> Iterator[Transaction]:
    """Publish the block's after-commit jobs if it completes; drop them if it raises."""
    tx = Transaction()
    with enter_scope(tx):
        try:
            yield tx
        except BaseException:
            tx.rollback()
            raise
    tx.commit()


# Explicit begin/commit/rollback, for transactions that are not a `with` block.
_ScopeToken = contextvars.Token[tuple[TransactionScope, ...]]
_explicit: contextvars.ContextVar[list[tuple[Transaction, _ScopeToken]]] = contextvars.ContextVar(
    "frappe_celery_explicit_transactions"
)


def begin() -> Transaction:
    """Open a transaction scope until :func:`commit` or :func:`rollback`."""
    tx = Transaction()
    token = _scopes.set((*_scopes.get(), tx))
    stack = _explicit.get(None)
    if stack is None:
        stack = []
        _explicit.set(stack)
    stack.append((tx, token))
    return tx


def _close_explicit() -> Transaction:
    stack = _explicit.get(None)
    if not stack:
        raise FrappeCeleryError("commit()/rollback() without begin()")
    tx, token = stack.pop()
    _scopes.reset(token)
    return tx


def commit() -> list[Job | None]:
    """Close the innermost begin() scope and publish its jobs."""
    return _close_explicit().commit()


def rollback() -> None:
    """Close the innermost begin() scope and drop its jobs."""
    _close_explicit().rollback()
