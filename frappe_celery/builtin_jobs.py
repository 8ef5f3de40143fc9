"""Job functions frappe-celery itself enqueues. Always allowed to run (see methods.py).

Shared by both sides: the worker runs them from messages, and the caller runs
``run_doc_method`` itself for ``enqueue_doc(..., now=True)``. Messages name them by their alias
``frappe_celery.jobs.<name>`` (jobs.py), the path earlier versions wrote and still read.
"""

from __future__ import annotations

from typing import Any

from frappe_celery.context import get_document_loader, get_job_context
from frappe_celery.errors import MethodNotAllowed
from frappe_celery.methods import defined_name, denied_reason, refusal_reason


def run_doc_method(doctype: str, name: str | None, doc_method: str, **kwargs: Any) -> Any:
    """``getattr(get_doc(doctype, name), doc_method)(**kwargs)``, for enqueue_doc.

    The document comes from the configured document loader. ``doc_method`` must be a method
    name; dunder names are refused (a message must not reach ``__class__`` and the like), single
    underscores are allowed as Frappe's queue_action uses ``_submit``. The job context may
    refuse more (Frappe: what is neither whitelisted nor the controller's own), and the
    method must be defined in an allowed module, under a name that is not denied.
    """
    _check_method_name("doc_method", doc_method)
    reason = get_job_context().doc_method_refusal(doctype, doc_method)
    if reason is not None:
        raise MethodNotAllowed(f"doc_method: got {doc_method!r} of {doctype!r}; {reason}")
    document = get_document_loader()(doctype, name)
    return _allowed_method(document, doc_method)(**kwargs)


def run_bound_method(bound_self: Any, bound_method: str, bound_kwargs: dict[str, Any]) -> Any:
    """``getattr(bound_self, bound_method)(**bound_kwargs)``: a bound method enqueued as
    ``frappe.enqueue(self.send_emails, ...)``, its object rebuilt from JSON by the framework's
    argument decoder (Frappe: ``integrations/frappe/arguments.py``).

    The method must be defined in an allowed module (a message must not reach a method of
    anything else) and must not be a dunder.
    """
    _check_method_name("bound_method", bound_method)
    return _allowed_method(bound_self, bound_method)(**bound_kwargs)


def _allowed_method(obj: Any, name: str) -> Any:
    """``getattr(obj, name)`` if it is a method defined in an allowed module under a name that
    is not denied (System Console's ``run`` is a method of a Document too)."""
    method = getattr(obj, name)
    func = getattr(method, "__func__", None)
    defined_in = getattr(func, "__module__", None) or ""
    reason = (
        (refusal_reason(defined_in) or denied_reason(defined_name(func)))
        if defined_in
        else "not a method of its object"
    )
    if reason:
        raise MethodNotAllowed(f"{type(obj).__name__}.{name}: {reason}")
    return method


def _check_method_name(argument: str, name: Any) -> None:
    """A method name a message may ask for: an identifier, never a dunder (``__class__`` and
    the like lead out of the object); single underscores are allowed (``_submit``)."""
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"{argument}: got {name!r}; expected a method name")
    if name.startswith("__"):
        raise MethodNotAllowed(f"{argument}: got {name!r}; dunder methods cannot be run as jobs")
