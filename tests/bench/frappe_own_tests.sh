#!/usr/bin/env bash
# Frappe's own background-job, scheduler, Submission Queue and Prepared Report tests, run against
# a switched site with a Celery worker consuming the bench's queues (as Frappe's CI runs them
# with `bench worker`). Prints each module's counts, and fails when a test fails that is not in
# EXPECTED_FAILURES (each one listed with its reason in MIGRATING.md, "Frappe's own tests").
# .ci/run runs it after the bench tier, on both Frappe lines.
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
    frappe.core.doctype.submission_queue.test_submission_queue
    frappe.core.doctype.prepared_report.test_prepared_report
    # `bench worker` / `bench worker-pool` idle CPU (Frappe 16 only: skipped where absent).
    frappe.commands.test_commands:TestRQWorker
)
# Tests that cannot pass on a switched site (MIGRATING.md says why, one by one):
# test_enqueue_at_front races a Celery worker (it passes when the worker is slower).
EXPECTED_FAILURES=(
    test_enqueue_at_front
    test_memory_usage
)
cd "$FRAPPE_BENCH"
# Frappe's tests run `bench worker ...` by name, as on a developer's machine.
PATH="$(dirname "$FRAPPE_BENCH_CLI"):$PATH"
export PATH
site_bench() { "$FRAPPE_BENCH_CLI" --site "$FRAPPE_SITE" "$@" < /dev/null; }
env/bin/python -m pip install --quiet --disable-pip-version-check freezegun
site_bench set-config allow_tests true > /dev/null

log=$(mktemp -d)
(cd sites && exec setsid ../env/bin/celery -A frappe_celery worker -Q short,default,long -c 2 \
    -n "frappe-own-tests-$$@%h" --loglevel WARNING > "$log/worker.log" 2>&1) &
worker=$!
trap 'kill -TERM -- -"$worker" 2> /dev/null || kill -TERM "$worker" 2> /dev/null || true; wait "$worker" 2> /dev/null || true' EXIT
sleep 5

passed_total=0
failed_total=0
unexpected=()
for entry in "${MODULES[@]}"; do
    # MODULE or MODULE:TestCase (run-tests --case).
    module=${entry%%:*}
    case_args=()
    if [ "$entry" != "$module" ]; then
        case_args=(--case "${entry#*:}")
        file="apps/frappe/${module//.//}.py"
        if ! grep -qs "class ${entry#*:}\b" "$file"; then
            echo "$entry: not in this Frappe (skipped)"
            continue
        fi
    fi
    timeout 600 "$FRAPPE_BENCH_CLI" --site "$FRAPPE_SITE" run-tests --module "$module" \
        "${case_args[@]}" < /dev/null > "$log/$module.log" 2>&1 || true
    ran=$(grep -Eo '^Ran [0-9]+ tests?' "$log/$module.log" | grep -Eo '[0-9]+' || echo 0)
    failing=$(grep -Eo '^ ?(ERROR|FAIL):? +test[A-Za-z0-9_]*' "$log/$module.log" \
        | awk '{print $NF}' | sort -u || true)
    failed=$(printf '%s' "$failing" | grep -c . || true)
    if [ "$ran" -eq 0 ]; then
        # No count: the module did not run at all (an import error, a timeout).
        unexpected+=("$module (ran no test)")
        tail -n 30 "$log/$module.log" | sed 's/^/    | /'
    fi
    echo "$module: $((ran - failed)) of $ran passed"
    for test in $failing; do
        reason="expected: see MIGRATING.md, Frappe's own tests"
        if ! printf '%s\n' "${EXPECTED_FAILURES[@]}" | grep -qx "$test"; then
            reason="UNEXPECTED"
            unexpected+=("$module.$test")
        fi
        echo "    failed: $test ($reason)"
    done
    passed_total=$((passed_total + ran - failed))
    failed_total=$((failed_total + failed))
done
echo "Frappe's own tests: $passed_total of $((passed_total + failed_total)) passed (logs: $log)"
if [ "${#unexpected[@]}" -gt 0 ]; then
    echo "unexpected failures: ${unexpected[*]}" >&2
    for entry in "${MODULES[@]}"; do
        module=${entry%%:*}
        grep -A 25 -E '^ ?(ERROR|FAIL):? ' "$log/$module.log" | head -n 80 || true
    done
    exit 1
fi
