"""Configuration: the settings read from the environment (``ARKIV_*``: home, catalogue, mellanarkiv,
slutarkiv), the source system YAMLs under ``dags/systems`` with their record classes, retention
rules and read-only query checks, and ``arkiv check-config`` against the YAML's JSON Schema.

May import: ``common``, ``formats`` (a system's format policy).
"""
