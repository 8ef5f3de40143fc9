"""Which method of a document a job may call: Frappe's rule for ``enqueue_doc`` and
``Document.queue_action`` jobs (``run_doc_method``, ``execute_action``) and a Document's bound
methods (``frappe.enqueue(doc.method)``).

A job message names the doctype and the method by their text. Frappe itself calls whatever it
is named (``getattr(doc, doc_method)``), so a forged message could reach any method of any
DocType, ``_private`` ones and the generic ones every Document has (``db_set``,
``run_method``...). Allowed here, as Frappe's own call sites use them:

* a whitelisted method (``@frappe.whitelist()``: in ``frappe.whitelisted``), what the Desk
  could call anyway;
* a method the DocType's controller defines: its class or a base class of it other than
  Frappe's ``Document`` / ``BaseDocument`` (``background_submission`` of Submission Queue,
  ``_anonymize_data`` of Personal Data Deletion Request, an ``override_doctype_class``'s own);
* ``_x`` where ``x`` is one of those: ``queue_action("submit")`` enqueues ``_submit``, and
  ``queue_action("rename")`` ``_rename``.
"""

from __future__ import annotations

import inspect
from typing import Any

from frappe_celery import methods

# Frappe's Document methods named by Frappe's own jobs: the doctype and method arguments.
DOC_METHOD_JOBS = {
    "frappe.utils.background_jobs.run_doc_method": ("doctype", "doc_method"),
    "frappe.model.document.execute_action": ("__doctype", "__action"),
}
_GENERIC = ("frappe.model.document.Document", "frappe.model.base_document.BaseDocument")


def refusal(frappe: Any, doctype: Any, method: Any) -> str | None:
    """Why a job may not call ``method`` of a ``doctype`` document, or None if it may."""
    if not isinstance(doctype, str) or not isinstance(method, str) or not method.isidentifier():
        return f"expected a DocType name and a method name, got {doctype!r} and {method!r}"
    if method.startswith("__"):
        return "dunder methods can never be run as jobs"
    from frappe.model.base_document import get_controller

    try:
        controller = get_controller(doctype)
    except Exception as exc:  # a DocType missing on this site, a controller that fails import
        return f"DocType {doctype!r} has no controller here ({type(exc).__name__}: {exc})"
    allowed = _allowed(frappe, controller, method)
    if allowed is None and method.startswith("_"):
        allowed = _allowed(frappe, controller, method[1:])
    if allowed is None:
        return (
            f"{method!r} is neither whitelisted nor defined by the {doctype} controller "
            f"({controller.__module__}.{controller.__qualname__}); allowed: its whitelisted "
            "methods, the methods its controller defines, and _x for either (queue_action)"
        )
    denied = methods.denied_reason(methods.defined_name(allowed))
    return None if denied is None else f"{method!r}: {denied}"


def _allowed(frappe: Any, controller: type, method: str) -> Any:
    """The function ``method`` names on ``controller`` if whitelisted or the controller's own."""
    owner = next((cls for cls in controller.__mro__ if method in vars(cls)), None)
    if owner is None:
        return None
    attr = vars(owner)[method]
    func = attr.__func__ if isinstance(attr, (staticmethod, classmethod)) else attr
    if not inspect.isfunction(func):
        return None  # a property or a plain attribute: nothing a job calls
    whitelisted = func in getattr(frappe, "whitelisted", ())
    own = owner is not object and f"{owner.__module__}.{owner.__qualname__}" not in _GENERIC
    return func if whitelisted or own else None
