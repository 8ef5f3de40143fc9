#!/usr/bin/env bash
# Frappe's own background-job and scheduler tests, run against a switched site with a Celery
# worker consuming the bench's queues (as Frappe's CI runs them with `bench worker`). Not part of
# CI: some of them read RQ's own objects and fail by design (see MIGRATING.md, "Frappe's own
# tests"). Prints each module's counts.
#
#   FRAPPE_BENCH_ENV=/tmp/frappe-celery-bench-v16/bench.env bash tests/bench/frappe_own_tests.sh
#
# Needs a bench prepared by `bash run.sh bench-test` (frappe-celery installed, the switch on).
# It sets allow_tests on the site and installs freezegun (a Frappe test dependency) into the
# bench's virtualenv.
set -euo pipefail
: "${FRAPPE_BENCH_ENV:?set FRAPPE_BENCH_ENV to a bench.env (make-bench.sh writes one)}"
set -a
# shellcheck disable=SC1090
. "$FRAPPE_BENCH_ENV"
set +a
: "${FRAPPE_SITE:=test.local}"
MODULES=(
    frappe.tests.test_background_jobs
    frappe.core.doctype.rq_job.test_rq_job
    frappe.core.doctype.rq_worker.test_rq_worker
    frappe.tests.test_scheduler
    frappe.core.doctype.scheduled_job_type.test_scheduled_job_type
)
cd "$FRAPPE_BENCH"
site_bench() { "$FRAPPE_BENCH_CLI" --site "$FRAPPE_SITE" "$@" < /dev/null; }
env/bin/python -m pip install --quiet --disable-pip-version-check freezegun
site_bench set-config allow_tests true > /dev/null

log=$(mktemp -d)
(cd sites && exec setsid ../env/bin/celery -A frappe_celery worker -Q short,default,long -c 2 \
    -n "frappe-own-tests-$$@%h" --loglevel WARNING > "$log/worker.log" 2>&1) &
worker=$!
trap 'kill -TERM -- -"$worker" 2> /dev/null || kill -TERM "$worker" 2> /dev/null || true; wait "$worker" 2> /dev/null || true' EXIT
sleep 5

for module in "${MODULES[@]}"; do
    timeout 600 "$FRAPPE_BENCH_CLI" --site "$FRAPPE_SITE" run-tests --module "$module" \
        < /dev/null > "$log/$module.log" 2>&1 || true
    ran=$(grep -Eo '^Ran [0-9]+ tests?' "$log/$module.log" | grep -Eo '[0-9]+' || echo 0)
    verdict=$(grep -E '^(OK|FAILED)' "$log/$module.log" | tail -n 1 || echo "no result")
    echo "$module: ran $ran, $verdict"
    grep -E '^ ?(ERROR|FAIL):? ' "$log/$module.log" | sed -E 's/^ ?/    /' || true
done
echo "logs: $log"
