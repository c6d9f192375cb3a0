"""The E-ARK CSIP/SIP and FGS validator: structure, METS, PREMIS and checksums of a package in a
folder, TAR or ZIP, by specification version (2.0.4, 2.1.0, 2.2.0), with requirement IDs.

May import: ``common`` only, so anything can validate.
"""
