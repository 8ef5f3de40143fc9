"""The ``frappe-celery`` command: see and steer queues, jobs, workers and the scheduler.

Exit codes: 0 ok, 1 a problem was found or the broker is down, 2 bad usage (unknown queue, site,
event or job id). Nothing prompts; listing commands exit 0.
"""

from __future__ import annotations

import os
import sys

import click

from frappe_celery.cli.bench import bench_group
from frappe_celery.cli.demo import demo
from frappe_celery.cli.jobs import (
    cancel_command,
    failed_command,
    jobs_command,
    purge_jobs_command,
    retry_command,
    stop_command,
)
from frappe_celery.cli.metrics import metrics_command
from frappe_celery.cli.run import start_command, worker_command
from frappe_celery.cli.scheduler import scheduler_group, trigger_command
from frappe_celery.cli.status import doctor_command, status_command
from frappe_celery.cli.top import top_command


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Frappe-style background jobs on Celery: run, inspect and manage them."""
    # Like `celery -A`, make the current folder importable: hooks modules live there.
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())


for command in (status_command, jobs_command, failed_command, retry_command, purge_jobs_command,
                stop_command, cancel_command, trigger_command, scheduler_group, doctor_command,
                worker_command, start_command, demo, bench_group, metrics_command,
                top_command):  # fmt: skip
    main.add_command(command)
# Frappe's name for `jobs`.
main.add_command(jobs_command, "show-pending-jobs")
