"""Adapters for foreign frameworks. Each module here is the only place that imports its
framework, and is imported only by code that uses it."""
