"""How a job's id names its site: Frappe 16 spells ``{site}||{id}``, Frappe 15 ``{site}::{id}``
(``job_id_style``). Shared by the handle, the record's retention and the Desk."""

from __future__ import annotations

from frappe_celery.config import get_settings


def site_job_prefix(site: str) -> str:
    """How the ids of ``site``'s jobs begin, spelled as the installed Frappe spells them
    (enqueue.create_job_id): Frappe 16's ``{site}||`` (':' -> '|'), Frappe 15's ``{site}::``."""
    if get_settings().job_id_style == "v15":
        return f"{site}::"
    return f"{site}||".replace(":", "|")


def is_site_job(job_id: str, site: str) -> bool:
    """Whether ``job_id`` is namespaced to ``site`` in this bench's job-id style."""
    return job_id.startswith(site_job_prefix(site))


def site_of_job_id(job_id: str) -> str | None:
    """The site a namespaced job id names (None when it names none), as the id spells it."""
    separator = "::" if get_settings().job_id_style == "v15" else "||"
    site, found, _ = job_id.partition(separator)
    return site if found and site else None
