"""Package writing: METS, PREMIS, ERMS and the FGS profile; the SIP built from a staged batch, the AIP
made from a SIP at transfer, and ``arkiv prepare`` (an outside package turned into an FGS SIP).

May import: ``common``, ``catalogue``, ``formats``, ``config``, ``validation``, ``staging``.
"""
