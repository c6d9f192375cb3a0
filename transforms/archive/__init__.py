"""The archive: storage for the mellanarkiv and slutarkiv (folders or S3 with Object Lock), OCFL in the
slutarkiv, the retention schedule (transfer, disposal lists, certificates, legal holds), the
evidence of what was transferred or disposed of, and ``arkiv reconcile``.

May import: every layer below it; not ``access`` nor the chain on top.
"""
