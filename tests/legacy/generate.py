"""Writes ``queued_by_0_1_flat.json``: two jobs as the previous layout (flat modules, frappe-celery
at commit 9682bc1) queued them, every Redis key its enqueue wrote, as it wrote it.

Run against that layout, not this one (its modules are imported by their old paths)::

    git archive 9682bc1 frappe_celery | tar -x -C /tmp/flat
    PYTHONPATH=/tmp/flat:. python tests/legacy/generate.py

tests/test_legacy_messages.py puts the keys back (the messages signed again with the session's
key) and has a worker of this layout run the jobs.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import redis

HERE = Path(__file__).resolve().parent
OUTPUT = HERE / "queued_by_0_1_flat.json"
SITE = "test.site"  # as tests/conftest.py


def main() -> None:
    from frappe_celery.embedded import EmbeddedRedis  # the flat layout's path

    with tempfile.TemporaryDirectory() as workdir:
        server = EmbeddedRedis(Path(workdir)).start()
        try:
            os.environ.update(
                {
                    "FRAPPE_CELERY_BROKER_URL": server.url,
                    "FRAPPE_CELERY_SIGNING_KEY": "generate-only-" + "0" * 32,
                    "FRAPPE_CELERY_SITE": SITE,
                    "FRAPPE_CELERY_ALLOWED_MODULES": "tests",
                }
            )
            import frappe_celery

            frappe_celery.reload_settings()
            assert not hasattr(frappe_celery, "caller"), "run this against the flat layout"
            # enqueue_doc's job travels as frappe_celery.jobs.run_doc_method (an alias now).
            doc_job = frappe_celery.enqueue_doc(
                "Legacy Doc", "LD-1", "submit_later", queue="default",
                key="test:legacy", note="queued by the flat layout",
            )  # fmt: skip
            plain_job = frappe_celery.enqueue(
                "tests.jobs.push", queue="default", job_id="legacy-plain",
                key="test:legacy", value="plain job queued by the flat layout",
            )  # fmt: skip
            client = redis.Redis.from_url(server.url, decode_responses=True)
            written: dict[str, Any] = {}
            for key in sorted(client.scan_iter()):
                if key.startswith("_kombu.binding."):
                    continue
                kind = client.type(key)
                value: Any
                if kind == "hash":
                    value = client.hgetall(key)
                elif kind == "list":
                    value = client.lrange(key, 0, -1)
                elif kind == "zset":
                    value = client.zrange(key, 0, -1, withscores=True)
                elif kind == "string":
                    value = client.get(key)
                else:
                    raise SystemExit(f"{key}: a {kind}, not dumped")
                written[key] = {"type": kind, "value": value, "pttl": client.pttl(key)}
        finally:
            server.stop()
    OUTPUT.write_text(
        json.dumps(
            {
                "written_by": "frappe-celery 0.1.0, flat layout (commit 9682bc1)",
                "jobs": [doc_job.id, plain_job.id],
                "keys": written,
            },
            indent=1,
            sort_keys=True,
        )
        + "\n"
    )
    print(f"wrote {OUTPUT}: jobs {doc_job.id}, {plain_job.id}; {len(written)} keys")


if __name__ == "__main__":
    main()
