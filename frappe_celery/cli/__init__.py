"""The ``frappe-celery`` command line: see and steer jobs without Flower."""

from __future__ import annotations

import os
import sys

import click

from .demo import demo


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Frappe-style background jobs on Celery: run, inspect and manage them."""
    # Like `celery -A`, make the current folder importable: hooks modules live there.
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())


main.add_command(demo)
