"""The staged batch: rows from any source (database, file export) streamed into Parquet,
partitioned by record class, with ``manifest.json`` describing it; documents opened without
following links. This is the hand-over from intake to the quality gate and the package builder.

May import: ``common``, ``config``.
"""
