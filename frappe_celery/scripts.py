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


class LuaScript:
    def __init__(self, name: str) -> None:
        self.name = name
        self.source = (files("frappe_celery") / "lua" / f"{name}.lua").read_text("utf-8")
        self.sha = hashlib.sha1(self.source.encode("utf-8")).hexdigest()

    def __call__(self, client: redis.Redis, keys: list[str], args: list[Any]) -> Any:
        try:
            return client.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            return client.eval(self.source, len(keys), *keys, *args)


ENQUEUE = LuaScript("enqueue")
START = LuaScript("start")
FINISH = LuaScript("finish")
REQUEUE = LuaScript("requeue")
CANCEL = LuaScript("cancel")
RELEASE_LOCK = LuaScript("release_lock")
