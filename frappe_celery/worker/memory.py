"""Pool children keep the memory they share with the worker's main process, and free what a
failed job leaves behind.

Measured (RELIABILITY.md, "Memory"): on the soak's mix of jobs, a pool child's PSS grew from 37
to 95 MiB over its first 1500 jobs, without levelling off, while the number of Python objects
it tracked stayed flat. The growth was garbage: the reference cycles a failed or retried job
leaves (Celery's ExceptionInfo, which copies every traceback frame's code positions, and the
exception's traceback with its frames; ~300 KiB per failed job). Cycles are freed only by the
collector's full collections, and CPython runs one only once the objects that survived the
younger generations reach a quarter of the long-lived ones: a child inherits the main process's
~60 000 long-lived objects (interpreter, Celery, kombu, the job modules; many more in a Frappe
bench), so it ran a full collection only every few thousand jobs, and the garbage piled up in
between. Each full collection also wrote into the header of every inherited object, making
private copies of pages the child shared with the main process (copy-on-write).

Hence:

* ``gc.freeze()`` in the main process right before its first fork, after a collection, for
  good: what the imports made (~60 000 objects) is never examined again, by the children's
  collectors or by its own, so those pages stay shared by all, and a child's full collections
  cover only what it made itself, which keeps them cheap (~0.4 ms) and frequent. A new child runs
  one collection at once, so that its count of long-lived objects is its own. The first version
  froze before every fork and unfroze in the main process right after: the main process's next
  full collection then wrote into every inherited object's header, and each child alive at that
  moment got private copies of those pages (+12 MiB USS per child, in one step, 52 minutes into
  the 1-hour soak); freezing again at every fork instead froze in-flight objects that later died
  in cycles, which are never freed (the main process grew 23 MiB over 100 forks, against 10).
* In a child so frozen, a full collection after each job that did not succeed: the cycles of the
  failure before it are freed at once, not some hundred jobs later (the last one's are still
  held by Celery's tracer while it finishes).

With both, the child's PSS stayed at 33.5 MiB from its 250th to its 1500th job.
"""

from __future__ import annotations

import gc
import os
from typing import Any

from celery import signals, states

# The worker's main process (set at worker_init): the at-fork handlers act only on its forks (a
# job that forks in a pool child freezes nothing).
_main_pid: int | None = None
_frozen = False


def freeze_for_fork() -> None:
    """Before the main process's first fork: collect its garbage, then move every object it
    holds (what the imports made: the interpreter, Celery, kombu, the job modules) to the
    permanent generation, for good. Neither the children's collectors nor its own examine them
    again, so their pages stay shared by all. What the main process makes later (messages,
    requests, timers) is not frozen at later forks: it comes and goes, and frozen objects that
    die in a reference cycle would never be freed."""
    global _frozen
    if os.getpid() == _main_pid and not _frozen:
        gc.collect()
        gc.freeze()
        _frozen = True


def collect_in_new_child() -> None:
    """In a new pool child: one collection, cheap with the inherited objects frozen, after which
    CPython counts as long-lived only what the child holds, not the main process's ~60 000
    objects (with that count a full collection waited for thousands of jobs)."""
    if os.getppid() == _main_pid:
        gc.collect()


@signals.worker_init.connect  # the worker's main process, before the pool forks its children
def freeze_inherited_objects_at_fork(**_: Any) -> None:
    global _main_pid
    if _main_pid is not None:  # at-fork handlers cannot be removed: one registration per process
        return
    _main_pid = os.getpid()
    os.register_at_fork(before=freeze_for_fork, after_in_child=collect_in_new_child)


@signals.task_postrun.connect  # in the process that ran the job
def collect_after_failure(state: str | None = None, **_: Any) -> None:
    # Only in a forked child, where the inherited objects are frozen and a collection is cheap
    # (~0.4 ms measured): in a solo worker it would walk every object of the process (~11 ms
    # without Frappe, more with it) after every failed job.
    if state != states.SUCCESS and gc.get_freeze_count():
        gc.collect()
