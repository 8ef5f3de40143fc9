"""How long a job's ended record is kept, per site, as Frappe reads it: ``rq_results_ttl``,
``rq_job_failure_ttl`` and ``rq_failed_jobs_limit`` from a site's site_config.json, else the
bench's settings. Read by the record's writers (records.py) and by the job handle (job.py).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from frappe_celery.config import Settings, get_settings

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Retention:
    """How long a job's ended record is kept, and how many failed jobs its queue keeps."""

    results_ttl: int
    failure_ttl: int
    failed_jobs_limit: int


# Frappe's config names of each Retention field.
RETENTION_KEYS = {
    "results_ttl": "rq_results_ttl",
    "failure_ttl": "rq_job_failure_ttl",
    "failed_jobs_limit": "rq_failed_jobs_limit",
}
SITE_CONFIG = "site_config.json"

_site_configs_lock = threading.Lock()
# site_config.json path -> (its mtime_ns and size, its retention keys): re-read once it changed.
_site_configs: dict[Path, tuple[tuple[int, int], dict[str, int]]] = {}


def _site_overrides(path: Path) -> dict[str, int]:
    """The retention keys a site_config.json sets (valid positive integers only)."""
    try:
        stat = os.stat(path)
    except OSError:
        return {}
    stamp = (stat.st_mtime_ns, stat.st_size)
    cached = _site_configs.get(path)
    if cached is not None and cached[0] == stamp:
        return cached[1]
    try:
        conf = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        logger.warning("%s: unreadable (%s); its retention settings are not applied", path, exc)
        conf = {}
    found: dict[str, int] = {}
    for field_name, key in RETENTION_KEYS.items():
        value = conf.get(key) if isinstance(conf, dict) else None
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            logger.warning("%s: %s must be a positive integer, got %r; ignored", path, key, value)
            continue
        found[field_name] = value
    with _site_configs_lock:
        _site_configs[path] = (stamp, found)
    return found


def _bench_retention(settings: Settings) -> Retention:
    return Retention(settings.results_ttl, settings.failure_ttl, settings.failed_jobs_limit)


def site_retention(site: str | None, settings: Settings | None = None) -> Retention:
    """``rq_results_ttl``, ``rq_job_failure_ttl`` and ``rq_failed_jobs_limit`` as the site sees
    them, as Frappe's ``frappe.conf`` does: its own site_config.json, else the bench's
    common_site_config.json (and frappe-celery's settings), else Frappe's defaults. Read from
    the file whenever it changed, so a ``bench set-config`` applies to the next job's end."""
    settings = settings or get_settings()
    base = _bench_retention(settings)
    if not site or not settings.sites_path or "/" in site or site.startswith("."):
        return base
    overrides = _site_overrides(Path(settings.sites_path) / site / SITE_CONFIG)
    if not overrides and "|" in site:  # Frappe 16 spells a site's ':' as '|' in a job id
        overrides = _site_overrides(
            Path(settings.sites_path) / site.replace("|", ":") / SITE_CONFIG
        )
    if not overrides:
        return base
    return Retention(**{**base.__dict__, **overrides})


# How long a computed horizon is used before the sites' files are looked at again.
HORIZON_REFRESH = 10.0
_horizon: tuple[float, Settings, Retention] | None = None


def retention_horizon() -> Retention:
    """The longest TTLs any site of the bench keeps (registries drop entries older than these:
    with per-site TTLs, a registry's entry may outlive a short-lived record, never the reverse).
    Recomputed at most every HORIZON_REFRESH seconds (one stat per site)."""
    global _horizon
    settings = get_settings()
    now = time.monotonic()
    cached = _horizon
    if cached is not None and cached[1] is settings and now - cached[0] < HORIZON_REFRESH:
        return cached[2]
    found = [site_retention(site, settings) for site in settings.sites]
    found.append(_bench_retention(settings))
    horizon = Retention(
        max(r.results_ttl for r in found),
        max(r.failure_ttl for r in found),
        max(r.failed_jobs_limit for r in found),
    )
    _horizon = (now, settings, horizon)
    return horizon
