"""Job functions frappe-celery itself enqueues. Always allowed to run (see methods.py)."""

from __future__ import annotations

from typing import Any

from .context import get_document_loader
from .errors import MethodNotAllowed
from .methods import refusal_reason


def run_doc_method(doctype: str, name: str | None, doc_method: str, **kwargs: Any) -> Any:
    """``getattr(get_doc(doctype, name), doc_method)(**kwargs)``, for enqueue_doc.

    The document comes from the configured document loader. ``doc_method`` must be a method
    name; dunder names are refused (a message must not reach ``__class__`` and the like), single
    underscores are allowed as Frappe's queue_action uses ``_submit``.
    """
    if not isinstance(doc_method, str) or not doc_method.isidentifier():
        raise ValueError(f"doc_method: got {doc_method!r}; expected a method name")
    if doc_method.startswith("__"):
        raise ValueError(f"doc_method: got {doc_method!r}; dunder methods cannot be run as jobs")
    document = get_document_loader()(doctype, name)
    return getattr(document, doc_method)(**kwargs)


def run_bound_method(bound_self: Any, bound_method: str, bound_kwargs: dict[str, Any]) -> Any:
    """``getattr(bound_self, bound_method)(**bound_kwargs)``: a bound method enqueued as
    ``frappe.enqueue(self.send_emails, ...)``, its object rebuilt from JSON by the framework's
    argument decoder (Frappe: ``integrations/frappe/arguments.py``).

    The method must be defined in an allowed module (a message must not reach a method of
    anything else) and must not be a dunder.
    """
    if not isinstance(bound_method, str) or not bound_method.isidentifier():
        raise ValueError(f"bound_method: got {bound_method!r}; expected a method name")
    if bound_method.startswith("__"):
        raise MethodNotAllowed(f"{bound_method}: dunder methods cannot be run as jobs")
    method = getattr(bound_self, bound_method)
    defined_in = getattr(getattr(method, "__func__", None), "__module__", None) or ""
    reason = refusal_reason(defined_in) if defined_in else "not a method of its object"
    if reason:
        raise MethodNotAllowed(f"{type(bound_self).__name__}.{bound_method}: {reason}")
    return method(**bound_kwargs)
