"""The switch: Frappe's own background-job functions, sent through frappe-celery.

:func:`apply` replaces, in ``frappe.utils.background_jobs``, every name Frappe's call sites use
(``enqueue``, ``enqueue_doc``, ``is_job_enqueued``, ``get_job``, ``get_job_status``,
``get_jobs``, ``get_workers``, ``get_queue``, ``get_queues``, ``get_queue_list``,
``get_queues_timeout``,
``create_job_id``, ``validate_queue``, and ``start_worker`` / ``start_worker_pool``: ``bench
worker`` and ``bench worker-pool``) and ``rq.get_current_job``; and it rebinds the modules
that imported one of those names before (``from frappe.utils.background_jobs import enqueue``
at import time, ``frappe.enqueue`` itself). ``Document.queue_action`` imports ``enqueue`` when
called, so it follows. :func:`revert` puts Frappe's own functions back.

For every process of a bench, the operator's one step is ``frappe-celery bench enable``
(``bench_cli.py``): it writes ``frappe_celery_switch.pth`` into the bench's virtualenv, so
that any Python process there (gunicorn, ``bench execute``, ``bench console``, the workers)
calls :func:`apply` right after Frappe loads ``frappe.utils.background_jobs``, before any other
module can import a name from it (``frappe_celery_switch.py``). ``frappe-celery bench
disable`` removes the file.
"""

from __future__ import annotations

import importlib.util
import sys
import sysconfig
import threading
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from frappe_celery.caller.enqueue import (
    create_job_id,
    get_job_status,
    get_queue_list,
    get_queues_timeout,
    is_job_enqueued,
    validate_queue,
)
from frappe_celery.integrations.frappe import bench_worker, rq_compat
from frappe_celery.integrations.frappe import enqueue as frappe_enqueue
from frappe_celery.job import Job, NoSuchJobError
from frappe_celery.ops import monitor

BACKGROUND_JOBS = "frappe.utils.background_jobs"

# The functions Frappe code calls, and frappe-celery's version of each.
REPLACEMENTS: dict[str, Callable[..., Any]] = {
    # frappe-celery's, with Frappe's errors (ValidationError, QueueOverloaded) and fallbacks.
    "enqueue": frappe_enqueue.enqueue,
    "enqueue_doc": frappe_enqueue.enqueue_doc,
    "is_job_enqueued": is_job_enqueued,
    "get_job": rq_compat.get_job,  # with RQ's Job API (get_id, meta, latest_result...)
    "get_job_status": get_job_status,
    "get_jobs": monitor.get_jobs,
    "get_workers": rq_compat.get_workers,
    "get_queue": rq_compat.get_queue,
    "get_queues": rq_compat.get_queues,
    "get_queue_list": get_queue_list,
    "get_queues_timeout": get_queues_timeout,
    "create_job_id": create_job_id,
    "validate_queue": validate_queue,
    # `bench worker` / `bench worker-pool` (and the Procfile and supervisor lines bench writes)
    # start Celery workers.
    "start_worker": bench_worker.start_worker,
    "start_worker_pool": bench_worker.start_worker_pool,
}

_lock = threading.Lock()
# (module, name) -> Frappe's or RQ's own object, for revert(); empty while not applied.
_originals: dict[tuple[str, str], Any] = {}


class FrappeNotImportable(RuntimeError):
    """The switch needs Frappe, and this Python cannot import it."""


def _import_frappe_modules() -> tuple[ModuleType, ModuleType]:
    try:
        import frappe.utils.background_jobs as background_jobs
        import rq
    except ImportError as exc:
        raise FrappeNotImportable(
            f"the Frappe switch needs Frappe, but {sys.executable} cannot import it ({exc}); "
            "run it with the bench's own Python (BENCH/env/bin/...)"
        ) from exc
    return background_jobs, rq


def is_applied() -> bool:
    return bool(_originals)


def apply() -> bool:
    """Send Frappe's background-job functions through frappe-celery in this process.

    Returns False when it was already applied (a second call changes nothing). Raises
    :class:`FrappeNotImportable` when Frappe is not importable here.
    """
    background_jobs, rq = _import_frappe_modules()
    with _lock:
        if _originals:
            return False
        for name, replacement in REPLACEMENTS.items():
            _originals[(BACKGROUND_JOBS, name)] = getattr(background_jobs, name)
            setattr(background_jobs, name, replacement)
        original_current_job = rq.get_current_job
        current_job = rq_compat.current_job_getter(original_current_job)
        for module_name in ("rq", "rq.job"):
            module = sys.modules.get(module_name)
            if module is not None and hasattr(module, "get_current_job"):
                _originals[(module_name, "get_current_job")] = module.get_current_job
                module.get_current_job = current_job  # type: ignore[attr-defined]
        # Every handle (frappe.enqueue's too) raises RQ's NoSuchJobError once its job is gone.
        Job.missing_error = rq_compat.no_such_job_error()
        swaps = {id(original): REPLACEMENTS[name] for (_, name), original in _frappe_items()}
        swaps[id(original_current_job)] = current_job
        _rebind_everywhere(swaps)
    return True


