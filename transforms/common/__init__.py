"""Shared building blocks with no domain state: error classes, masking of values in messages,
hashing while copying, identifier checks (personnummer, organisationsnummer), the fault hooks
used by the crash tests, retention periods, safe XML parsing, the streaming TAR writer and safe
reading of TAR/ZIP containers.

Owns nothing persistent. May import: nothing from the rest of ``transforms`` (it is the bottom layer).
"""
