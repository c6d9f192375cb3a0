"""The E-ARK CSIP/SIP and FGS validator: structure, METS, PREMIS and checksums of a package in a
folder, TAR or ZIP, by specification version (2.0.4, 2.1.0, 2.2.0), with requirement IDs.

The engine is :mod:`transforms.validation.validator`; the checks are rules in
:mod:`transforms.validation.rules`, one module per section of the specification, registered with the
requirement IDs they own (:mod:`transforms.validation.registry`).

May import: ``common`` only, so anything can validate.
"""
