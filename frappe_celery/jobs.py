"""Job functions frappe-celery itself enqueues. Always allowed to run (see methods.py)."""

from __future__ import annotations

from typing import Any

from .context import get_document_loader


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
