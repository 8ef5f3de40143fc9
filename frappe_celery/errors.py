"""The exceptions users of frappe-celery catch.

Each says which argument was wrong, what was given and what is allowed.
"""

from __future__ import annotations

from typing import Any


class FrappeCeleryError(Exception):
    """Base class of every frappe-celery error."""


class ConfigError(FrappeCeleryError):
    """A setting (environment, config file, celeryconfig) is malformed."""


class InvalidArgumentError(FrappeCeleryError, ValueError):
    """An enqueue argument was rejected before anything was written to Redis."""

    def __init__(self, argument: str, given: Any, allowed: str) -> None:
        self.argument = argument
        self.given = given
        self.allowed = allowed
        super().__init__(f"{argument}: got {given!r}; {allowed}")


class UnserializableArgumentError(FrappeCeleryError, TypeError):
    """A job keyword argument cannot travel as JSON."""

    def __init__(self, argument: str, given: Any) -> None:
        self.argument = argument
        self.given = given
        super().__init__(
            f"{argument}: got {type(given).__name__} {given!r:.80}, which is not "
            "JSON-serialisable; allowed are JSON types plus datetime, date, time, Decimal and "
            "UUID. Pass an id (e.g. a document name) and load the object inside the job instead."
        )


class QueueOverloaded(FrappeCeleryError):
    """Frappe's backpressure: the queue already holds max_queued_jobs pending jobs."""

    def __init__(self, queue: str, pending: int, limit: int) -> None:
        self.queue = queue
        self.pending = pending
        self.limit = limit
        super().__init__(
            f"Too many queued background jobs ({pending}) in queue {queue!r} "
            f"(max_queued_jobs is {limit}). Please retry after some time."
        )


class PublishError(FrappeCeleryError):
    """Some jobs published together (one commit's, one enqueue_many call's, one beat tick's)
    could not be published; the others were.

    ``failures`` lists (job id, exception); ``results`` has one entry per buffered job, in order
    (the Job handle, or None for a deduplicated or failed one).
    """

    def __init__(self, failures: list[tuple[str, BaseException]], results: list[Any]) -> None:
        self.failures = failures
        self.results = results
        shown = 5  # a whole failed batch must not become a megabyte log line
        listed = "; ".join(f"{job_id}: {exc}" for job_id, exc in failures[:shown])
        more = f"; and {len(failures) - shown} more" if len(failures) > shown else ""
        super().__init__(
            f"{len(failures)} of {len(results)} jobs published together were not published "
            f"(the others were): {listed}{more}"
        )


class BrokerUnreachable(FrappeCeleryError, ConnectionError):
    """Redis could not be reached (the URL is shown with its password hidden)."""


class NotReplicated(FrappeCeleryError):
    """enqueue_wait_replicas is set and fewer replicas than that confirmed the job in time.

    The job is queued on the master and will run unless the master fails before a replica has
    it: the caller decides whether to retry (its job may then run twice) or give up.
    """

    def __init__(self, job_ids: list[str], acked: int, wanted: int, timeout_ms: int) -> None:
        self.job_ids = job_ids
        self.acked = acked
        self.wanted = wanted
        super().__init__(
            f"job {', '.join(job_ids[:5])}{' ...' if len(job_ids) > 5 else ''} is queued on the "
            f"master but only {acked} of {wanted} replicas (enqueue_wait_replicas) confirmed it "
            f"within {timeout_ms} ms (enqueue_wait_timeout_ms); it is lost if the master fails "
            "before a replica has it"
        )


class InvalidJobOperation(FrappeCeleryError):
    """The job is not in a state that allows this operation."""


class MethodNotAllowed(FrappeCeleryError):
    """A job message named a function outside the allowed modules (a forged or stale message)."""


class DocumentLoaderNotConfigured(FrappeCeleryError):
    """enqueue_doc ran in a worker with no document loader configured."""


class RetryBackgroundJobError(FrappeCeleryError):
    """Raise inside a job to have it retried (up to 5 times), as in Frappe."""


class SiteNotFound(FrappeCeleryError):
    """A job names a site that the worker's bench does not have."""

    def __init__(self, site: str, bench_sites: tuple[str, ...], sites_path: str) -> None:
        self.site = site
        super().__init__(
            f"site {site!r} does not exist in the bench at {sites_path} "
            f"(its sites: {', '.join(bench_sites) or 'none'}); the job cannot run"
        )
