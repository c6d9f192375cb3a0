"""The registry of rules: which requirement IDs each rule checks, in which profiles, and its checks.

A rule module (``transforms/validation/rules/*.py``) registers each rule once with the IDs it owns
(:func:`register`), and hangs its checks on the rule (:meth:`Rule.on`); requirements that no
official profile defines (the CSIP folder structure, our own rules) are defined beside their rule
(:func:`define`), and a requirement no machine can check is declared so, with the reason
(:func:`not_checkable`). ``arkiv validate --requirements``, the report's ``requirements_checked`` and
the checks that run all come from here, so they cannot drift: an ID is "checked" exactly when a
rule owns it, and a rule may only report the IDs it owns (the context logs an error otherwise).

Checks run by scope (:class:`Scope`), and within a scope in the specification's order of sections
(:class:`Section`), then by ``order``, then in registration order. A check may run with another
section than its rule's (``at``): the SIP rules on the METS root run beside the CSIP ones.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from transforms import SOFTWARE_NAME
from transforms.validation.requirements import (
    FGS_SPEC_VERSION,
    SIP_PROFILES,
    Requirement,
    check_version,
    official_requirements,
)


class Section(enum.IntEnum):
    """The specification's sections, in the order their checks run."""

    STRUCTURE = 1  # CSIP §4, folder structure
    METS_ROOT = 2  # the METS document and its root element
    HEADER = 3  # metsHdr and agents
    DMDSEC = 4
    AMDSEC = 5
    FILESEC = 6
    STRUCTMAP = 7
    SIP = 8  # the SIP profile's own requirements
    FGS = 9  # FGS Paketstruktur: our rules ARK*
    DIP = 10  # our DIP rules


class Scope(enum.Enum):
    """When a check runs, and what it is given besides the context."""

    START = "start"  # before any METS is read: (ctx)
    DECLARED = "declared"  # once the E-ARK version is chosen from the package METS: (ctx, choice)
    LOADED = "loaded"  # each METS document read: (ctx, rel, doc or None, refusal or None, schema errors)
    DOCUMENT = "document"  # each METS document that parsed: (ctx, doc)
    FILE = "file"  # each mets:file of a fileSec, as soon as it can be judged: (ctx, doc, file, amd_ids, dmd_ids)
    REFERENCE = "reference"  # each file and mdRef, with its attributes: (ctx, doc, element, locat)
    PACKAGE = "package"  # once, after every METS document: (ctx)


@dataclass(frozen=True)
class Definition:
    """A requirement that no official METS profile defines: the CSIP folder structure, our own rules."""

    id: str
    level: str
    title: str
    description: str
    source: str = SOFTWARE_NAME  # "{version}" is replaced by the E-ARK version
    own: bool = True  # listed after the official requirements (False: right after the CSIP profile's)
    profiles: frozenset[str] | None = None
    section: Section = Section.STRUCTURE  # set by define(); requirements are listed in section order

    def requirement(self, version: str) -> Requirement:
        return Requirement(self.id, self.level, self.source.format(version=version), self.title, self.description)


@dataclass(eq=False)
class Hook:
    fn: Callable
    scope: Scope
    rule: Rule
    at: Section
    order: int
    seq: int
    without_mets: bool = False  # also runs when the package has no METS.xml (PACKAGE scope)
    replaces: str | None = None  # the name of a hook this one replaces in the rule's profiles

    @property
    def name(self) -> str:
        return f"{self.fn.__module__.rsplit('.', 1)[-1]}.{self.fn.__name__}"


class Rule:
    """One rule: a name, the requirement IDs it owns, the profiles it applies to, and its checks."""

    def __init__(self, name: str, ids: tuple[str, ...], section: Section, profiles: frozenset[str] | None,
                 notes: dict[str, str]):
        self.name = name
        self.ids = frozenset(ids)
        self.id_list = ids
        self.section = section
        self.profiles = profiles
        self.notes = notes  # what part of a checked requirement no machine can judge
        self.hooks: list[Hook] = []

    def applies(self, profile: str) -> bool:
        return self.profiles is None or profile in self.profiles

    def on(self, scope: Scope, *, at: Section | None = None, order: int = 0, without_mets: bool = False,
           replaces: str | None = None) -> Callable[[Callable], Callable]:
        """Decorator: run the function as one of this rule's checks in ``scope``."""
        def decorate(fn: Callable) -> Callable:
            hook = Hook(fn, scope, self, at or self.section, order, len(_HOOKS), without_mets, replaces)
            self.hooks.append(hook)
            _HOOKS.append(hook)
            _cached_hooks.cache_clear()
            return fn
        return decorate

    def __repr__(self) -> str:
        return f"Rule({self.name!r}, {', '.join(self.id_list)})"


_RULES: dict[str, Rule] = {}
_OWNER: dict[str, Rule] = {}
_NOT_CHECKABLE: dict[str, str] = {}
_DEFINITIONS: list[Definition] = []
_HOOKS: list[Hook] = []


