"""The validator's rule registry: --requirements and the checks come from one place and cannot drift.

Every rule owns at least one requirement ID and no ID is owned twice; every requirement any
profile lists is either owned by a rule that applies to that profile (and so "checked") or
declared not checkable with a reason; a rule reports only the IDs it owns, both as written in its
module and as seen while validating packages; and a new rule is one registration in one module.
"""

from __future__ import annotations

import ast
import importlib.util
import logging
import re
from pathlib import Path

import pytest

from transforms.validation import registry
from transforms.validation import validator as v
from transforms.validation.registry import Definition, Scope, Section
from transforms.validation.report import Finding, Severity, ValidationReport


def _build_package():
    """``build_package`` of test_validate.py: the complete FGS package every validator test starts from."""
    path = Path(__file__).resolve().parent / "test_validate.py"
    spec = importlib.util.spec_from_file_location("arkiv_validate_registry_base", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.build_package


build_package = _build_package()

RULES_DIR = Path(registry.__file__).parent / "rules"
ID = re.compile(r"^(CSIP\d+|CSIPSTR\d+|SIP\d+|ARK\d+|DIP\d+|METS-XML|METS-XSD|SPEC-VERSION)$")


def test_every_rule_owns_ids_and_no_id_is_registered_twice():
    rules = registry.rules()
    assert len(rules) >= 10
    owned: dict[str, str] = {}
    for rule in rules:
        assert rule.ids, rule.name
        assert rule.hooks, f"rule {rule.name} has no check"
        for rid in rule.ids:
            assert rid not in owned, f"{rid} owned by {owned[rid]} and {rule.name}"
            owned[rid] = rule.name
    assert not set(owned) & set(registry.not_checkable_reasons())
    for reason in registry.not_checkable_reasons().values():
        assert reason.strip() and reason != "not checked"


@pytest.mark.parametrize("profile", v.PROFILES)
@pytest.mark.parametrize("version", v.SPEC_VERSIONS)
def test_every_listed_requirement_has_a_rule_or_a_reason(profile, version):
    reqs = v.list_requirements(profile, version)
    ids = [r.id for r in reqs]
    assert len(ids) == len(set(ids)) and len(ids) > 100
    reasons = registry.not_checkable_reasons()
    for r in reqs:
        rule = registry.owner(r.id)
        if r.checked:
            assert rule is not None and rule.applies(profile), r.id
        else:
            assert r.id in reasons, f"{r.id} ({profile} {version}) is neither checked nor declared not checkable"
            assert r.note == reasons[r.id]


def test_every_owned_id_is_a_requirement_of_a_profile_its_rule_applies_to():
    listed = {(p, r.id) for p in v.PROFILES for ver in v.SPEC_VERSIONS for r in v.list_requirements(p, ver)}
    for rule in registry.rules():
        profiles = rule.profiles or v.PROFILES
        for rid in rule.ids:
            assert any((p, rid) in listed for p in profiles), f"{rule.name} owns {rid}, which no profile lists"


def test_an_id_cannot_be_registered_twice():
    before = (len(registry.rules()), dict(registry.not_checkable_reasons()))
    with pytest.raises(ValueError, match="CSIP1 is registered twice"):
        registry.register("another-root-rule", ["CSIP1"], section=Section.METS_ROOT)
    with pytest.raises(ValueError, match="registered twice"):
        registry.not_checkable("CSIP1", "it is checked")
    with pytest.raises(ValueError, match="owns no requirement"):
        registry.register("empty", [], section=Section.METS_ROOT)
    assert (len(registry.rules()), registry.not_checkable_reasons()) == before


def _ids_reported_in(path: Path) -> dict[str, set[str]]:
    """Requirement IDs written as literals in a rules module, per top-level function."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out: dict[str, set[str]] = {}
    for node in tree.body:
        if isinstance(node, ast.FunctionDef):
            out[node.name] = {n.value for n in ast.walk(node)
                              if isinstance(n, ast.Constant) and isinstance(n.value, str) and ID.match(n.value)}
    return out


def test_each_module_reports_only_the_ids_of_its_own_rules():
    modules = sorted(p for p in RULES_DIR.glob("*.py") if p.name != "__init__.py")
    assert len(modules) >= 9
    for path in modules:
        name = path.stem
        owned = set().union(*(r.ids for r in registry.rules()
                              if any(h.fn.__module__.endswith(f".{name}") for h in r.hooks)))
        for fn, ids in _ids_reported_in(path).items():
            assert ids <= owned, f"{name}.{fn} reports {sorted(ids - owned)}, owned by no rule of {name}"


@pytest.mark.parametrize("profile", [None, "csip", "sip", "fgs", "dip"])
def test_validating_reports_no_id_outside_its_rule(tmp_path, caplog, profile):
    pkg = build_package(tmp_path)
    (pkg / "documentation" / "unlisted.txt").write_text("x", encoding="utf-8")  # CSIP58 or ARK2
    mets = pkg / "METS.xml"
    mets.write_text(mets.read_text(encoding="utf-8").replace('CHECKSUMTYPE="SHA-256"', 'CHECKSUMTYPE="MD5"', 1),
                    encoding="utf-8")
    with caplog.at_level(logging.ERROR, logger="transforms.validation"):
        report = v.validate_package(pkg, profile)
    assert report.findings and report.requirements_failed()
    assert not [r for r in caplog.records if "does not own" in r.getMessage()]
    if profile == "fgs":
        assert {"ARK1", "ARK2"} <= set(report.requirements_failed())
        assert "CSIP58" not in report.requirements_failed()  # ARK2 replaces it
    else:
        assert "ARK2" not in report.requirements_failed()


def test_the_checked_requirements_of_a_report_are_those_its_rules_own(tmp_path):
    report = v.validate_package(build_package(tmp_path), "fgs")
    assert report.valid, report.to_text()
    listed = {r.id for r in v.list_requirements("fgs", report.spec_version) if r.checked}
    assert set(report.checked) == listed
    assert {"ARK1", "ARK6", "CSIPSTR1", "SIP35"} <= set(report.checked) and "CSIPSTR3" not in report.checked


def test_severity_is_an_enum_that_prints_as_before():
    f = Finding("CSIP1", "WARNING", "m")
    assert f.severity is Severity.WARNING and f.severity == "WARNING"
    assert f.to_dict()["severity"] == "WARNING" and f"{f.severity:<8}|" == "WARNING |"
    assert Severity.for_level("MUST") is Severity.ERROR and Severity.for_level("MAY") is Severity.INFO
    report = ValidationReport("p", "csip", findings=[f, Finding("CSIP2", Severity.ERROR, "n")])
    assert not report.valid and report.to_dict()["counts"] == {"WARNING": 1, "ERROR": 1}
    with pytest.raises(ValueError):
        Finding("CSIP1", "FATAL", "m")


@pytest.fixture
def scratch_registry(monkeypatch):
    """A copy of the registry that a test may add rules to; the real one is restored after."""
    for name in ("_RULES", "_OWNER", "_NOT_CHECKABLE"):
        monkeypatch.setattr(registry, name, dict(getattr(registry, name)))
    for name in ("_DEFINITIONS", "_HOOKS"):
        monkeypatch.setattr(registry, name, list(getattr(registry, name)))
    registry._changed()
    registry._cached_hooks.cache_clear()
    yield registry
    registry._changed()
    registry._cached_hooks.cache_clear()


def test_a_new_rule_is_one_registration_listed_and_run(tmp_path, scratch_registry):
    fgs = frozenset({"fgs"})
    scratch_registry.define(Section.FGS, Definition("ARK99", "SHOULD", "A readme",
                                                    "documentation/readme.txt exists (test rule).", profiles=fgs))
    rule = scratch_registry.register("test-readme", ["ARK99"], section=Section.FGS, profiles=fgs)

    @rule.on(Scope.PACKAGE)
    def readme(ctx):
        if not ctx.pkg.is_file("documentation/readme.txt"):
            ctx.fail("ARK99", "no documentation/readme.txt", "documentation")

    listed = {r.id: r for r in v.list_requirements("fgs")}
    assert listed["ARK99"].checked and listed["ARK99"].title == "A readme"
    assert "ARK99" not in {r.id for r in v.list_requirements("sip")}
    pkg = build_package(tmp_path)
    assert v.validate_package(pkg, "fgs").valid
    (pkg / "documentation" / "readme.txt").unlink()
    report = v.validate_package(pkg, "fgs")
    [finding] = [f for f in report.findings if f.requirement == "ARK99"]
    assert finding.severity is Severity.WARNING  # from the level it was defined with
    assert "ARK99" in report.checked and "A readme" in report.to_text()
    assert "ARK99" not in v.validate_package(pkg, "sip").requirements_failed()
