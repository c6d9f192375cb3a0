"""The Swedish profile: every choice FGS leaves to the implementer, in one place.

FGS Paketstruktur 2.0 *is* E-ARK CSIP 2.1.0 + SIP 2.1.0; FGS Ärendehantering 2.0 *is* CITS
ERMS. What is ours to decide — which agents a package names and how they are identified
(organisationsnummer), the submission agreement and reference code, the content category,
and our retention extension — lives here, so that Riksarkivet's own application can be
added beside it as a second profile without touching the builder.
"""

from __future__ import annotations

from dataclasses import dataclass

from transforms import SOFTWARE_NAME, SOFTWARE_VERSION
from transforms.validation.requirements import CSIP_PROFILE_URL, SIP_PROFILE_URL

#: the one place the specification versions are pinned
CSIP_VERSION = "2.1.0"


def profile_url(package_type: str) -> str:
    """mets/@PROFILE for a package of ``package_type``: the E-ARK SIP profile for a SIP, the CSIP profile for
    any other (AIP, DIP). The URLs are the validator's (:mod:`transforms.validation.requirements`), which
    judges packages by them."""
    return SIP_PROFILE_URL if package_type == "SIP" else CSIP_PROFILE_URL


@dataclass(frozen=True)
class MetsAgent:
    """An agent in ``metsHdr``: ROLE, TYPE (or OTHERTYPE), name and an optional typed note."""

    role: str
    type: str
    name: str
    note: str | None = None
    note_type: str | None = None
    other_type: str | None = None


@dataclass(frozen=True)
class Profile:
    """What a package says about itself beyond the bare specification."""

    name: str
    content_category: str  # mets/@TYPE, from CSIPVocabularyContentCategory
    content_information_type: str  # csip:CONTENTINFORMATIONTYPE
    other_content_information_type: str | None = None  # when the type is OTHER (CSIP5, CSIP63)
    record_status: str = "NEW"

    def software_agent(self) -> MetsAgent:
        # CSIP10–16: the software that made the package, with its version.
        return MetsAgent("CREATOR", "OTHER", SOFTWARE_NAME, SOFTWARE_VERSION, "SOFTWARE VERSION", other_type="SOFTWARE")

    def agents(self, archive_creator: tuple[str, str], submitter: tuple[str, str],
               preservation: tuple[str, str] | None = None) -> list[MetsAgent]:
        """The SIP agents; organisations are identified by organisationsnummer (SIP9–SIP31).

        The IDENTIFICATIONCODE note holds the bare organisationsnummer (``NNNNNN-NNNC``).
        """
        code = "IDENTIFICATIONCODE"
        agents = [
            self.software_agent(),
            # SIP9–14: the archival creator (arkivbildare)
            MetsAgent("ARCHIVIST", "ORGANIZATION", archive_creator[0], archive_creator[1], code),
            # SIP15–20: the submitting organisation
            MetsAgent("CREATOR", "ORGANIZATION", submitter[0], submitter[1], code),
        ]
        if preservation:
            agents.append(MetsAgent("PRESERVATION", "ORGANIZATION", preservation[0], preservation[1], code))
        return agents

    @staticmethod
    def alt_record_ids(submission_agreement: str, reference_code: str) -> list[tuple[str, str]]:
        """SIP5 and SIP7: the submission agreement (leveransöverenskommelse) and reference code."""
        return [("SUBMISSIONAGREEMENT", submission_agreement), ("REFERENCECODE", reference_code)]


#: FGS profile for case-shaped records (ärenden) described with FGS Ärendehantering 2.0
FGS_ERMS = Profile(name="fgs-erms", content_category="Mixed", content_information_type="citserms_v2_1")

#: FGS profile for records that are not case-shaped (payroll, the archival description):
#: tables as UTF-8 CSV described by a data dictionary. No CSIP content information type fits
#: plain CSV, so it is OTHER with our own name (CSIP5).
FGS_TABULAR = Profile(name="fgs-tabular", content_category="Datasets", content_information_type="OTHER",
                      other_content_information_type="Arkivflode-Tabular-1.0")
