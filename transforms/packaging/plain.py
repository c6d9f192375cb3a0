"""Entries of the package's XML written in batches, and whether their values go in as they are.

The entries that grow with a package (a METS file entry, a PREMIS file object, an ERMS record)
are formatted as text, every value escaped as libxml2 writes it (:func:`xmltools.escape`). Almost
no value needs escaping; asking once for all of an entry's values, joined by a space, replaces a
call per value. When :func:`xmltools.as_is` says so, every value is written unchanged, which is what
``escape`` gives for it in text and in an attribute alike; otherwise the entry is escaped value by
value (which also refuses a character XML cannot carry). :func:`add_entries` writes such entries
into a streamed document a few hundred at a time.
"""

from __future__ import annotations

from collections.abc import Iterable

from transforms.common.xmltools import PrettyStream

#: entries joined into one write of a document being streamed
ENTRIES_PER_WRITE = 256


def add_entries(stream: PrettyStream, entries: Iterable[bytes], namespaces: tuple[str, ...]) -> None:
    """Write serialised children of ``stream``'s innermost open element, :data:`ENTRIES_PER_WRITE` at a time
    (the same bytes as one :meth:`PrettyStream.add_text` each, a fraction of the calls)."""
    batch: list[bytes] = []
    for entry in entries:
        batch.append(entry)
        if len(batch) == ENTRIES_PER_WRITE:
            stream.add_text(b"".join(batch), namespaces)
            batch = []
    if batch:
        stream.add_text(b"".join(batch), namespaces)
