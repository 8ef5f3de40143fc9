"""Scheduled job functions for the scheduler tests (they take no arguments, as scheduled
methods don't)."""

from __future__ import annotations

import time

from .jobs import push

TICKS = "test:sched:ticks"
OTHER = "test:sched:other"


def tick() -> None:
    push(TICKS, time.time())


def other() -> None:
    push(OTHER, time.time())
