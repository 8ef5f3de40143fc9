"""`bench enable|disable|status`: switch a whole Frappe bench between RQ and frappe-celery."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import redis

from frappe_celery.bench_files import COMMON_SITE_CONFIG, SITES_PATH_ENV, Bench, find_bench
from frappe_celery.broker import signing
from frappe_celery.cli.common import PROBLEM
from frappe_celery.config import Settings, load_settings
from frappe_celery.connection import make_client
from frappe_celery.errors import ConfigError
from frappe_celery.integrations.frappe import switch
from frappe_celery.ops import acl
from frappe_celery.urls import redact_url


@click.group("bench")
def bench_group() -> None:
    """Run a Frappe bench's background jobs on Celery (enable) or on RQ again (disable).

    Run it with the bench's own Python: BENCH/env/bin/frappe-celery bench enable. It affects
    every process of the bench started afterwards (restart web, workers and scheduler).
    """


@bench_group.command("enable")
@click.option(
    "--skip-acl-check",
    is_flag=True,
    help="Switch without checking that the bench's Redis user may use frappe-celery's keys "
    "and channels (see: frappe-celery bench acl).",
)
def enable_command(skip_acl_check: bool) -> None:
    """Send frappe.enqueue, enqueue_doc, queue_action ... of every bench process to Celery.

    First checks that the bench's Redis user (rq_username, with use_rq_auth) may use every key,
    channel and command frappe-celery needs; if not, changes nothing, names what is missing and
    how to grant it (frappe-celery bench acl --apply).
    """
    if not skip_acl_check:
        _refuse_unless_acl_holds()
    try:
        changed = switch.enable()
    except switch.FrappeNotImportable as exc:
        raise click.ClickException(str(exc)) from None
    where = switch.pth_path()
    bench = locate_bench()
    if bench is not None:
        # Job messages are signed (signing.py): the bench's processes read one key from here.
        signing.ensure_bench_key(bench.config_path)
        click.echo(f"job messages are signed with frappe_celery.signing_key in {bench.config_path}")
    if changed:
        click.echo(f"frappe-celery switch enabled ({where}); restart the bench's processes")
    else:
        click.echo(f"frappe-celery switch already enabled ({where}); nothing changed")


@bench_group.command("disable")
def disable_command() -> None:
    """Give the bench back to RQ (Frappe's own enqueue) for every process started afterwards."""
    if switch.disable():
        click.echo("frappe-celery switch disabled; restart the bench's processes (RQ again)")
    else:
        click.echo("frappe-celery switch was not enabled; nothing changed")


@bench_group.command("status")
def status_command() -> None:
    """Say whether this Python's bench runs its jobs on Celery (exit 0) or RQ (exit 1)."""
    if switch.is_enabled():
        click.echo(f"enabled: background jobs run on Celery ({switch.pth_path()})")
        return
    click.echo(f"disabled: background jobs run on RQ ({sys.executable})")
    sys.exit(1)


# -- the bench's Redis ACL user (bench create-rq-users) -------------------------------------------


def locate_bench() -> Bench | None:
    """The bench these commands work on: FRAPPE_CELERY_SITES_PATH or the current folder when
    it is a bench's sites/ or the bench itself, else the bench this Python's Frappe is
    installed from (BENCH/apps/frappe, as env/bin/frappe-celery runs anywhere)."""
    try:
        found = find_bench()
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    if found is not None:
        return found
    if (Path.cwd() / "sites" / COMMON_SITE_CONFIG).is_file():
        return Bench(Path.cwd() / "sites")
    spec = importlib.util.find_spec("frappe")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        parents = Path(folder).resolve().parents
        if len(parents) > 2 and (parents[2] / "sites" / COMMON_SITE_CONFIG).is_file():
            return Bench(parents[2] / "sites")
    return None


@dataclass
class AclTarget:
    """A bench's queue Redis as its processes reach it, and what to check there."""

    bench: Bench
    conf: dict[str, Any]
    settings: Settings
    client: redis.Redis

    @property
    def url(self) -> str:
        return redact_url(self.settings.broker_url)

    @property
    def acl_file(self) -> Path:
        return self.bench.path / acl.BENCH_ACL_FILE

    def needs(self) -> list[acl.Need]:
        return acl.required(self.settings, acl.broker_db(self.client))

    def check(self) -> acl.Report:
        """Raises redis.ConnectionError / TimeoutError when the Redis does not answer."""
        return acl.check(self.client, self.needs())


def acl_target(bench: Bench) -> AclTarget:
    try:
        settings = load_settings({**os.environ, SITES_PATH_ENV: str(bench.sites_path)})
        conf = json.loads(bench.config_path.read_text(encoding="utf-8"))
        client = make_client(settings.broker_url, settings.sentinel_master)
    except (ConfigError, OSError, ValueError) as exc:
        raise click.ClickException(f"{bench.config_path}: {exc}") from None
    return AclTarget(bench, conf, settings, client)


def _unreachable(target: AclTarget, exc: Exception) -> click.ClickException:
    return click.ClickException(
        f"cannot check the bench's Redis user at {target.url}: {exc}. Start the queue Redis "
        "(bench start), or pass --skip-acl-check to switch without checking"
    )


def _refuse_unless_acl_holds() -> None:
    """``bench enable``'s check: exit 1, nothing written, unless the bench's Redis user may
    use everything frappe-celery needs. Skipped when no bench is found (the switch says why)
    or when the queue Redis is down and the bench uses no ACL user (use_rq_auth unset)."""
    bench = locate_bench()
    if bench is None:
        return
    target = acl_target(bench)
    try:
        report = target.check()
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        if target.conf.get("use_rq_auth"):
            raise _unreachable(target, exc) from None
        return
    finally:
        target.client.close()
    if not report.ok:
        click.echo(acl.explain(report, target.url, target.acl_file), err=True)
        if switch.is_enabled():
            # Enabled before the ACL user was made: its processes fail with NOPERM meanwhile.
            click.echo(
                "Nothing was changed, but the switch was already on: the bench's jobs fail "
                "until these are granted (or frappe-celery bench disable).",
                err=True,
            )
        else:
            click.echo("Not switched: nothing was changed.", err=True)
        raise SystemExit(PROBLEM)
    _warn_if_acl_file_lacks(target, report)


def _warn_if_acl_file_lacks(target: AclTarget, report: acl.Report) -> None:
    line = acl.acl_file_line(target.acl_file, report.user)
    if line is None:
        return
    lacking = acl.rules_lacking_in_line(line, target.needs(), report.all_channels)
    if lacking:
        click.echo(
            f"Warning: the Redis user {report.user!r} has what frappe-celery needs now, but its "
            f"line in {target.acl_file} lacks {' '.join(lacking)}: a restart of the queue Redis "
            "would drop them. Run: frappe-celery bench acl --apply",
            err=True,
        )


@bench_group.command("acl")
@click.option(
    "--apply",
    "apply_",
    is_flag=True,
    help="Grant what is missing: ACL SETUSER as Redis's default user (its password, if it has "
    f"one, from ${acl.ADMIN_PASSWORD_ENV}) and the same rules on the user's line of "
    "config/redis_queue.acl, Frappe's own rules kept.",
)
def acl_command(apply_: bool) -> None:
    """Check that the bench's Redis user (bench create-rq-users, use_rq_auth) may use every key,
    channel and command frappe-celery needs: exit 0, or print what it lacks and the fix (exit 1).
    """
    bench = locate_bench()
    if bench is None:
        raise click.ClickException(
            "no bench here: run it in the bench (or its sites/) with the bench's own "
            "env/bin/frappe-celery, or set FRAPPE_CELERY_SITES_PATH"
        )
    target = acl_target(bench)
    try:
        report = target.check()
        if apply_:
            report = _apply(target, report)
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        message = f"cannot reach the bench's queue Redis at {target.url}: {exc}"
        raise click.ClickException(message) from None
    finally:
        target.client.close()
    if not report.ok:
        click.echo(acl.explain(report, target.url, target.acl_file))
        raise SystemExit(PROBLEM)
    click.echo(
        f"The Redis user {report.user!r} at {target.url} may use every key, channel and command "
        "frappe-celery needs."
    )
    _warn_if_acl_file_lacks(target, report)


def _apply(target: AclTarget, report: acl.Report) -> acl.Report:
    """ACL SETUSER for what the live check found missing, then the ACL file; the check again."""
    user = report.user
    if report.rules:
        url = target.conf.get("redis_queue")
        password = os.environ.get(acl.ADMIN_PASSWORD_ENV) or None
        admin = redis.Redis.from_url(
            str(url), username="default", password=password,
            socket_timeout=5, socket_connect_timeout=5,
        )  # fmt: skip
        try:
            acl.grant(admin, user, report.rules)
        except redis.ResponseError as exc:
            raise click.ClickException(
                f"ACL SETUSER {user} {' '.join(report.rules)} as Redis's default user at "
                f"{redact_url(str(url))} failed: {exc}"
                + (f" (set ${acl.ADMIN_PASSWORD_ENV} to its password)" if not password else "")
            ) from None
        except redis.AuthenticationError as exc:
            raise click.ClickException(
                f"cannot log in to {redact_url(str(url))} as Redis's default user: {exc}; set "
                f"${acl.ADMIN_PASSWORD_ENV} to its password (bench create-rq-users "
                "--set-admin-password printed it)"
            ) from None
        finally:
            admin.close()
        click.echo(f"Granted to {user!r} at {target.url}: {' '.join(report.rules)}")
    line = acl.acl_file_line(target.acl_file, user)
    if line is None and not target.acl_file.is_file():
        click.echo(
            f"Warning: no {target.acl_file}: the running Redis has the rules until it restarts",
            err=True,
        )
    else:
        lacking = acl.rules_lacking_in_line(line or "", target.needs(), report.all_channels)
        try:
            added = acl.add_rules_to_acl_file(target.acl_file, user, [*report.rules, *lacking])
        except acl.AclFileError as exc:
            raise click.ClickException(str(exc)) from None
        if added:
            click.echo(f"Added to {user!r}'s line in {target.acl_file}: {' '.join(added)}")
    return target.check()
