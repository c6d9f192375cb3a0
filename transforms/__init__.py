"""Arkivflöde's domain library: extract, stage, check, package, ship, validate and catalogue.

Nothing in this package imports Airflow: it is plain Python over files, Arrow batches and
XML, used by the DAGs (through ``plugins/``), by the ``arkiv`` CLI and by the tests.

Subpackages, from the bottom up; each may import only those before it (its docstring says
which), and ``tests/test_import_graph.py`` holds the order:

``common`` → ``catalogue`` → ``formats`` → ``config`` → ``validation`` → ``staging`` →
``quality`` → ``packaging`` → ``intake`` → ``archive`` → ``access``

On top: :mod:`.pipeline` (the chain of steps for one interval of one system, used by the DAGs
and by ``arkiv run``), :mod:`.cli` (``arkiv``), :mod:`.status`, :mod:`.summary` and :mod:`.drill`.
"""

import os

__version__ = "0.1.0"

#: The software, named once: in METS and PREMIS (the agent of what it does), in receipts,
#: certificates, catalogue events and on its pages. Renaming it is a change here and nowhere else.
SOFTWARE_NAME = "Arkivflöde"
#: its agent identifier (ASCII, for identifiers and file names)
SOFTWARE_ID = "arkivflode"
SOFTWARE_VERSION = __version__
#: how the software signs what it records: name and version
SOFTWARE_LABEL = f"{SOFTWARE_NAME} {SOFTWARE_VERSION}"

# Arrow's buffers come from the C library's allocator unless ARROW_DEFAULT_MEMORY_POOL says
# otherwise. The pyarrow wheels' default (mimalloc) keeps the pages of freed tables for reuse:
# a package build reads, filters and sorts its child tables and frees the copies, and with
# mimalloc ~2 KB per document stayed resident after that (bench/README.md, memory). Arrow reads
# the variable when it is first imported, so it is set here, before any module of ours imports
# it; a process that imported pyarrow earlier keeps the allocator it had.
os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")
