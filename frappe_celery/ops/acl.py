"""What frappe-celery needs from a Redis ACL user, and which of it a user lacks.

Frappe's ``bench create-rq-users`` gives its bench user the keys ``~rq:[^q]*``, ``~rq:queues``
and ``~rq:queue:{bench_id}:*``, the commands ``+@all -@admin`` and no pub/sub channel (Redis 7
gives a new user none unless told). frappe-celery's keys (``keys.py``: ``frappe_celery:*``;
kombu's queue lists, ``_kombu.binding.*``, ``unacked*``, the pidbox mailboxes) and channels
(Celery's remote control and worker events) fit none of that, and kombu's names cannot move
under ``rq:``. So the user needs more rules, and :func:`check` names the ones it lacks.

How a user is checked: ``ACL DRYRUN`` (Redis 7) and ``ACL GETUSER`` are ``@admin`` commands,
which Frappe's bench user cannot run. So the user checks itself, with the server's own rules:
every probe is a command frappe-celery sends, queued between ``MULTI`` and ``DISCARD``. Redis
checks a command's ACL (the command, its keys, its channels) when it queues it and answers
``NOPERM`` or ``QUEUED``; ``DISCARD`` then drops them all, so nothing runs. That is the same on
Redis 6 and 7 (ACLs are Redis 6's; channel rules 6.2's; a Redis 5 queues everything). The one
trace: Redis records each refused probe in its ``ACL LOG`` (context ``multi``).

This module never imports Frappe.
"""

from __future__ import annotations

import fnmatch
import os
import re
import shlex
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
from kombu.transport import redis as kombu_redis

from frappe_celery.broker import keys
from frappe_celery.celery_app import get_app
from frappe_celery.config import Settings
from frappe_celery.connection import as_text, checked_out

# A script id no script has: EVALSHA with it checks the keys' ACL and, allowed, says NOSCRIPT.
NO_SCRIPT = "0" * 40
PROBE_KEY = keys.PREFIX + "acl-probe"
USED_BY = "sent by frappe-celery, kombu or Celery"
# Where a bench keeps its queue Redis's users (Frappe's ``bench create-rq-users``).
BENCH_ACL_FILE = Path("config") / "redis_queue.acl"
# The environment variable Frappe spells the queue Redis's admin password with.
ADMIN_PASSWORD_ENV = "RQ_ADMIN_PASWORD"


@dataclass(frozen=True)
class Need:
    """One thing frappe-celery uses: the ACL rule granting it, and a command using it."""

    kind: str  # "key", "channel" or "command"
    rule: str  # "~frappe_celery:*", "&/0.celery.pidbox", "+brpop"
    probe: tuple[Any, ...]
    purpose: str


@dataclass(frozen=True)
class Missing:
    need: Need
    reply: str  # Redis's NOPERM answer to the probe


@dataclass
class Report:
    """What ``user`` lacks of what frappe-celery needs."""

    user: str
    server_version: str
    missing: list[Missing] = field(default_factory=list)
    # Whether the user may use every channel (allchannels: Redis 6.2's default for a new user,
    # and every user before 6.2); then it takes no channel rule ("&x" after it is an error).
    all_channels: bool = False

    @property
    def ok(self) -> bool:
        return not self.missing

    @property
    def rules(self) -> list[str]:
        """The rules that grant everything missing, keys first, each once."""
        order = {"key": 0, "channel": 1, "command": 2}
        rules = dict.fromkeys(m.need.rule for m in sorted(self.missing, key=_kind_order(order)))
        return list(rules)


def _kind_order(order: Mapping[str, int]) -> Any:
    return lambda missing: order[missing.need.kind]


def glob_escape(name: str) -> str:
    """``name`` as a Redis glob pattern that matches only itself."""
    return re.sub(r"([*?\[\]\\])", r"\\\1", name)


def broker_db(client: redis.Redis) -> int:
    """The database number ``client`` uses (kombu's pub/sub channel names carry it)."""
    return int(client.connection_pool.connection_kwargs.get("db") or 0)


