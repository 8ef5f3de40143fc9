"""Running inside a Frappe bench: Frappe's own site context, documents and transactions.

Call :func:`install` once in every process (web and worker), e.g. from your app's hooks module:

* jobs run inside ``frappe.init(site)`` / ``frappe.connect()`` / ``frappe.set_user(user)``,
  commit or roll back with ``frappe.db``, and ``frappe.destroy()`` afterwards;
* the enqueue side captures ``frappe.local.site`` and ``frappe.session.user``;
* ``enqueue_doc`` loads documents with ``frappe.get_doc``;
* ``enqueue_after_commit`` registers on ``frappe.db.after_commit`` whenever a database
  connection is open (Frappe discards those callbacks on rollback).
"""

from __future__ import annotations

from typing import Any

from ..context import JobContext, set_document_loader, set_job_context
from ..publish import Publication, publish
from ..transaction import register_scope_finder


def _frappe() -> Any:
    import frappe  # the one place that imports Frappe

    return frappe


class FrappeJobContext(JobContext):
    def current_site(self) -> str | None:
        return getattr(_frappe().local, "site", None)

    def current_user(self) -> str | None:
        session = getattr(_frappe().local, "session", None)
        return getattr(session, "user", None)

    def setup(self, site: str, user: str | None) -> None:
        frappe = _frappe()
        frappe.init(site, force=True)
        frappe.connect()
        if user:
            frappe.set_user(user)

    def commit(self) -> None:
        _frappe().db.commit()

    def rollback(self) -> None:
        _frappe().db.rollback()

    def teardown(self) -> None:
        _frappe().destroy()


class FrappeAfterCommitScope:
    def __init__(self, db: Any) -> None:
        self.db = db

    def defer(self, publication: Publication) -> None:
        self.db.after_commit.add(lambda: publish(publication))


def find_frappe_scope() -> FrappeAfterCommitScope | None:
    """The open Frappe transaction, if this process has a database connection."""
    db = getattr(_frappe().local, "db", None)
    return FrappeAfterCommitScope(db) if db is not None else None


def get_doc(doctype: str, name: str | None) -> Any:
    return _frappe().get_doc(doctype, name)


def install() -> None:
    """Use Frappe's context, documents and transactions in this process."""
    set_job_context(FrappeJobContext())
    set_document_loader(get_doc)
    register_scope_finder(find_frappe_scope)
