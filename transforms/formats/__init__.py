"""File formats: identification (PRONOM PUIDs through fido, container checks, the
identification cache keyed by SHA-256 and signature version), the format policy (what is accepted
for preservation) and PDF/A conversion with its cache.

May import: ``common``, ``catalogue`` (the identification cache table).
"""