def required(
    settings: Settings, db: int = 0, transport_options: Mapping[str, Any] | None = None
) -> list[Need]:
    """Every key family, channel and command frappe-celery's enqueue, workers, beat and CLI
    use with ``settings``, each with a probe. Names come from ``keys.py``, the configured
    queues, Celery's mailbox and event exchange and kombu's Redis transport (its defaults, or
    ``transport_options`` as celeryconfig's ``broker_transport_options`` changes them)."""
    app = get_app()
    options = {**app.conf.broker_transport_options, **(transport_options or {})}
    channel = kombu_redis.Channel
    prefix = str(options.get("global_keyprefix") or "")
    needs: list[Need] = []

    def key(rule: str, name: str, purpose: str) -> None:
        needs.append(Need("key", "~" + rule, ("EVALSHA", NO_SCRIPT, 1, name), purpose))

    ours = "frappe-celery's job records, registries, doorbells, locks and heartbeats (keys.py)"
    for name in (
        keys.job("acl-probe"),
        keys.started_registry("default"),
        keys.doorbell("default"),
        keys.HOLDERS,
        keys.WORKERS,
        keys.alive("acl-probe"),
        keys.lock("acl-probe"),
        keys.SCHEDULER_LEADER,
    ):
        key(glob_escape(keys.PREFIX) + "*", name, ours)
    for queue in settings.queues:
        for name in keys.queue_lists(queue):
            key(glob_escape(prefix + queue) + "*", prefix + name, f"the lists of queue {queue!r}")
    mailbox = app.control.mailbox
    exchanges = [*settings.queues, mailbox.exchange.name, mailbox.reply_exchange.name]
    bindings = prefix + channel.keyprefix_queue.replace("%s", "")
    for exchange in exchanges:
        key(glob_escape(bindings) + "*", prefix + channel.keyprefix_queue % exchange,
            "kombu's exchange bindings")  # fmt: skip
    for option in ("unacked_key", "unacked_index_key", "unacked_mutex_key"):
        name = prefix + str(options.get(option) or getattr(channel, option))
        key(glob_escape(name), name, "kombu's messages delivered and not yet acknowledged")
    # Celery's remote control (frappe-celery stop, status): a mailbox list per worker node and
    # per caller awaiting replies, with their priority lists.
    for owner, queue in (("celery@acl-probe", mailbox.get_queue("celery@acl-probe").name),
                         (mailbox.oid, mailbox.get_reply_queue().name)):  # fmt: skip
        pattern = glob_escape(prefix) + "*" + glob_escape(queue.removeprefix(owner)) + "*"
        for name in keys.queue_lists(queue):
            key(pattern, prefix + name, "Celery's remote-control mailboxes")
    # The pub/sub side: kombu publishes a fanout exchange on "/{db}.{exchange}", followed by
    # "/{routing key}" when fanout_patterns is on, and its workers PSUBSCRIBE to it.
    fanout = options.get("fanout_prefix", channel.fanout_prefix)
    topic = "" if not fanout else fanout if isinstance(fanout, str) else channel.keyprefix_fanout
    topic = prefix + topic.format(db=db)
    patterns = options.get("fanout_patterns", channel.fanout_patterns)
    control = topic + mailbox.exchange.name
    events = topic + app.conf.event_exchange
    event = events + ("/worker.heartbeat" if patterns else "")
    for probe, purpose in (
        (("PUBLISH", control, "x"), "Celery's remote control (frappe-celery stop)"),
        (("PSUBSCRIBE", control), "Celery's remote control, as the workers listen to it"),
    ):
        needs.append(Need("channel", "&" + glob_escape(control), probe, purpose))
    events_rule = "&" + glob_escape(events) + ("/*" if patterns else "")
    needs.append(Need("channel", events_rule, ("PUBLISH", event, "x"), "worker events"))
    for probe in _command_probes(control, settings.enqueue_wait_replicas > 0, db):
        name = str(probe[0]).lower() + ("|" + str(probe[1]).lower() if probe[0] == "SCRIPT" else "")
        needs.append(Need("command", "+" + name, probe, USED_BY))
    return _without_subsumed(needs) + TRANSACTIONS


