"""Executors: run a workflow's DAG. ``threaded`` is the default; all share :mod:`.response`."""
