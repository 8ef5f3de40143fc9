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
    _check_method_name("doc_method", doc_method)
    document = get_document_loader()(doctype, name)
    return getattr(document, doc_method)(**kwargs)


def run_bound_method(bound_self: Any, bound_method: str, bound_kwargs: dict[str, Any]) -> Any:
    """``getattr(bound_self, bound_method)(**bound_kwargs)``: a bound method enqueued as
    ``frappe.enqueue(self.send_emails, ...)``, its object rebuilt from JSON by the framework's
    argument decoder (Frappe: ``integrations/frappe/arguments.py``).

    The method must be defined in an allowed module (a message must not reach a method of
    anything else) and must not be a dunder.
    """
    _check_method_name("bound_method", bound_method)
    method = getattr(bound_self, bound_method)
    defined_in = getattr(getattr(method, "__func__", None), "__module__", None) or ""
    reason = refusal_reason(defined_in) if defined_in else "not a method of its object"
    if reason:
        raise MethodNotAllowed(f"{type(bound_self).__name__}.{bound_method}: {reason}")
    return method(**bound_kwargs)


def _check_method_name(argument: str, name: Any) -> None:
    """A method name a message may ask for: an identifier, never a dunder (``__class__`` and
    the like lead out of the object); single underscores are allowed (``_submit``)."""
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"{argument}: got {name!r}; expected a method name")
    if name.startswith("__"):
        raise MethodNotAllowed(f"{argument}: got {name!r}; dunder methods cannot be run as jobs")