def _command_probes(channel: str, wait: bool, db: int) -> list[tuple[Any, ...]]:
    """Every command frappe-celery, kombu and Celery send (directly or from a Lua script), as
    seen with MONITOR on a worker, beat and the CLI; MULTI and EXEC are the probe's own."""
    p = PROBE_KEY
    probes: list[tuple[Any, ...]] = [
        ("PING",), ("INFO", "server"), ("WATCH", p),
        ("EVALSHA", NO_SCRIPT, 0), ("EVAL", "return 0", 0), ("SCRIPT", "LOAD", "return 0"),
        ("GET", p), ("SET", p, "x"), ("DEL", p), ("EXISTS", p), ("EXPIRE", p, 1),
        ("PEXPIRE", p, 1), ("PTTL", p),
        ("BRPOP", p, 1), ("LPUSH", p, "x"), ("RPOP", p), ("LLEN", p), ("LRANGE", p, 0, -1),
        ("LINDEX", p, 0), ("LTRIM", p, 0, -1), ("LREM", p, 0, "x"),
        ("HSET", p, "f", "x"), ("HGET", p, "f"), ("HMGET", p, "f"), ("HGETALL", p), ("HKEYS", p),
        ("HDEL", p, "f"), ("HINCRBY", p, "f", 1), ("HINCRBYFLOAT", p, "f", 1),
        ("SADD", p, "x"), ("SMEMBERS", p), ("SREM", p, "x"), ("SISMEMBER", p, "x"), ("SCARD", p),
        ("ZADD", p, 0, "x"), ("ZCARD", p), ("ZCOUNT", p, 0, 1), ("ZRANGE", p, 0, -1),
        ("ZRANGEBYSCORE", p, 0, 1), ("ZREVRANGE", p, 0, -1), ("ZREVRANGEBYSCORE", p, 1, 0),
        ("ZREM", p, "x"), ("ZREMRANGEBYSCORE", p, 0, 1),
        ("PUBLISH", channel, "x"), ("PSUBSCRIBE", channel), ("PUNSUBSCRIBE", channel),
    ]  # fmt: skip
    if wait:
        probes.append(("WAIT", 1, 0))
    if db:
        probes.append(("SELECT", db))  # redis-py's, on connecting to another db than 0
    return probes


def _without_subsumed(needs: list[Need]) -> list[Need]:
    """Drop the key needs whose rule another key rule already covers (``~*.reply.x*`` by
    ``~*.x*``); their probes stay, under the wider rule."""
    rules = {need.rule for need in needs if need.kind == "key"}
    wider = {
        rule: other
        for rule in rules
        for other in rules
        if other != rule and fnmatch.fnmatchcase(rule[1:], other[1:])
    }
    return [
        Need(n.kind, wider[n.rule], n.probe, n.purpose) if n.rule in wider else n for n in needs
    ]


_DENIED_COMMAND = re.compile(r"\bcommand\b", re.IGNORECASE)


def whoami(client: redis.Redis) -> str:
    """The user ``client`` authenticates as: its configured name, else ``ACL WHOAMI`` (an
    ``@admin`` command on Redis 6), else ``default``."""
    configured = client.connection_pool.connection_kwargs.get("username")
    if configured:
        return str(configured)
    try:
        return as_text(client.execute_command("ACL", "WHOAMI"))
    except redis.ResponseError:
        return "default"


