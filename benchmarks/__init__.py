"""Benchmarks for frappe-celery; run ``python -m benchmarks.bench_enqueue`` from the root."""
