"""Arkivflöde's Airflow side: binds the pure ``transforms`` library to Airflow.

``hooks`` resolves Airflow connections to what ``transforms`` needs (database URLs),
``steps`` runs a ``transforms.pipeline`` step inside a task and maps content problems to
failures that are not retried, and ``factory`` builds one DAG per source-system YAML.
"""
