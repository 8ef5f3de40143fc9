#!/usr/bin/env bash
# The bench tier (`bash run.sh bench-test`): frappe-celery on a real Frappe bench and site.
#
# Which bench, in this order:
#   FRAPPE_BENCH=/path/to/bench FRAPPE_SITE=site   your own bench (bench CLI: FRAPPE_BENCH_CLI or
#                                                  `bench` on PATH)
#   FRAPPE_BENCH_ENV=/path/bench.env               one described by make-bench.sh's bench.env
#   neither: ../shared/frappe/make-bench.sh builds or reuses one (FRAPPE_VERSION=15|16, default 16)
#
# BENCH_PYTHON: the Python the bench runs on. For a bench make-bench.sh builds, the Python it
# makes the bench's virtualenv with (its PYTHON; default python3), at its own ROOT
# (/tmp/frappe-celery-bench-vVERSION-pyX.Y) so that a bench of another Python is not reused. A
# version ("3.10", "python3.10") is looked up by tests/find-python.sh (PATH, then pyenv); a path
# is taken as it is. Whichever bench, the tests stop unless its Python is that version.
#
# What it does to that bench: installs frappe-celery (editable, from this checkout), pytest and
# the example app (examples/celery_example, copied to BENCH/apps and installed on the site),
# checks that every Frappe pin is still satisfied (pip check), enables the switch (before the
# app's install, whose scheduler_events need it), then runs tests/bench with the bench's own
# Python. Extra arguments go to pytest. FRAPPE_OWN_TESTS=1 then runs Frappe's own
# background-job tests on the site too (tests/bench/frappe_own_tests.sh).
set -euo pipefail
cd "$(dirname "$0")/../.."
project=$PWD
version_of() { "$1" -c 'import sys; print(*sys.version_info[:2], sep=".")'; }
if [[ "${BENCH_PYTHON:-}" =~ ^(python)?([0-9]+\.[0-9]+)$ ]]; then
    BENCH_PYTHON=$(bash tests/find-python.sh "${BASH_REMATCH[2]}" BENCH_PYTHON)
fi
if [ -n "${BENCH_PYTHON:-}" ]; then
    bench_python_version=$(version_of "$BENCH_PYTHON") \
        || { echo "bench-test: BENCH_PYTHON=$BENCH_PYTHON does not run" >&2; exit 2; }
fi

if [ -z "${FRAPPE_BENCH:-}" ] && [ -z "${FRAPPE_BENCH_ENV:-}" ]; then
    make_bench=../shared/frappe/make-bench.sh
    if [ ! -f "$make_bench" ]; then
        echo "bench-test: no bench (set FRAPPE_BENCH and FRAPPE_SITE, or FRAPPE_BENCH_ENV) and no $make_bench to build one" >&2
        exit 2
    fi
    version=${FRAPPE_VERSION:-16}
    suffix=""
    if [ -n "${BENCH_PYTHON:-}" ]; then
        suffix=-py$bench_python_version
        export PYTHON=$BENCH_PYTHON  # make-bench.sh's name for it
    fi
    if [ "${CI:-}" = true ] && [ -z "${FRAPPE_BENCH_ROOT:-}" ]; then
        # CI: a bench of this run's own, on free ports, removed at exit, so that nothing a
        # previous or concurrent run left behind (a half-made site, a taken port) is reused.
        root=$(mktemp -d "/tmp/frappe-celery-bench-v$version$suffix.XXXXXX")
        chmod 755 "$root"  # MariaDB runs as mysql and must reach its datadir inside
        read -r DB_PORT REDIS_QUEUE_PORT REDIS_CACHE_PORT < <(python3 -c '
import socket
socks = [socket.socket() for _ in range(3)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))')
        export DB_PORT REDIS_QUEUE_PORT REDIS_CACHE_PORT
        cleanup() { bash "$(dirname "$make_bench")/stop-bench.sh" "$root" --purge > /dev/null 2>&1 || true; rm -rf "$root"; }
        trap cleanup EXIT
    else
        root=${FRAPPE_BENCH_ROOT:-/tmp/frappe-celery-bench-v$version$suffix}
    fi
    echo "== building or reusing a Frappe $version bench at $root${PYTHON:+ with $PYTHON}"
    log=$(mktemp)
    if ! FRAPPE_VERSION=$version bash "$make_bench" "$root" > "$log" 2>&1; then
        # Everything make-bench said (its steps, the failing command's log tail, its reason).
        cat "$log" >&2
        echo "bench-test: make-bench.sh failed for $root (above)" >&2
        exit 1
    fi
    grep '^\[' "$log" | tail -n 1
    rm -f "$log"
    export FRAPPE_BENCH_ENV=$root/bench.env
