"""A Frappe bench read as configuration, from its files alone (this module never imports Frappe).

A bench is a folder ``BENCH`` with ``BENCH/sites/common_site_config.json``,
``BENCH/sites/apps.txt`` (the installed apps, one per line) and one folder per site holding a
``site_config.json``. Bench processes (web, ``bench execute``, ``bench worker``) run with
``BENCH/sites`` as their current folder, so a ``celery -A frappe_celery worker`` started there is
in a bench; ``FRAPPE_CELERY_SITES_PATH`` names the folder explicitly.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

from frappe_celery.errors import ConfigError

SITES_PATH_ENV = "FRAPPE_CELERY_SITES_PATH"
COMMON_SITE_CONFIG = "common_site_config.json"
SITE_CONFIG = "site_config.json"
APPS_TXT = "apps.txt"

_VERSION = re.compile(r"""^__version__\s*=\s*["']([^"']+)["']""", re.MULTILINE)


@dataclass(frozen=True)
class Bench:
    """Where a bench is and what it holds."""

    sites_path: Path

    @property
    def path(self) -> Path:
        return self.sites_path.parent

    @property
    def config_path(self) -> Path:
        return self.sites_path / COMMON_SITE_CONFIG

    def site_config_path(self, site: str) -> Path:
        return self.sites_path / site / SITE_CONFIG

    def apps(self) -> tuple[str, ...]:
        """The bench's apps, in ``apps.txt`` order (Frappe's own order for hooks)."""
        try:
            text = (self.sites_path / APPS_TXT).read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ConfigError(
                f"{self.sites_path / APPS_TXT}: missing; a bench lists its apps there"
            ) from None
        return tuple(dict.fromkeys(line.strip() for line in text.splitlines() if line.strip()))

    def sites(self) -> tuple[str, ...]:
        """Every site of the bench: the folders of ``sites/`` that hold a ``site_config.json``."""
        return tuple(
            sorted(
                entry.name
                for entry in self.sites_path.iterdir()
                if entry.is_dir() and (entry / SITE_CONFIG).is_file()
            )
        )

    def has_site(self, site: str) -> bool:
        return bool(site) and "/" not in site and self.site_config_path(site).is_file()

    def frappe_major_version(self) -> int | None:
        """Frappe's major version, read from ``apps/frappe/frappe/__init__.py`` (None: unknown)."""
        try:
            text = (self.path / "apps" / "frappe" / "frappe" / "__init__.py").read_text("utf-8")
        except OSError:
            return None
        match = _VERSION.search(text)
        if not match:
            return None
        try:
            return int(match.group(1).split(".")[0])
        except ValueError:
            return None

    @property
    def python(self) -> Path:
        """The bench's own Python (its virtualenv's), which every bench process runs."""
        return self.path / "env" / "bin" / "python"

    def scheduler_lock_held(self) -> bool:
        """Whether a ``bench schedule`` runs on this host: Frappe's scheduler holds an flock on
        ``config/scheduler_process`` for as long as it runs (``frappe.utils.scheduler``)."""
        path = self.path / "config" / "scheduler_process"
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)  # closing releases the lock if this took it
        return False

    def probe_env(self, timeout: float = 30) -> EnvState:
        """What the bench's virtualenv holds of frappe-celery, asked of its own Python."""
        env = {**os.environ, "FRAPPE_CELERY_SWITCH": "off"}  # the probe changes nothing
        try:
            done = subprocess.run([str(self.python), "-c", _PROBE], capture_output=True,
                                  text=True, timeout=timeout, env=env, check=True)  # fmt: skip
            found = json.loads(done.stdout.strip().splitlines()[-1])
        except (OSError, subprocess.SubprocessError, ValueError, IndexError) as exc:
            return EnvState(python=str(self.python), error=str(exc) or type(exc).__name__)
        return EnvState(python=str(self.python), **found)

    def bench_id(self, conf: dict[str, Any]) -> str:
        """Frappe's ``get_bench_id()``: ``bench_id`` from config, else the bench path with '-'."""
        configured = conf.get("bench_id")
        if configured:
            return str(configured)
        return str(self.path.resolve()).strip("/").replace("/", "-")


# Run by the bench's Python: is frappe-celery installed there (its version), is the switch's
# .pth file there, can the module it imports be found.
_PROBE = """
import importlib.metadata, importlib.util, json, pathlib, sysconfig
pth = pathlib.Path(sysconfig.get_paths()["purelib"]) / "frappe_celery_switch.pth"
try:
    version = importlib.metadata.version("frappe-celery")
except importlib.metadata.PackageNotFoundError:
    version = None
switch = importlib.util.find_spec("frappe_celery_switch") is not None
print(json.dumps({"version": version, "pth": str(pth), "pth_present": pth.is_file(),
                  "switch_importable": switch}))
"""


@dataclass(frozen=True)
class EnvState:
    """frappe-celery in a bench's virtualenv, as its own Python sees it."""

    python: str
    version: str | None = None  # None: not installed there
    pth: str = ""
    pth_present: bool = False
    switch_importable: bool = False
    error: str | None = None  # the probe itself failed (no such Python, a timeout)


def find_bench(environ: Mapping[str, str] | None = None) -> Bench | None:
    """The bench this process runs in: ``FRAPPE_CELERY_SITES_PATH``, else the current folder
    when it is a bench's ``sites/``. Raises :class:`ConfigError` when the named folder is not one.
    """
    env = os.environ if environ is None else environ
    named = env.get(SITES_PATH_ENV)
    if named:
        path = Path(named).resolve()
        if not (path / COMMON_SITE_CONFIG).is_file():
            raise ConfigError(
                f"{SITES_PATH_ENV}: {named!r} is not a bench's sites folder "
                f"(no {COMMON_SITE_CONFIG} in it)"
            )
        return Bench(path)
    here = Path.cwd()
    if (here / COMMON_SITE_CONFIG).is_file() and (here / APPS_TXT).is_file():
        return Bench(here)
    return None


def broker_url_of(bench: Bench, conf: dict[str, Any]) -> str:
    """The queue Redis URL a bench's RQ workers use: ``redis_queue``, with Frappe's credentials
    when ``use_rq_auth`` is set (``rq_username`` or the bench id, and ``rq_password``)."""
    url = conf.get("redis_queue")
    if not url or not isinstance(url, str):
        raise ConfigError(
            f"{bench.config_path}: redis_queue is missing or not a URL (got {url!r}); "
            "it names the bench's queue Redis, e.g. redis://127.0.0.1:11000"
        )
    if not conf.get("use_rq_auth"):
        return url
    username = conf.get("rq_username") or bench.bench_id(conf)
    password = conf.get("rq_password")
    if not password:
        raise ConfigError(
            f"{bench.config_path}: use_rq_auth is set but rq_password is missing "
            "(bench create-rq-users writes both)"
        )
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    netloc = f"{quote(str(username), safe='')}:{quote(str(password), safe='')}@{host}"
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
