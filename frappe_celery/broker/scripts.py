"""The Lua scripts behind every multi-step Redis change (files in ``lua/``).

Each runs atomically in one round trip; EVALSHA first, EVAL once when Redis lost its script
cache (after a restart or SCRIPT FLUSH).
"""

from __future__ import annotations

import hashlib
from importlib.resources import files
from typing import Any

import redis
from redis.exceptions import NoScriptError

from frappe_celery.broker import counters


def _source(name: str) -> str:
    text = (files("frappe_celery.broker") / "lua" / f"{name}.lua").read_text("utf-8")
    if name == "lib_metrics":
        # Its constants and key names come from counters.py and keys.py.
        text = counters.lua_constants() + text
    return text


class LuaScript:
    """A script from ``lua/<name>.lua``, with the ``lib_*.lua`` files it uses prepended."""

    def __init__(self, name: str, uses: tuple[str, ...] = ()) -> None:
        self.name = name
        self.source = "\n".join([*(_source(lib) for lib in uses), _source(name)])
        self.sha = hashlib.sha1(self.source.encode("utf-8")).hexdigest()
        self._loaded = False

    def __call__(self, client: redis.Redis, keys: list[str], args: list[Any]) -> Any:
        try:
            return client.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            return client.eval(self.source, len(keys), *keys, *args)

    def ensure_loaded(self, client: redis.Redis) -> None:
        """Load the script once per process, before queueing it in a pipeline (where NOSCRIPT
        cannot fall back to EVAL; callers handle NoScriptError replies after a Redis restart)."""
        if not self._loaded:
            client.script_load(self.source)
            self._loaded = True

    def queue_in(self, pipe: Any, keys: list[str], args: list[Any]) -> None:
        pipe.evalsha(self.sha, len(keys), *keys, *args)


ENQUEUE = LuaScript("enqueue", uses=("lib_find", "lib_liveness", "lib_metrics"))
REAP = LuaScript("reap", uses=("lib_find", "lib_liveness", "lib_trim", "lib_metrics"))
START = LuaScript("start", uses=("lib_start", "lib_metrics"))
FINISH = LuaScript("finish", uses=("lib_trim", "lib_metrics"))
REQUEUE = LuaScript("requeue", uses=("lib_metrics",))
CANCEL = LuaScript("cancel", uses=("lib_find", "lib_trim", "lib_metrics"))
RELEASE_LOCK = LuaScript("release_lock")
EXTEND_LOCK = LuaScript("extend_lock")
CLAIM_TICKS = LuaScript("claim_ticks")
RESERVE = LuaScript("reserve", uses=("lib_start",))
FORGET = LuaScript("forget")
RECOVER = LuaScript("recover")
SETTLE = LuaScript("settle")
RESTORE_VISIBLE = LuaScript("restore_visible")
PENDING_SITES = LuaScript("pending_sites")
