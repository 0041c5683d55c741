"""The store: every rollout in DuckDB and what reads it back.

database (the `Store`: opening the file between processes, writing runs and steps), reads (what `Store`
reads back), schema (the tables, their version, migrations), writer (a step's rows, the trainer's writer
thread), queries (read-only user SQL and the named queries), inspection (step view, before and after, reward
buckets), health (the named checks over a run's steps). It imports nothing from the engine, the rewards or
the UI.
"""
