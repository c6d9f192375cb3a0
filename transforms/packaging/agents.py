"""Who acts on a package: the software (Arkivflöde) named once, and the people whose decisions it records.

Every PREMIS event links the agents that acted, each with a role from the Library of Congress
vocabulary. What the software does on its own is linked to :func:`software` as the *executing
program*; what an archivist decided (a deviation approved, a disposal list signed, a hold placed)
is linked to that person as the *authorizer*, never to the software that wrote it down. The
catalogue keeps an event's agent as text: ``SOFTWARE_LABEL`` (``"<name> <version>"``) for the
software, the person's name for a decision; :func:`catalogue_event` turns one back into PREMIS.

The software's name, identifier and version are written once, in :mod:`transforms` (the package's
``__init__``); renaming the software is a change there and nowhere else.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence

from transforms import SOFTWARE_ID, SOFTWARE_LABEL, SOFTWARE_NAME, SOFTWARE_VERSION
from transforms.packaging.premis import Agent, Event

#: PREMIS linkingAgentRole terms (id.loc.gov/vocabulary/preservation/eventRelatedAgentRole)
EXECUTING_PROGRAM = "executing program"
AUTHORIZER = "authorizer"
VALIDATOR = "validator"
#: the prefix of a person agent's local identifier
PERSON_PREFIX = "person-"


def software_label(part: str | None = None) -> str:
    """The software's signature, with the part of it that acted when one is named (``"... (reconcile)"``)."""
    return f"{SOFTWARE_LABEL} ({part})" if part else SOFTWARE_LABEL


def software(identifier: str = SOFTWARE_ID) -> Agent:
    """The software as a PREMIS agent; ``identifier`` for a part of it that signs on its own (``prepare``)."""
    return Agent(identifier, SOFTWARE_NAME, "software", SOFTWARE_VERSION)


def by_software(identifier: str = SOFTWARE_ID) -> tuple[tuple[str, str]]:
    """The agent links of an event the software carried out by itself."""
    return ((identifier, EXECUTING_PROGRAM),)


def person(name: str) -> Agent:
    """A person (an archivist, a requester) as a PREMIS agent."""
    return Agent(person_id(name), name, "person")


def person_id(name: str) -> str:
    return f"{PERSON_PREFIX}{name}"


def by_person(name: str, role: str = AUTHORIZER) -> tuple[str, str]:
    """The agent link of a person acting in ``role`` (by default the one who decided)."""
    return (person_id(name), role)


def is_software(label: str) -> bool:
    """Whether a catalogue event's agent text is the software's own signature."""
    return label == SOFTWARE_NAME or label.startswith(f"{SOFTWARE_NAME} ")


def catalogue_event(identifier: str, type: str, time: dt.datetime, outcome: str, detail: str,  # noqa: A002
                    agent: str) -> Event:
    """A catalogue event as PREMIS: the software's own as its executing program, a decision by the
    person who made it (the catalogue's ``agent`` text), as the authorizer."""
    links = by_software() if is_software(agent) else (by_person(agent),)
    return Event(identifier=identifier, type=type, time=time, outcome=outcome, detail=detail, agents=links)


def agents_of(events: Iterable[Event], known: Sequence[Agent] = ()) -> list[Agent]:
    """The agents ``events`` link, as PREMIS needs them listed: ``known`` first, then the software and
    each person linked (in the order first linked), each once. Other agents must be among ``known``."""
    out = {a.identifier: a for a in known}
    for ev in events:
        for agent_id, _ in ev.agents:
            if agent_id in out:
                continue
            if agent_id == SOFTWARE_ID:
                out[agent_id] = software()
            elif agent_id.startswith(PERSON_PREFIX):
                out[agent_id] = person(agent_id.removeprefix(PERSON_PREFIX))
    return list(out.values())


__all__ = ["AUTHORIZER", "EXECUTING_PROGRAM", "SOFTWARE_ID", "SOFTWARE_LABEL", "SOFTWARE_NAME", "SOFTWARE_VERSION",
           "VALIDATOR", "agents_of", "by_person", "by_software", "catalogue_event", "is_software", "person",
           "software", "software_label"]
