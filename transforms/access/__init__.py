"""Access to the archive: search, read, receipts (kvittenser) and deliveries (utlämnande).

* :mod:`.index` — the search index (SQLite FTS5 / PostgreSQL tsvector) kept in the catalogue.
* :mod:`.service` — :class:`~.service.Archive`: search and read as a principal, every access logged.
* :mod:`.auth` — roles, API credentials, personnummer digests.
* :mod:`.accesslog` — the append-only access log.
* :mod:`.receipts` — the receipt a business system fetches before removing archived records.
* :mod:`.dip` — E-ARK DIPs for requests for public documents, secret parts withheld.
* :mod:`.api` — the FastAPI app (``create_app(settings)``); no Airflow here.

May import: every layer below it (``common`` … ``archive``); nothing in those layers imports
``access``: the search index is brought up to date by steps of its own after a batch is recorded
and after a retention run.
"""
