"""The validator's rules, one module per section of the specification.

Importing this package registers every rule (:mod:`transforms.validation.registry`); they run,
and their requirements are listed, in the order of the specification's sections (structure, METS
root, header, dmdSec, amdSec, fileSec, structMap, then the SIP profile's own rules, our FGS rules
and our DIP rules), whatever the order of the imports below. A rule module imports only the core of
:mod:`transforms.validation` (registry, context, report, requirements) and, for a shared helper,
another rule module (never in a cycle).
"""

from transforms.validation.rules import (  # noqa: F401 - imported to register the rules
    amdsec,
    dip,
    dmdsec,
    fgs,
    filesec,
    header,
    mets_root,
    sip,
    structmap,
    structure,
)