def revert() -> bool:
    """Give Frappe its own functions back (RQ again). False when the switch was not applied."""
    with _lock:
        if not _originals:
            return False
        swaps: dict[int, Any] = {}
        for (module_name, name), original in _originals.items():
            module = sys.modules.get(module_name)
            if module is not None:
                swaps[id(getattr(module, name))] = original
                setattr(module, name, original)
        _originals.clear()
        Job.missing_error = NoSuchJobError
        _rebind_everywhere(swaps)
    return True


def _frappe_items() -> list[tuple[tuple[str, str], Any]]:
    return [(key, value) for key, value in _originals.items() if key[0] == BACKGROUND_JOBS]


def _rebind_everywhere(swaps: dict[int, Any]) -> None:
    """Rebind every module-level name bound to a swapped object (``from x import name``).

    Modules imported later read the names from their (already switched) modules.
    """
    for module_name, module in list(sys.modules.items()):
        if module is None or module_name.startswith("frappe_celery"):
            continue
        namespace = getattr(module, "__dict__", None)
        if not isinstance(namespace, dict):
            continue
        for name, value in list(namespace.items()):
            replacement = swaps.get(id(value))
            if replacement is not None and value is not replacement:
                namespace[name] = replacement


# -- the bench-wide switch: a .pth file in the bench's virtualenv --------------------------------

PTH_NAME = "frappe_celery_switch.pth"
ORPHAN_LOG = "frappe-celery-switch.log"
# Run by every Python process of the bench (site.py executes a .pth line that starts with
# "import"). Once frappe-celery is uninstalled with the switch still on, the import fails:
# instead of a traceback at the start of every process (site.py prints one and goes on), the
# process stays on RQ and says so once, in BENCH/logs/frappe-celery-switch.log.
_GUARD = """
try:
    import frappe_celery_switch
except ImportError:
    import os, time
    _say = ("frappe-celery switch orphaned: frappe-celery is not installed in this bench's "
            "virtualenv, but its switch file is, so this bench's processes run RQ. Reinstall "
            "frappe-celery (BENCH/env/bin/pip install frappe-celery), or delete %s")
    try:
        _path = os.path.join(os.path.dirname(sys.prefix), "logs", %r)
        with open(_path, "a+") as _log:
            _log.seek(0)
            if "switch orphaned" not in _log.read():
                _log.write(time.strftime("%%Y-%%m-%%d %%H:%%M:%%S ") + _say + "\\n")
    except OSError:
        pass
"""


def pth_line(path: Path) -> str:
    """The .pth file's one line: import the switch, or note once that it is orphaned."""
    return f"import sys; exec({_GUARD % (path, ORPHAN_LOG)!r})\n"


def pth_path() -> Path:
    """Where the switch's .pth file goes: this Python's site-packages (the bench's env)."""
    return Path(sysconfig.get_paths()["purelib"]) / PTH_NAME


def is_enabled() -> bool:
    return pth_path().is_file()


def enable() -> bool:
    """Switch every process of this Python's bench to frappe-celery; False if it already was.

    Raises :class:`FrappeNotImportable` when this Python cannot import Frappe (the switch would
    never fire: run the bench's own ``env/bin/frappe-celery``).
    """
    spec = importlib.util.find_spec("frappe")
    locations = list(spec.submodule_search_locations or []) if spec else []
    if not any((Path(folder) / "utils" / "background_jobs.py").is_file() for folder in locations):
        raise FrappeNotImportable(
            f"{sys.executable} cannot import Frappe (frappe.utils.background_jobs): this is "
            "not a bench's Python. Run the bench's own: BENCH/env/bin/frappe-celery bench enable"
        )
    path = pth_path()
    line = pth_line(path)
    if path.is_file() and path.read_text(encoding="utf-8") == line:
        return False
    path.write_text(line, encoding="utf-8")
    return True


def disable() -> bool:
    """Back to RQ for every new process of this bench; False if the switch was not on."""
    path = pth_path()
    if not path.is_file():
        return False
    path.unlink()
    return True
