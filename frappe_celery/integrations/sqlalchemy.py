"""enqueue_after_commit for SQLAlchemy sessions.

    from frappe_celery.integrations.sqlalchemy import track_session

    with Session(engine) as session, track_session(session):
        session.add(Invoice(name="INV-1"))
        frappe.enqueue("myapp.tasks.send_invoice", enqueue_after_commit=True, name="INV-1")
        session.commit()          # the row is committed, then the job is published

A rollback (explicit, or the session closing with the transaction open) drops the buffered jobs,
so rows and jobs land together or not at all.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import event
from sqlalchemy.orm import Session

from frappe_celery.caller.publish import Publication, publish_batch
from frappe_celery.caller.transaction import enter_scope

_PENDING = "frappe_celery.after_commit"


class SessionScope:
    """Buffers publications in ``session.info`` until the session commits or rolls back."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def defer(self, publication: Publication) -> None:
        self.session.info.setdefault(_PENDING, []).append(publication)


def _publish_pending(session: Session) -> None:
    pending = session.info.pop(_PENDING, [])
    publish_batch(pending)


def _drop_pending(session: Session, *_: Any) -> None:
    session.info.pop(_PENDING, None)


@contextmanager
def track_session(session: Session) -> Iterator[SessionScope]:
    """Inside the block, after-commit jobs wait for ``session``'s commit."""
    event.listen(session, "after_commit", _publish_pending)
    event.listen(session, "after_rollback", _drop_pending)
    event.listen(session, "after_soft_rollback", _drop_pending)
    try:
        with enter_scope(SessionScope(session)) as active:
            yield active  # type: ignore[misc]
    finally:
        event.remove(session, "after_commit", _publish_pending)
        event.remove(session, "after_rollback", _drop_pending)
        event.remove(session, "after_soft_rollback", _drop_pending)
        # Left uncommitted when the block ended: never published.
        _drop_pending(session)
