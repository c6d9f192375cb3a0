"""Arkivflöde's domain library: extract, stage, check, package, ship, validate and catalogue.

Nothing in this package imports Airflow: it is plain Python over files, Arrow batches and
XML, used by the DAGs (through ``plugins/``), by the ``arkiv`` CLI and by the tests.
"""

__version__ = "0.1.0"