def check(client: redis.Redis, needs: Sequence[Need]) -> Report:
    """Which of ``needs`` the user ``client`` is authenticated as cannot use.

    Two round trips on a connection of its own: ``EXEC`` (alone it only errs) and ``MULTI``;
    then, only once ``MULTI`` was accepted, every other probe and ``DISCARD``. Redis refuses a
    probe it would not let this user run (``NOPERM``) and runs none. A probe refused for its
    command is reported as that command missing (its keys or channels are checked again once
    that is granted); with ``MULTI`` refused, nothing else can be checked.
    """
    info: dict[str, Any] = client.info("server")  # type: ignore[assignment]  # sync client
    report = Report(whoami(client), as_text(info.get("redis_version", "?")))
    first = [("EXEC",), ("MULTI",)]
    # Never queued: MULTI and DISCARD are the probe's own, and EXEC would run the probes.
    queued = [need.probe for need in needs if need.probe[0] not in ("MULTI", "EXEC", "DISCARD")]
    queued += [ANY_CHANNEL_PROBE, ("DISCARD",)]
    replies: dict[tuple[Any, ...], Any] = {}
    with checked_out(client) as connection:
        try:
            replies.update(zip(first, _replies(connection, first), strict=True))
            if not isinstance(replies[("MULTI",)], redis.ResponseError):
                replies.update(zip(queued, _replies(connection, queued), strict=True))
        finally:
            # Never reused: with DISCARD refused, it would still be inside MULTI.
            connection.disconnect()
    report.all_channels = replies.get(ANY_CHANNEL_PROBE) in (b"QUEUED", "QUEUED")
    by_rule: dict[str, Need] = {}
    for need in [*TRANSACTIONS, *needs]:
        reply = replies.get(need.probe)
        # EXEC refused alone answers EXECABORT ... NOPERM ...
        if not isinstance(reply, redis.exceptions.NoPermissionError) and "NOPERM" not in str(
            reply if isinstance(reply, redis.ResponseError) else ""
        ):
            continue
        text = str(reply)
        if _DENIED_COMMAND.search(text):
            if need.kind != "command":
                need = Need("command", "+" + str(need.probe[0]).lower(), need.probe, USED_BY)
        elif need.kind == "command":
            continue  # the command is allowed; its key or channel is another need's
        if need.rule not in by_rule:
            by_rule[need.rule] = need
            report.missing.append(Missing(need, text))
    return report


# PSUBSCRIBE to a pattern no rule names: Redis lets only a user with every channel do it.
ANY_CHANNEL_PROBE = ("PSUBSCRIBE", "frappe-celery:acl-probe:any-channel:*")

TRANSACTIONS = [
    Need("command", "+" + name.lower(), (name,), "transactions: " + USED_BY)
    for name in ("MULTI", "EXEC", "DISCARD")
]


def _replies(connection: Any, commands: Sequence[tuple[Any, ...]]) -> list[Any]:
    """Send ``commands`` in one write and read every reply, an error reply as its exception."""
    connection.send_packed_command(connection.pack_commands(commands))
    replies: list[Any] = []
    for _ in commands:
        try:
            replies.append(connection.read_response())
        except redis.ResponseError as exc:
            replies.append(exc)
    return replies


# -- the fix -------------------------------------------------------------------------------------


def setuser_command(user: str, rules: Iterable[str]) -> list[str]:
    return ["ACL", "SETUSER", user, *rules]


def shell_line(argv: Sequence[str]) -> str:
    return " ".join(shlex.quote(arg) for arg in argv)


def grant(admin: redis.Redis, user: str, rules: Sequence[str]) -> None:
    """``ACL SETUSER user rules...`` through ``admin`` (a connection allowed to run it)."""
    if rules:
        admin.execute_command(*setuser_command(user, rules))


class AclFileError(ValueError):
    """The ACL file has no line for the user, or cannot be read or written."""


