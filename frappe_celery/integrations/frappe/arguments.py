"""Frappe's job arguments as JSON: Documents, ``frappe._dict``, Time values, bytes, tuples,
sets, callables and bound methods' objects.

Frappe call sites pass these in ``enqueue`` kwargs and RQ pickles them. Here they travel as
tagged JSON objects ``{"__frappe_celery__": KIND, ...}`` and are rebuilt in the worker once the
job's site is open (a Document needs its site's DocType meta):

==========  ====================================================  ===========================
kind        sent as                                               arrives as
==========  ====================================================  ===========================
document    ``doc.as_dict()`` (children, ``__islocal`` ...)       ``frappe.get_doc(data)``
object      its class path and ``vars(obj)`` (tagged in turn)     an instance of that class
            (``self`` of a bound method, such as Frappe's         (class resolved under the
            ``QueueBuilder``)                                     job allowlist), never pickle
_dict       its items                                             ``frappe._dict``
timedelta   days, seconds, microseconds (MariaDB Time fields      ``datetime.timedelta``
            load as timedelta: ``posting_time``, Shift Type)
bytes       base64                                                ``bytes``
tuple, set, their items                                           ``tuple``, ``set``,
frozenset                                                         ``frozenset``
callable    its dotted path                                       the function, resolved under
                                                                  the job allowlist
==========  ====================================================  ===========================

datetimes, dates, times, Decimals and UUIDs ride on kombu's own JSON type tags. Anything else
(a file handle, a connection, an object whose state holds one) is refused at enqueue with the
argument named: never pickle.
"""

from __future__ import annotations

import base64
import inspect
from collections.abc import Callable
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID

from frappe_celery.errors import InvalidArgumentError, UnserializableArgumentError
from frappe_celery.methods import dunder_in, normalize_path, resolve_job_callable

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


def encode_instance(name: str, instance: Any) -> Any:
    """The tagged form of a bound method's ``self``: a Document as its data, another object of
    an allowed module as its class path and state. Raises :class:`UnserializableArgumentError`
    naming ``name`` (or the attribute of its state) when it cannot travel."""
    frappe = _frappe()
    from frappe.model.document import Document as document_class

    if isinstance(instance, document_class):
        return _encode(name, instance, frappe._dict, document_class)
    return _encode_object(name, instance, frappe._dict, document_class)


def _encode_object(name: str, value: Any, dict_class: type, document_class: type) -> Any:
    cls = type(value)
    try:
        path = normalize_path(name, cls)
    except InvalidArgumentError as exc:
        raise UnserializableArgumentError(name, value) from exc
    state = getattr(value, "__dict__", None)
    if not isinstance(state, dict) or hasattr(cls, "__slots__"):
        raise UnserializableArgumentError(name, value)
    return {
        TAG: "object",
        "class": path,
        "state": {
            attr: _encode(f"{name}.{attr}", item, dict_class, document_class)
            for attr, item in state.items()
        },
    }


def _encode(name: str, value: Any, dict_class: type, document_class: type) -> Any:
    if isinstance(value, _SCALARS):
        return value
    if isinstance(value, document_class):
        data = value.as_dict()  # type: ignore[attr-defined]
        return {TAG: "document", "data": _encode(name, data, dict, document_class)}
    if isinstance(value, timedelta):
        return {TAG: "timedelta", "items": [value.days, value.seconds, value.microseconds]}
    if isinstance(value, bytes):
        return {TAG: "bytes", "items": base64.b64encode(value).decode("ascii")}
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
        # A subclass (a namedtuple) arrives as its base type, as it always has.
        kind = (
            "tuple" if isinstance(value, tuple) else
            "frozenset" if isinstance(value, frozenset) else "set"
        )  # fmt: skip
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
    if kind == "object":
        return _build_object(value.get("class"), _decode(value.get("state"), frappe))
    build: Callable[[Any], Any] | None = _BUILDERS.get(kind)
    if build is None:
        known = ", ".join([*_BUILDERS, "object"])
        raise ValueError(f"unknown argument tag {kind!r}; expected one of {known}")
    return build(_decode(value.get("data", value.get("items", value.get("path"))), frappe))


def _build_object(path: Any, state: Any) -> Any:
    """An instance of the class at ``path`` (resolved under the job allowlist, as a job's
    method is) with ``state`` as its attributes; its ``__init__`` is not called, as unpickling
    does not call it."""
    cls = resolve_job_callable(path)
    if not isinstance(cls, type) or not isinstance(state, dict):
        raise ValueError(f"object argument: {path!r} is not a class with a state")
    if any(not isinstance(attr, str) or attr.startswith("__") for attr in state):
        raise ValueError(f"object argument of {path}: dunder or non-text attribute names")
    klass: Any = cls
    instance = klass.__new__(klass)
    instance.__dict__.update(state)
    return instance


def _timedelta(parts: Any) -> timedelta:
    days, seconds, microseconds = parts
    return timedelta(days=days, seconds=seconds, microseconds=microseconds)


_BUILDERS: dict[str, Callable[[Any], Any]] = {
    "document": lambda data: _frappe().get_doc(data),
    "_dict": lambda items: _frappe()._dict(items),
    "timedelta": _timedelta,
    "bytes": lambda text: base64.b64decode(text, validate=True),
    "tuple": tuple,
    "set": set,
    "frozenset": frozenset,
    # A message names the function: it resolves under the same allowlist as the job's method.
    "callable": resolve_job_callable,
}


# -- bound methods --------------------------------------------------------------------------------

RUN_BOUND_METHOD = "frappe_celery.jobs.run_bound_method"


def encode_call(
    method: Any, kwargs: dict[str, Any], job_name: str | None
) -> tuple[Any, dict[str, Any], str | None]:
    """A job's method, kwargs (as JSON) and display name, as they travel.

    ``frappe.enqueue(self.send_emails, ...)`` (a bound method: RQ pickles ``self``) becomes
    ``run_bound_method(bound_self, bound_method, bound_kwargs)`` with ``self`` as JSON (a
    Document as its data, another object as its class and state) and the display name RQ gives
    it (``module.Class.method``). A function or a classmethod travels as its path.

    Raises :class:`InvalidArgumentError` naming ``method`` when its object cannot travel, and
    :class:`UnserializableArgumentError` naming the argument that cannot.
    """
    if not inspect.ismethod(method) or isinstance(method.__self__, type):
        return method, encode_kwargs(kwargs), job_name
    func, instance = method.__func__, method.__self__
    name = func.__name__
    if dunder_in(name):
        raise InvalidArgumentError("method", method, "dunder methods can never be run as jobs")
    # The function itself must be one a worker may run: an allowed module, importable.
    normalize_path("method", func)
    # A Document's method: the worker will ask what it asks of enqueue_doc's (doc_methods.py).
    from frappe.model.document import Document

    if isinstance(instance, Document):
        from frappe_celery.integrations.frappe.doc_methods import refusal

        reason = refusal(_frappe(), instance.doctype, name)
        if reason is not None:
            raise InvalidArgumentError("method", method, reason)
    try:
        bound_self = encode_instance("method.__self__", instance)
    except UnserializableArgumentError as exc:
        raise InvalidArgumentError(
            "method", method, f"its object cannot travel as JSON ({exc}); pass a Document, an "
            "object of an allowed app whose attributes are JSON types, or a function",
        ) from None  # fmt: skip
    display = job_name or f"{func.__module__}.{func.__qualname__}"
    encoded = {"bound_self": bound_self, "bound_method": name,
               "bound_kwargs": encode_kwargs(kwargs)}  # fmt: skip
    return RUN_BOUND_METHOD, encoded, display
