"""Package writing: one CSIP writer (:mod:`.csip`) for every package we make, METS, PREMIS, ERMS and the FGS
profile; who acts on a package (:mod:`.agents`: the software, named once in :mod:`.fgs`, and the people
who decide); the SIP built from a staged batch, the AIP made from a SIP at transfer, and ``arkiv prepare``
(an outside package turned into an FGS SIP).

May import: ``common``, ``catalogue``, ``formats``, ``config``, ``validation``, ``staging``.
"""
