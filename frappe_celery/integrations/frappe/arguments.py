"""Frappe's job arguments as JSON: Documents, ``frappe._dict``, tuples, sets and callables.

Frappe call sites pass these in ``enqueue`` kwargs and RQ pickles them. Here they travel as
tagged JSON objects ``{"__frappe_celery__": KIND, ...}`` and are rebuilt in the worker once the
job's site is open (a Document needs its site's DocType meta):

============  ==================================================  ===========================
kind          sent as                                             arrives as
============  ==================================================  ===========================
document      ``doc.as_dict()`` (children, ``__islocal`` ...)     ``frappe.get_doc(data)``
_dict         its items                                           ``frappe._dict``
tuple, set    their items                                         ``tuple``, ``set``
callable      its dotted path                                     the function, resolved under
                                                                  the job allowlist
============  ==================================================  ===========================

datetimes, dates, times, Decimals and UUIDs ride on kombu's own JSON type tags. Anything else
(a file handle, a connection, a class instance) is refused at enqueue with the argument named:
never pickle.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime, time
from decimal import Decimal
from typing import Any
from uuid import UUID

from ...errors import InvalidArgumentError, UnserializableArgumentError
from ...methods import normalize_path, resolve_job_callable

TAG = "__frappe_celery__"
_SCALARS = (str, int, float, bool, type(None), datetime, date, time, Decimal, UUID)


def _frappe() -> Any:
    import frappe

    return frappe


def encode_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    """``kwargs`` with every Frappe type replaced by its tagged JSON form.

    Raises :class:`UnserializableArgumentError` naming the argument holding something that
    cannot travel.
    """
    frappe = _frappe()
    # Imported here, not read as frappe.model...: a `bench execute` process may not have
    # loaded it yet.
    from frappe.model.document import Document as document_class

    return {
        name: _encode(name, value, frappe._dict, document_class) for name, value in kwargs.items()
    }


def _encode(name: str, value: Any, dict_class: type, document_class: type) -> Any:
    if isinstance(value, _SCALARS):
        return value
    if isinstance(value, document_class):
        data = value.as_dict()  # type: ignore[attr-defined]
        return {TAG: "document", "data": _encode(name, data, dict, document_class)}
    if isinstance(value, dict):
        for key in value:
            if not isinstance(key, str):
                # JSON would turn it into a string silently: the job would get other keys.
                raise UnserializableArgumentError(f"{name}[{key!r}]", key)
        items = {
            key: _encode(name, item, dict_class, document_class) for key, item in value.items()
        }
        if isinstance(value, dict_class):
            return {TAG: "_dict", "items": items}
        if TAG in value:
            raise UnserializableArgumentError(name, value)
        return items
    if isinstance(value, list):
        return [_encode(name, item, dict_class, document_class) for item in value]
    if isinstance(value, tuple | set | frozenset):
        kind = "tuple" if isinstance(value, tuple) else "set"
        return {
            TAG: kind,
            "items": [_encode(name, item, dict_class, document_class) for item in value],
        }
    if callable(value):
        try:
            return {TAG: "callable", "path": normalize_path(name, value)}
        except InvalidArgumentError:
            raise UnserializableArgumentError(name, value) from None
    raise UnserializableArgumentError(name, value)


def decode_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    """The job's kwargs with tagged values rebuilt; call inside the job's site."""
    frappe = _frappe()
    return {name: _decode(value, frappe) for name, value in kwargs.items()}


def _decode(value: Any, frappe: Any) -> Any:
    if isinstance(value, list):
        return [_decode(item, frappe) for item in value]
    if not isinstance(value, dict):
        return value
    kind = value.get(TAG)
    if kind is None:
        return {key: _decode(item, frappe) for key, item in value.items()}
    build: Callable[[Any], Any] | None = _BUILDERS.get(kind)
    if build is None:
        raise ValueError(f"unknown argument tag {kind!r}; expected one of {', '.join(_BUILDERS)}")
    return build(_decode(value.get("data", value.get("items", value.get("path"))), frappe))


_BUILDERS: dict[str, Callable[[Any], Any]] = {
    "document": lambda data: _frappe().get_doc(data),
    "_dict": lambda items: _frappe()._dict(items),
    "tuple": tuple,
    "set": set,
    # A message names the function: it resolves under the same allowlist as the job's method.
    "callable": resolve_job_callable,
}
