"""The installed frappe-celery's version: one source, the package's metadata (pyproject.toml).

Workers put it in their heartbeat and beat in its leader token, so ``frappe-celery doctor`` can
tell a worker still running an older frappe-celery than the bench's web processes.
"""

from __future__ import annotations

import functools
from importlib.metadata import PackageNotFoundError, version

DISTRIBUTION = "frappe-celery"


@functools.cache
def installed_version() -> str:
    try:
        return version(DISTRIBUTION)
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"
