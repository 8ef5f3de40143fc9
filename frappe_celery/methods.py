"""Naming functions across processes: a job's method travels as a dotted path.

Two forms are accepted: Frappe's ``package.module.function`` (module = everything before the
last dot) and ``package.module:Qualified.name`` (what a callable becomes, so a staticmethod
``Class.func`` can be named too).

A job message is data from the network: resolving its method must never run something the user
did not allow. :func:`resolve_job_callable` therefore

* refuses modules outside the allowed prefixes (``Settings.effective_allowed_modules``) BEFORE
  importing anything (importing runs module code);
* refuses every standard-library module, allowed or not (no ``os.system``, ``subprocess.run``,
  ``builtins.eval``);
* refuses dunder names (``__globals__``, ``__class__``...) on the way: they lead out of the
  module into live objects. Single-underscore functions are ordinary job functions in Frappe
  (``frappe.enqueue(_bulk_action, ...)`` in bulk_update, workflow, print_format) and run;
* walks the ``module:Qual.name`` form only through classes defined in that module under
  that name: never through a module attribute that is an object (``frappe:db.sql`` would reach
  the site's database connection) or an instance; what it finds must be a function or a class;
* checks that the object found was defined in an allowed module, so a re-export such as
  ``myapp.tasks.system = os.system`` is refused too;
* refuses the trampolines and shells of :data:`DENIED` (``frappe.call``,
  ``frappe.utils.execute_in_shell``...), by the path named, by every module prefix of it and by
  the name the object found was defined under (a re-export).

The caller meets the same refusals at enqueue (:func:`normalize_path`, which walks a path
whose module the caller has already imported); the worker always does.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import re
import sys
from collections.abc import Callable
from typing import Any

from frappe_celery.config import Settings, get_settings
from frappe_celery.errors import InvalidArgumentError, MethodNotAllowed

_IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
_DOTTED = rf"{_IDENT}(?:\.{_IDENT})*"
# "a.b.func" (at least one dot) or "a.b:Qual.name".
PATH_PATTERN = re.compile(rf"^(?:{_IDENT}(?:\.{_IDENT})+|{_DOTTED}:{_DOTTED})$")

_STDLIB = frozenset(sys.stdlib_module_names) | {"builtins", "__main__"}
# frappe-celery's own job functions (enqueue_doc's run_doc_method): always allowed. Messages name
# them under ``frappe_celery.jobs`` (the alias their paths travel as); they are defined in
# ``frappe_celery.builtin_jobs``.
INTERNAL_JOBS_MODULES = frozenset({"frappe_celery.jobs", "frappe_celery.builtin_jobs"})

# Functions of allowed modules that run anything at all: a shell command, Python source, or a
# function named by their arguments. A job message names one only if the signing key is
# stolen, and with one of these the thief runs whatever they like; none is a job function any
# Frappe app enqueues (Frappe 15.44 and 16 read). An entry covers its name and everything
# under it ("frappe.db" covers "frappe.db.sql", "frappe.commands" every command module).
DENIED: dict[str, str] = {
    "frappe.call": "calls the function it is named",
    "frappe.get_attr": "resolves any dotted name (a trampoline's first half)",
    "frappe.utils.call": "frappe.call for bench execute",
    "frappe.utils.execute_in_shell": "runs a shell command",
    "frappe.db": "the site's database connection (frappe.db.sql runs any SQL)",
    "frappe.database": "database connections and DbManager.restore_database (a shell command)",
    # Not the whole module: a Server Script's frappe.enqueue (safe_enqueue) enqueues
    # call_whitelisted_function, which calls only whitelisted methods, checked for the job's
    # user as a web request's are.
    "frappe.utils.safe_exec.safe_exec": "runs the Python source it is given",
    "frappe.utils.safe_exec.safe_eval": "evaluates the Python expression it is given",
    "frappe.utils.safe_exec.run_script": "runs the Server Script it is named",
    "frappe.enqueue": "with is_async=False, calls any named function in the worker",
    "frappe.enqueue_doc": "enqueues a document method by name (enqueue_doc is the way)",
    "frappe.utils.background_jobs.enqueue": "with is_async=False, calls any named function",
    "frappe.utils.background_jobs.enqueue_doc": "enqueues a document method by name",
    "frappe.utils.background_jobs.execute_job": "RQ's job runner: calls any named function "
    "through frappe.get_attr, past this check",
    "frappe.utils.background_jobs.start_worker": "starts an RQ worker",
    "frappe.utils.background_jobs.start_worker_pool": "starts RQ workers",
    "frappe.handler": "the web request dispatcher (execute_cmd, run_server_script, "
    "run_doc_method call what a request names)",
    "frappe.api": "the REST dispatcher (calls any whitelisted method by name)",
    "frappe.commands": "bench's command line (console, execute, restore... run shells)",
    "frappe.installer": "installs and removes apps, restores databases, extracts archives "
    "through the shell",
    "frappe.build": "runs node and yarn through the shell",
    "frappe.desk.doctype.system_console": "System Console runs the Python its document holds, "
    "and a bound method's document is built from the message",
    "frappe.core.doctype.server_script": "Server Scripts run the code their document holds",
}

PATH_RULE = (
    "expected an importable module-level function: a dotted path such as "
    "'myapp.tasks.process_data' (or 'myapp.tasks:Class.static_method'), or the function itself"
)


def split_path(path: str) -> tuple[str, str]:
    """(module, qualname) of a dotted path that matches :data:`PATH_PATTERN`."""
    if ":" in path:
        module, qualname = path.split(":", 1)
    else:
        module, qualname = path.rsplit(".", 1)
    return module, qualname


def path_of_callable(argument: str, func: Callable[..., Any]) -> str:
    """The dotted path a worker can import ``func`` by; refuses what it never could."""
    if inspect.ismethod(func):
        raise InvalidArgumentError(
            argument, func, f"a bound method cannot be imported by a worker; {PATH_RULE}"
        )
    module = getattr(func, "__module__", None)
    qualname = getattr(func, "__qualname__", None)
    if not (inspect.isfunction(func) or inspect.isbuiltin(func) or inspect.isclass(func)):
        raise InvalidArgumentError(argument, func, PATH_RULE)
    if not module or not qualname or module == "__main__":
        raise InvalidArgumentError(
            argument, func, f"a function defined in __main__ cannot be imported; {PATH_RULE}"
        )
    if "<lambda>" in qualname or "<locals>" in qualname:
        raise InvalidArgumentError(
            argument,
            func,
            f"a lambda or nested function cannot be imported by a worker; {PATH_RULE}",
        )
    return f"{module}.{qualname}" if "." not in qualname else f"{module}:{qualname}"


def normalize_path(
    argument: str, method: str | Callable[..., Any], settings: Settings | None = None
) -> str:
    """Validate ``method`` (path or callable) for enqueue and return its dotted path.

    Raises :class:`InvalidArgumentError` for a malformed path, a lambda/nested/bound callable or
    a function outside the allowed modules.
    """
    path = method if isinstance(method, str) else path_of_callable(argument, method)
    if not isinstance(path, str) or not PATH_PATTERN.match(path):
        raise InvalidArgumentError(argument, method, PATH_RULE)
    dunder = dunder_in(path)
    if dunder is not None:
        raise InvalidArgumentError(
            argument, method, f"dunder names ({dunder}) can never be run as jobs; {PATH_RULE}"
        )
    module, qualname = split_path(path)
    reason = refusal_reason(module, settings) or denied_reason(f"{module}.{qualname}")
    if reason:
        raise InvalidArgumentError(argument, method, reason)
    # The worker would import the module to look further; a caller that has it imported already
    # can look now, at no cost, and refuse before anything is written.
    if module in sys.modules:
        try:
            _check_found(path, _walk(module, qualname, job=True), settings)
        except (AttributeError, ImportError):
            pass  # absent here: the worker decides (it may have a newer copy)
        except MethodNotAllowed as exc:
            raise InvalidArgumentError(argument, method, str(exc)) from None
    return path


def refusal_reason(module: str, settings: Settings | None = None) -> str | None:
    """Why a job may not name a function of ``module``, or None if it may."""
    return _refusal(module, (settings or get_settings()).effective_allowed_modules())


# Every enqueue asks about a handful of modules against the same settings: remembered.
@functools.lru_cache(maxsize=1024)
def _refusal(module: str, allowed: tuple[str, ...]) -> str | None:
    if module.split(".")[0] in _STDLIB:
        return "standard-library functions can never be run as jobs"
    if module in INTERNAL_JOBS_MODULES:
        return None
    if not _under_any(module, allowed):
        shown = ", ".join(allowed) or "none configured"
        return (
            f"module {module!r} is not allowed to run as a job; allowed module prefixes: {shown} "
            "(set FRAPPE_CELERY_ALLOWED_MODULES or FRAPPE_CELERY_HOOKS)"
        )
    return None


def denied_reason(name: str) -> str | None:
    """Why the dotted ``name`` (``module.qualname``) is on :data:`DENIED`, or None. Every
    prefix of it is checked, so a module under a denied one is denied."""
    parts = name.split(".")
    for end in range(1, len(parts) + 1):
        prefix = ".".join(parts[:end])
        if prefix in DENIED:
            return (
                f"{prefix} {DENIED[prefix]}: it can never be run as a job "
                "(methods.DENIED lists such trampolines and shells)"
            )
    return None


def defined_name(obj: Any) -> str:
    """``module.qualname`` the object was defined under ("" when it does not say)."""
    func = getattr(obj, "__func__", obj)  # a classmethod found on its class
    module, qualname = getattr(func, "__module__", None), getattr(func, "__qualname__", None)
    return f"{module}.{qualname}" if isinstance(module, str) and isinstance(qualname, str) else ""


def _under_any(module: str, prefixes: tuple[str, ...]) -> bool:
    """Whether ``module`` is one of ``prefixes`` or inside one of them."""
    return any(module == prefix or module.startswith(prefix + ".") for prefix in prefixes)


def dunder_in(path: str) -> str | None:
    """The first dunder (``__x``) part of a dotted path, if any: never resolved."""
    if "__" not in path:  # every enqueue asks: the usual answer without a split
        return None
    return next((part for part in re.split(r"[.:]", path) if part.startswith("__")), None)


def _walk(module_name: str, qualname: str, *, job: bool = False) -> Any:
    """The object at ``module_name:qualname``. For a job (``job=True``) every step after the
    module must be a class defined in that module under the name walked so far: a message
    never walks into a live object (``frappe:db.sql``), an instance or another module
    (``frappe:utils.execute_in_shell``); :class:`MethodNotAllowed` says where it stopped."""
    dunder = dunder_in(f"{module_name}:{qualname}")
    if dunder is not None:
        raise AttributeError(f"dunder name {dunder!r} in {module_name}:{qualname}")
    obj: Any = importlib.import_module(module_name)
    parts = qualname.split(".")
    for index, part in enumerate(parts):
        if job and index > 0:
            walked = ".".join(parts[:index])
            if not (
                inspect.isclass(obj)
                and obj.__module__ == module_name
                and obj.__qualname__ == walked
            ):
                raise MethodNotAllowed(
                    f"{module_name}:{qualname}: {module_name}:{walked} is {_kind(obj)}, not a "
                    f"class defined in {module_name}; a path walks only through such classes"
                )
        obj = getattr(obj, part)
    return obj


def _kind(obj: Any) -> str:
    if inspect.ismodule(obj):
        return f"the module {obj.__name__}"
    if inspect.isclass(obj):
        return f"the class {defined_name(obj) or obj!r} (defined elsewhere)"
    return f"an object of type {type(obj).__name__}"


def _check_found(path: str, obj: Any, settings: Settings | None = None) -> None:
    """Refuse what a job's path led to unless it is a function or class defined in an allowed
    module under a name that is not denied (a re-export of a denied function is denied)."""
    name = defined_name(obj)
    defined_in = getattr(getattr(obj, "__func__", obj), "__module__", None) or ""
    if not (inspect.isroutine(obj) or inspect.isclass(obj)) or not name:
        raise MethodNotAllowed(
            f"{path}: resolves to {_kind(obj)}, which is not a function or a class"
        )
    reason = refusal_reason(defined_in, settings) or denied_reason(name)
    if reason:
        raise MethodNotAllowed(
            f"{path}: resolves to {name}, defined in {defined_in}, which is not an allowed job "
            f"function ({reason})"
        )


def import_trusted(path: str) -> Any:
    """Import a path that comes from configuration (hooks, settings), not from a message."""
    if not PATH_PATTERN.match(path):
        raise ImportError(f"{path!r} is not a dotted path ({PATH_RULE})")
    module, qualname = split_path(path)
    try:
        return _walk(module, qualname)
    except AttributeError as exc:
        raise ImportError(f"cannot import {path!r}: {exc}") from None


def resolve_job_callable(path: str) -> Callable[..., Any]:
    """Resolve a method or callback path carried by a job message, under the allowlist.

    Raises :class:`MethodNotAllowed` for anything outside what the user allows and
    ImportError when an allowed path does not exist.
    """
    if not isinstance(path, str) or not PATH_PATTERN.match(path):
        raise MethodNotAllowed(f"{path!r} is not a dotted path; refusing to run it")
    module, qualname = split_path(path)
    reason = refusal_reason(module) or denied_reason(f"{module}.{qualname}")
    if reason:
        raise MethodNotAllowed(f"{path}: {reason}")
    try:
        obj = _walk(module, qualname, job=True)
    except AttributeError as exc:
        raise ImportError(f"cannot import {path!r}: {exc}") from None
    _check_found(path, obj)
    return obj  # type: ignore[no-any-return]


# frappe.call never forwards these two, whatever the function's signature.
_FRAPPE_CALL_DROPPED = ("ignore_permissions", "flags")


def call_with_accepted_kwargs(func: Callable[..., Any], kwargs: dict[str, Any]) -> Any:
    """Call ``func`` with only the keyword arguments it accepts (Frappe's ``frappe.call``)."""
    kwargs = {k: v for k, v in kwargs.items() if k not in _FRAPPE_CALL_DROPPED}
    try:
        params = inspect.signature(func).parameters
    except (TypeError, ValueError):
        return func(**kwargs)
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return func(**kwargs)
    accepted = {
        name
        for name, p in params.items()
        if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    }
    return func(**{k: v for k, v in kwargs.items() if k in accepted})