fi
if [ -n "${FRAPPE_BENCH_ENV:-}" ]; then
    set -a
    # shellcheck disable=SC1090
    . "$FRAPPE_BENCH_ENV"
    set +a
fi
: "${FRAPPE_SITE:=test.local}"
: "${FRAPPE_BENCH_CLI:=bench}"
export FRAPPE_BENCH FRAPPE_SITE FRAPPE_BENCH_CLI
venv=$FRAPPE_BENCH/env
pip=("$venv/bin/python" -m pip install --quiet --disable-pip-version-check)
if [ -n "${BENCH_PYTHON:-}" ] && [ "$(version_of "$venv/bin/python")" != "$bench_python_version" ]; then
    # Your own bench, or one an earlier run made with another Python at FRAPPE_BENCH_ROOT.
    echo "bench-test: the bench at $FRAPPE_BENCH runs Python $(version_of "$venv/bin/python"), not $bench_python_version (BENCH_PYTHON=$BENCH_PYTHON): use another FRAPPE_BENCH_ROOT, or remove that one (stop-bench.sh ROOT --purge)" >&2
    exit 1
fi

echo "== installing frappe-celery into $venv"
"${pip[@]}" -e "$project" "pytest>=8" "pytest-timeout>=2.3"
# Every Frappe pin must still hold with frappe-celery installed.
"$venv/bin/python" -m pip check

# The switch first: install-app syncs the app's scheduler_events, whose cron_long and
# daily_short keys Frappe's own sync cannot take (integrations/frappe/scheduled_jobs.py).
echo "== the switch"
(cd "$FRAPPE_BENCH/sites" && "$venv/bin/frappe-celery" bench enable)

echo "== example app on site $FRAPPE_SITE"
app=$FRAPPE_BENCH/apps/celery_example
rm -rf "$app"
cp -r "$project/examples/celery_example" "$app"
"${pip[@]}" -e "$app"
grep -qx celery_example "$FRAPPE_BENCH/sites/apps.txt" || echo celery_example >> "$FRAPPE_BENCH/sites/apps.txt"
site_bench() { (cd "$FRAPPE_BENCH" && "$FRAPPE_BENCH_CLI" --site "$FRAPPE_SITE" "$@" < /dev/null); }
# A bench made without yarn has no built assets: an empty manifest lets Frappe render emails
# (frappe.sendmail's template looks its CSS bundle up there), as the call-site tests need.
assets=$FRAPPE_BENCH/sites/assets/assets.json
[ -f "$assets" ] || { mkdir -p "$(dirname "$assets")"; echo '{}' > "$assets"; }
# Frappe caches the apps' module map: without this, install-app would not see the new app's
# modules and would sync none of its DocTypes.
site_bench clear-cache
site_bench list-apps | grep -q celery_example || site_bench install-app celery_example
# The app's DocTypes as this checkout has them (install-app syncs them only the first time).
site_bench execute frappe.model.sync.sync_for --args '["celery_example"]' --kwargs '{"force": True}' > /dev/null
# Its scheduler_events as this checkout has them, as `bench migrate` syncs them.
site_bench execute frappe.core.doctype.scheduled_job_type.scheduled_job_type.sync_jobs > /dev/null

echo "== tests/bench with $venv/bin/python ($(cd "$FRAPPE_BENCH" && "$venv/bin/python" -c 'import platform, frappe; print("Python", platform.python_version() + ", Frappe", frappe.__version__)'))"
FRAPPE_CELERY_BENCH_REQUIRED=1 "$venv/bin/python" -m pytest tests/bench -p no:cacheprovider "$@"

if [ "${FRAPPE_OWN_TESTS:-}" = 1 ]; then
    # Frappe's own background-job tests on this switched site (CI sets it): per-module counts,
    # and a failure unless every failing test is one MIGRATING.md lists.
    echo "== Frappe's own background-job tests on $FRAPPE_SITE"
    FRAPPE_BENCH_ENV=$(mktemp) && export FRAPPE_BENCH_ENV
    printf 'FRAPPE_BENCH=%s\nFRAPPE_SITE=%s\nFRAPPE_BENCH_CLI=%s\n' \
        "$FRAPPE_BENCH" "$FRAPPE_SITE" "$FRAPPE_BENCH_CLI" > "$FRAPPE_BENCH_ENV"
    bash tests/bench/frappe_own_tests.sh
fi
