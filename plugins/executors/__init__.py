"""Executors: run a workflow's DAG. One core (:mod:`.core`) for every engine; ``threaded`` is
the default engine, ``ray`` runs nodes as Ray actors; all render answers with :mod:`.response`."""
