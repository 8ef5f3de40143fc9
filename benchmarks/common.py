"""What the benchmark modules share: the environment frappe-celery runs with in a benchmark."""

from __future__ import annotations

import json
import os
from pathlib import Path

from frappe_celery.broker.signing import generate_key


def use_broker(url: str, workdir: Path, max_queued_jobs: int, **extra: str) -> None:
    """Point this process (and the workers it starts) at the benchmark's own Redis: every
    ``FRAPPE_CELERY_*`` variable of the caller's environment dropped, jobs of the ``benchmarks``
    package allowed, and ``max_queued_jobs`` (Frappe's 500 would refuse a backlog) set through
    a config file in ``workdir``; ``extra`` variables are added as given."""
    config = workdir / "common_site_config.json"
    config.write_text(json.dumps({"max_queued_jobs": max_queued_jobs}))
    for name in [k for k in os.environ if k.startswith("FRAPPE_CELERY_")]:
        del os.environ[name]
    os.environ.update(
        {
            "FRAPPE_CELERY_BROKER_URL": url,
            "FRAPPE_CELERY_SIGNING_KEY": generate_key(),
            "FRAPPE_CELERY_ALLOWED_MODULES": "benchmarks",
            "FRAPPE_CELERY_CONFIG": str(config),
            **extra,
        }
    )