def register(name: str, ids: Iterable[str], *, section: Section, profiles: Iterable[str] | None = None,
             notes: dict[str, str] | None = None) -> Rule:
    """Register a rule owning ``ids``; an ID may be owned by one rule only."""
    ids = tuple(ids)
    if not ids:
        raise ValueError(f"rule {name!r} owns no requirement ID")
    if name in _RULES:
        raise ValueError(f"a rule named {name!r} is already registered")
    for rid in ids:
        if rid in _OWNER or rid in _NOT_CHECKABLE:
            other = _OWNER[rid].name if rid in _OWNER else "not checkable"
            raise ValueError(f"{rid} is registered twice: by {name!r} and by {other!r}")
    if notes and set(notes) - set(ids):
        raise ValueError(f"rule {name!r} has notes on IDs it does not own: {sorted(set(notes) - set(ids))}")
    rule = Rule(name, ids, section, frozenset(profiles) if profiles is not None else None, dict(notes or {}))
    _RULES[name] = rule
    for rid in ids:
        _OWNER[rid] = rule
    _changed()
    return rule


def not_checkable(rid: str, reason: str) -> None:
    """Declare that no machine can check ``rid`` (a permission, a reference to other rules …) and why."""
    if rid in _OWNER or rid in _NOT_CHECKABLE:
        raise ValueError(f"{rid} is registered twice")
    _NOT_CHECKABLE[rid] = reason
    _changed()


def define(section: Section, *definitions: Definition) -> None:
    """Add requirements that no official profile defines, listed by section, then in this order."""
    known = {d.id for d in _DEFINITIONS}
    for d in definitions:
        if d.id in known:
            raise ValueError(f"{d.id} is defined twice")
        known.add(d.id)
        _DEFINITIONS.append(dataclasses.replace(d, section=section))
    _DEFINITIONS.sort(key=lambda d: d.section)  # stable: the order within a section is kept
    _changed()


def _changed() -> None:
    _cached_requirements.cache_clear()
    levels.cache_clear()
    titles.cache_clear()


def rules() -> list[Rule]:
    return list(_RULES.values())


def owner(rid: str) -> Rule | None:
    return _OWNER.get(rid)


def not_checkable_reasons() -> dict[str, str]:
    return dict(_NOT_CHECKABLE)


def definitions() -> list[Definition]:
    return list(_DEFINITIONS)


def hooks(scope: Scope, profile: str, *, without_mets: bool = False) -> tuple[Hook, ...]:
    """The checks of ``scope`` that run for ``profile``, in order (replaced checks left out)."""
    return _cached_hooks(scope, profile, without_mets)


@functools.lru_cache(maxsize=64)
def _cached_hooks(scope: Scope, profile: str, without_mets: bool) -> tuple[Hook, ...]:
    active = [h for h in _HOOKS if h.scope is scope and h.rule.applies(profile)
              and (h.without_mets or not without_mets)]
    replaced = {h.replaces for h in active if h.replaces}
    return tuple(sorted((h for h in active if h.name not in replaced), key=lambda h: (h.at, h.order, h.seq)))


def requirements(profile: str, version: str = FGS_SPEC_VERSION) -> list[Requirement]:
    """Every requirement of ``profile`` in ``version``: the CSIP profile's, the folder structure, the
    SIP profile's where SIP rules apply, then ours; none marked checked (see :func:`checked`)."""
    return list(_cached_requirements(profile, version))


@functools.lru_cache(maxsize=32)
def _cached_requirements(profile: str, version: str) -> tuple[Requirement, ...]:
    check_version(version)
    mine = [d for d in _DEFINITIONS if d.profiles is None or profile in d.profiles]
    reqs = list(official_requirements("CSIP", version))
    reqs += [d.requirement(version) for d in mine if not d.own]
    if profile in SIP_PROFILES:
        csip_ids = {r.id for r in reqs}
        reqs += [r for r in official_requirements("SIP", version) if r.id not in csip_ids]
    reqs += [d.requirement(version) for d in mine if d.own]
    return tuple(reqs)


def checked(rid: str, profile: str) -> bool:
    """True when a rule that applies to ``profile`` owns ``rid``."""
    rule = _OWNER.get(rid)
    return rule is not None and rule.applies(profile)


def note(rid: str, profile: str) -> str:
    """What --requirements says beside ``rid``: the unjudged part of a checked one, or why it is not checked."""
    if checked(rid, profile):
        return _OWNER[rid].notes.get(rid, "")
    return _NOT_CHECKABLE.get(rid, "not checked")


@functools.lru_cache(maxsize=4)
def levels(version: str = FGS_SPEC_VERSION) -> dict[str, str]:
    """Requirement level (MUST, SHOULD, MAY) by ID, as broken requirements are reported."""
    return {r.id: r.level for r in requirements("fgs", version)}


@functools.lru_cache(maxsize=4)
def titles(version: str = FGS_SPEC_VERSION) -> dict[str, str]:
    """Requirement title by ID, for the text report."""
    current = {r.id: r.title for r in requirements("fgs", version)}
    # CSIP86 left the profile in 2.1.0; its title is still needed for a 2.0.4 package's report.
    return {**{r.id: r.title for r in requirements("fgs", "2.0.4")}, **current}