def acl_file_line(path: Path, user: str) -> str | None:
    """The ``user NAME ...`` line of ``path`` (None: no such file or no such line)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    for line in text.splitlines():
        parts = line.split()
        if len(parts) > 1 and parts[0] == "user" and parts[1] == user:
            return line
    return None


def rules_lacking_in_line(line: str, needs: Sequence[Need], all_channels: bool) -> list[str]:
    """The key and channel rules of ``needs`` that an ACL file line does not hold word for word:
    none for keys when it grants every key, none for channels when it or the live user
    (``all_channels``, :attr:`Report.all_channels`) has every channel. The live :func:`check` is
    the truth; this catches rules granted with ACL SETUSER only, which a restart drops."""
    words = set(line.split()[2:])
    all_keys = bool(words & {"~*", "allkeys"})
    all_channels = all_channels or bool(words & {"&*", "allchannels"})
    wanted = [
        need.rule
        for need in needs
        if (need.kind == "key" and not all_keys) or (need.kind == "channel" and not all_channels)
    ]
    return [rule for rule in dict.fromkeys(wanted) if rule not in words]


def redact_acl_line(line: str) -> str:
    """An ACL file line with its passwords (``>secret``, ``#hash``) hidden."""
    return " ".join(
        (part[0] + "(password)") if part[:1] in (">", "#") else part for part in line.split()
    )


def add_rules_to_acl_file(path: Path, user: str, rules: Sequence[str]) -> list[str]:
    """Append to ``user``'s line of the ACL file the rules it does not hold yet, keeping every
    other line and rule (Frappe's own); returns the rules added. Raises :class:`AclFileError`
    when the file or the user's line is missing."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise AclFileError(
            f"{path}: no such file; Frappe's `bench create-rq-users` writes it"
        ) from None
    lines = text.splitlines()
    for index, line in enumerate(lines):
        parts = line.split()
        if len(parts) > 1 and parts[0] == "user" and parts[1] == user:
            added = [rule for rule in dict.fromkeys(rules) if rule not in parts[2:]]
            if added:
                lines[index] = " ".join([line.rstrip(), *added])
                temporary = path.with_name(path.name + ".frappe-celery.tmp")
                temporary.write_text("\n".join(lines) + "\n", encoding="utf-8")
                os.chmod(temporary, path.stat().st_mode & 0o7777)
                os.replace(temporary, path)
            return added
    users = [line.split()[1] for line in lines if len(line.split()) > 1 and line[:5] == "user "]
    raise AclFileError(
        f"{path}: no line for user {user!r} (users there: {', '.join(users) or 'none'}); "
        "run Frappe's `bench create-rq-users` first"
    )


def explain(report: Report, broker: str, acl_file: Path | None = None) -> str:
    """The operator's message: who lacks what, and the exact fix."""
    user = report.user
    lines = [
        f"The Redis user {user!r} at {broker} (Redis {report.server_version}) cannot use what "
        "frappe-celery needs:"
    ]
    width = max(len(m.need.rule) for m in report.missing)
    for missing in report.missing:
        need = missing.need
        lines.append(f"  {need.kind:<8} {need.rule:<{width}}  {need.purpose}")
    host, port = _host_port(broker)
    cli = ["redis-cli", "-h", host, "-p", str(port)]
    lines += [
        "Grant them as the Redis admin (the default user; add --askpass if it has a password):",
        "  " + shell_line([*cli, *setuser_command(user, report.rules)]),
    ]
    if acl_file is not None:
        current = acl_file_line(acl_file, user)
        shown = redact_acl_line(current) if current else f"user {user} on >(password) ..."
        lines += [
            f"and add the same rules at the end of the user's line in {acl_file}, so that they "
            "survive a restart of the queue Redis:",
            "  " + " ".join([shown, *report.rules]),
            f"Or let frappe-celery do both: frappe-celery bench acl --apply (the admin password, "
            f"if any, from ${ADMIN_PASSWORD_ENV}, as bench create-rq-users names it).",
        ]
    return "\n".join(lines)


def _host_port(url: str) -> tuple[str, int]:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or 6379


__all__ = [
    "ADMIN_PASSWORD_ENV",
    "BENCH_ACL_FILE",
    "AclFileError",
    "Missing",
    "Need",
    "Report",
    "acl_file_line",
    "add_rules_to_acl_file",
    "broker_db",
    "check",
    "explain",
    "glob_escape",
    "grant",
    "redact_acl_line",
    "required",
    "rules_lacking_in_line",
    "setuser_command",
    "whoami",
]
