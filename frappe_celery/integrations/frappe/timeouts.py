"""The exception a Frappe job sees at its timeout: Celery's and RQ's at once.

Celery's prefork pool raises ``SoftTimeLimitExceeded`` in the job at its soft limit (billiard's
SIGUSR1 handler in the pool child). Frappe and ERPNext code catch RQ's
``rq.timeouts.JobTimeoutException`` instead: ``repost_item_valuation`` treats it as
recoverable (the repost resumes next hour), ``data_import`` marks the import "Timed Out", the
S3 and Dropbox backups retry on it. So inside a bench the pool child's handler raises
:class:`JobTimeoutException`, an instance of both.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import Any

from billiard import pool as billiard_pool
from billiard.exceptions import SoftTimeLimitExceeded
from rq.timeouts import JobTimeoutException as RQJobTimeoutException


class JobTimeoutException(SoftTimeLimitExceeded, RQJobTimeoutException):  # type: ignore[misc,unused-ignore]
    """A job ran past its timeout: both Celery's SoftTimeLimitExceeded and RQ's
    JobTimeoutException, so either ``except`` catches it."""

    def __init__(self, *args: Any) -> None:
        # RQ's JobTimeoutException takes a message; billiard's raises it bare.
        super().__init__(*(args or ("the job ran past its timeout",)))


def _raise_job_timeout(signum: int, frame: FrameType | None) -> None:
    raise JobTimeoutException()


def install_job_timeout() -> None:
    """In a Celery pool child, make the soft time limit raise :class:`JobTimeoutException`.

    billiard installs its own handler after every initializer (``worker_process_init``
    included), so this runs at a job's start; it replaces only billiard's handler, in the
    process's main thread: anywhere else (a web process's ``is_async=False`` job) there is no
    soft limit to translate.
    """
    sig = billiard_pool.SIG_SOFT_TIMEOUT
    if sig is None or threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(sig) is billiard_pool.soft_timeout_sighandler:
        signal.signal(sig, _raise_job_timeout)
