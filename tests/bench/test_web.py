"""The web process: a request handled by Frappe's WSGI app (gunicorn, as in production) enqueues
through the switch, and a Celery worker runs the job."""

from __future__ import annotations

import http.cookiejar
import json
import urllib.error
import urllib.parse
import urllib.request
import uuid
from typing import Any

import pytest

from ..support.frappe_bench import fresh
from ..support.processes import wait_for

pytestmark = pytest.mark.usefixtures("celery_worker")


def post(opener: Any, url: str, data: dict[str, Any], host: str) -> Any:
    request = urllib.request.Request(
        url, data=urllib.parse.urlencode(data).encode(), headers={"Host": host}
    )
    try:
        with opener.open(request, timeout=60) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as error:
        raise AssertionError(f"{url}: HTTP {error.code}: {error.read()[-3000:]!r}") from None


def test_a_web_request_enqueues_onto_celery(bench, site, web, admin_password):
    doc = site.get_doc({"doctype": "Celery Example Task", "title": f"web-{uuid.uuid4().hex[:8]}"})
    doc.insert()
    site.db.commit()
    opener = urllib.request.build_opener(
        urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar())
    )
    post(
        opener,
        f"{web}/api/method/login",
        {"usr": "Administrator", "pwd": admin_password},
        bench.site,
    )
    # The Desk's "run a document method" call: the controller calls frappe.enqueue_doc.
    reply = post(
        opener,
        f"{web}/api/method/run_doc_method",
        {
            "dt": doc.doctype,
            "dn": doc.name,
            "method": "process_in_background",
            "args": json.dumps({"note": "from the web"}),
        },
        bench.site,
    )
    assert "exc" not in reply, reply
    wait_for(
        lambda: (
            fresh(site).get_value("Celery Example Task", doc.name, "result")
            == "processed by Administrator: from the web"
        ),
        timeout=60,
    )
