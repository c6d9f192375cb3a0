"""The one CSIP writer: what it writes is a valid package (ours and the reference validator agree), the same
inputs give the same bytes, every checksum is the one computed while copying, and a failure leaves nothing.

Also the measure of "one home" for the software agent: its name is written in one module of transforms/.
"""

from __future__ import annotations

import ast
import datetime as dt
import hashlib
import io
import os
import tarfile
from pathlib import Path

import pytest
from lxml import etree
from reference_validator import real_findings

from transforms import SOFTWARE_NAME
from transforms.common.xmltools import NS_METS, NS_PREMIS
from transforms.packaging import agents, premis
from transforms.packaging.csip import PackageBuildError, PackageWriter, amend
from transforms.packaging.fgs import CSIP_PROFILE_URL, FGS_ERMS, FGS_TABULAR
from transforms.validation.validator import validate_package

PROJECT = Path(__file__).resolve().parents[2]
NOW = dt.datetime(2026, 3, 4, 5, 6, 7, tzinfo=dt.UTC)
NS = {"m": NS_METS, "p": NS_PREMIS, "xlink": "http://www.w3.org/1999/xlink"}
PDF = b"%PDF-1.4\n" + b"0" * 3000 + b"\n%%EOF\n"


def _write(dest: Path, form: str = "tar", *, objid: str = "uuid-0b6f1c52-3a4e-5f0e-9d1c-000000000001",
           decided_by: str = "Anna Arkivarie", big: Path | None = None):
    """A small DIP-like package: three data files (bytes, a path, chunks), documentation, PREMIS."""
    with PackageWriter(dest, objid, profile=FGS_TABULAR, package_type="AIP", created=NOW, form=form) as w:
        files = []
        sources = [("a.pdf", PDF, {}), ("b.txt", "åäö\n".encode(), {}),
                   ("c.pdf", iter([PDF[:100], PDF[100:]]), {"size": len(PDF)})]
        if big is not None:
            sources.append(("big.bin", big, {}))
        for i, (name, source, extra) in enumerate(sources, 1):
            arc = f"representations/rep1/data/{name}"
            ref = w.add(arc, source, file_id=f"file-{i}", mime="application/octet-stream", **extra)
            files.append((ref, premis.FileObject(arc, ref.sha256, ref.size, "application/octet-stream")))
        w.representation("rep1", files, label="rep1", agents=[agents.software()],
                         events=[premis.Event("ev-digest", "message digest calculation", NOW, "success",
                                              agents=agents.by_software())])
        decision = premis.Event("ev-decision", "deletion", NOW, "success", detail="approved list",
                                agents=(*agents.by_software(), agents.by_person(decided_by)))
        w.premis([decision], agents.agents_of([decision]), representations=["representations/rep1"])
        w.add("documentation/README.txt", b"read me\n", file_id="doc-readme", mime="text/plain", group="Documentation")
        return w.finish(label="Testpaket")


@pytest.mark.parametrize("form", ["tar", "folder"])
def test_a_written_package_is_valid_for_us_and_for_the_reference_validator(tmp_path, form):
    written = _write(tmp_path, form)
    assert written.path == tmp_path / (f"{written.package_id}.tar" if form == "tar" else written.package_id)
    assert sorted(p.name for p in tmp_path.iterdir()) == [written.path.name]  # no temporary name, no work folder
    report = validate_package(written.path, "csip")
    assert report.valid, [f"{f.requirement}: {f.message}" for f in report.findings if f.severity == "ERROR"]
    assert not real_findings([written.path])


def _members(path: Path) -> dict[str, bytes]:
    with tarfile.open(path) as tar:
        return {m.name.split("/", 1)[1]: tar.extractfile(m).read() for m in tar if m.isfile()}


def test_the_same_inputs_give_the_same_bytes_and_the_checksums_copied_ones(tmp_path):
    first, second = _write(tmp_path / "a"), _write(tmp_path / "b")
    assert first.path.read_bytes() == second.path.read_bytes()
    assert first.sha256 == hashlib.sha256(first.path.read_bytes()).hexdigest()
    assert first.size == first.path.stat().st_size
    members = _members(first.path)
    assert list(members)[-1] == "METS.xml"  # the root METS, which lists the others, comes last
    for mets_path in ("METS.xml", "representations/rep1/METS.xml"):
        mets = etree.fromstring(members[mets_path])
        base = mets_path.rsplit("METS.xml", 1)[0]
        listed = [(el.getparent().get("CHECKSUM"), el.get(f"{{{NS['xlink']}}}href"))
                  for el in mets.iterfind(".//m:file/m:FLocat", NS)]
        listed += [(el.get("CHECKSUM"), el.get(f"{{{NS['xlink']}}}href")) for el in mets.iterfind(".//m:mdRef", NS)]
        assert listed
        for digest, href in listed:
            assert hashlib.sha256(members[base + href]).hexdigest() == digest, href
    root = etree.fromstring(members["METS.xml"])
    assert root.get("PROFILE") == CSIP_PROFILE_URL
    assert [el.get("USE") for el in root.iterfind("m:fileSec/m:fileGrp", NS)] == \
        ["Documentation", "Schemas", "Representations/rep1"]
    schemas = {el.get(f"{{{NS['xlink']}}}href") for el in root.iterfind("m:fileSec/m:fileGrp[@USE='Schemas']//m:FLocat",
                                                                        NS)}
    assert schemas == {f"schemas/{n}" for n in ("DILCISExtensionMETS.xsd", "mets.xsd", "premis-v3-0.xsd",
                                                "xlink.xsd")}
    assert members["representations/rep1/data/c.pdf"] == PDF  # the chunks, in order


def test_a_human_decision_names_the_person_not_the_software(tmp_path):
    members = _members(_write(tmp_path, decided_by="Anna Arkivarie").path)
    doc = etree.fromstring(members["metadata/preservation/premis.xml"])
    links = {(el.findtext("p:linkingAgentIdentifierValue", namespaces=NS), el.findtext("p:linkingAgentRole",
                                                                                       namespaces=NS))
             for el in doc.iterfind("p:event/p:linkingAgentIdentifier", NS)}
    assert links == {(agents.SOFTWARE_ID, agents.EXECUTING_PROGRAM), ("person-Anna Arkivarie", agents.AUTHORIZER)}
    people = {el.findtext("p:agentName", namespaces=NS): el.findtext("p:agentType", namespaces=NS)
              for el in doc.iterfind("p:agent", NS)}
    assert people == {SOFTWARE_NAME: "software", "Anna Arkivarie": "person"}


def test_catalogue_events_become_premis_with_the_right_agent():
    by_software = agents.catalogue_event("e1", "capture", NOW, "success", "rows", agents.SOFTWARE_LABEL)
    by_person = agents.catalogue_event("e2", "decision", NOW, "success", "approved", "Bo Arkivarie")
    assert by_software.agents == ((agents.SOFTWARE_ID, agents.EXECUTING_PROGRAM),)
    assert by_person.agents == (("person-Bo Arkivarie", agents.AUTHORIZER),)
    assert agents.is_software(agents.software_label("reconcile"))
    listed = agents.agents_of([by_software, by_person], [premis.Agent("fido", "fido", "software")])
    assert [(a.identifier, a.type) for a in listed] == [("fido", "software"), (agents.SOFTWARE_ID, "software"),
                                                        ("person-Bo Arkivarie", "person")]


class _Growing(io.RawIOBase):
    """A file that has more bytes than it said it had (it grew while it was copied)."""

    def __init__(self, n: int):
        self.left = n

    def readable(self) -> bool:
        return True

    def readinto(self, view) -> int:
        n = min(len(view), self.left)
        view[:n] = b"x" * n
        self.left -= n
        return n


@pytest.mark.parametrize("form", ["tar", "folder"])
def test_a_file_that_changes_while_copied_fails_the_package_and_leaves_nothing(tmp_path, form):
    with pytest.raises(PackageBuildError, match="changed while it was being copied"), \
            PackageWriter(tmp_path, "uuid-x", profile=FGS_ERMS, package_type="SIP", created=NOW, form=form) as w:
        w.add("representations/rep1/data/a.bin", _Growing(5000), file_id="file-1", mime="x/y", size=4000)
    assert list(tmp_path.iterdir()) == []


def test_an_invalid_document_fails_the_package_and_leaves_nothing(tmp_path):
    with pytest.raises(PackageBuildError, match=r"premis\.xml of package uuid-x does not validate"), \
            PackageWriter(tmp_path, "uuid-x", profile=FGS_ERMS, package_type="SIP", created=NOW) as w:
        w.premis([premis.Event("not an id?", "creation", NOW, "not an outcome")], [])
        with w.spool("metadata/descriptive/broken.xml", namespace=NS_PREMIS, file_id="dmd-broken") as sp:
            sp.file.write(b"<premis:premis xmlns:premis='" + NS_PREMIS.encode() + b"'><nonsense/></premis:premis>")
    assert list(tmp_path.iterdir()) == []


def test_without_finish_nothing_is_left_either(tmp_path):
    with PackageWriter(tmp_path, "uuid-x", profile=FGS_ERMS, package_type="SIP", created=NOW) as w:
        w.add("documentation/a.txt", b"a", file_id="doc-a", mime="text/plain", group="Documentation")
    assert list(tmp_path.iterdir()) == []


def test_a_path_outside_the_folder_package_is_refused(tmp_path):
    with pytest.raises(PackageBuildError, match="not a path inside"), \
            PackageWriter(tmp_path / "out", "uuid-x", profile=FGS_ERMS, package_type="SIP", created=NOW,
                          form="folder") as w:
        w.add("../escape.txt", b"a", file_id="doc-a", mime="text/plain")
    assert not (tmp_path / "out" / "escape.txt").exists() and not (tmp_path / "escape.txt").exists()


def test_a_large_file_is_copied_in_chunks_and_hashed_once(tmp_path):
    big = tmp_path / "big.bin"
    with open(big, "wb") as fh:
        for i in range(5):
            fh.write(bytes([i]) * (1 << 20) + b"x")
    written = _write(tmp_path / "out", big=big)
    members = _members(written.path)
    assert members["representations/rep1/data/big.bin"] == big.read_bytes()
    rep = etree.fromstring(members["representations/rep1/METS.xml"])
    entry = rep.find(".//m:file[@ID='file-4']", NS)
    assert entry.get("CHECKSUM") == hashlib.sha256(big.read_bytes()).hexdigest()
    assert entry.get("SIZE") == str(big.stat().st_size)


def test_amend_adds_provenance_and_declares_the_package(tmp_path):
    written = _write(tmp_path, "folder")
    history = io.BytesIO()
    premis.write_premis(history, [], [premis.Event("ev-transfer", "transfer", NOW, "success",
                                                   agents=agents.by_software())], [agents.software()])
    amend(written.path, package_type="AIP", created=NOW + dt.timedelta(days=1),
          metadata=[("metadata/preservation/premis-history.xml", history.getvalue(), "digiprov-history", "PREMIS",
                     None)], schemas=["arkivflode-receipt-1.xsd"])
    report = validate_package(written.path, "csip")
    assert report.valid, [f"{f.requirement}: {f.message}" for f in report.findings if f.severity == "ERROR"]
    root = etree.parse(str(written.path / "METS.xml")).getroot()
    assert root.find("m:metsHdr", NS).get("LASTMODDATE") == "2026-03-05T05:06:07+00:00"
    assert root.find(".//m:digiprovMD[@ID='digiprov-history']/m:mdRef", NS).get("CHECKSUM") == \
        hashlib.sha256(history.getvalue()).hexdigest()
    assert root.find(".//m:FLocat[@xlink:href='schemas/arkivflode-receipt-1.xsd']", NS) is not None
    assert not [p for p in written.path.rglob(".*")]  # every file replaced under a temporary name, renamed


# --- the software agent, named once ---------------------------------------------------------------------------

def _literals(path: Path) -> list[tuple[int, str]]:
    """The string literals of a module (f-string parts too), without its docstrings."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
                  and node.body and isinstance(node.body[0], ast.Expr)
                  and isinstance(node.body[0].value, ast.Constant)}
    return [(node.lineno, node.value) for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings]


def _naming_the_software(paths) -> dict[str, list[int]]:
    """Modules with a literal naming the software: its name, its agent identifier or the PREMIS role written out."""
    found: dict[str, list[int]] = {}
    for path in paths:
        lines = [line for line, text in _literals(path)
                 if SOFTWARE_NAME in text or text == agents.SOFTWARE_ID or text == agents.EXECUTING_PROGRAM]
        if lines:
            found[path.relative_to(PROJECT).as_posix()] = lines
    return found


#: the package writers: only agents.py names who acts (the software's own name is in transforms/__init__.py)
WRITERS = [*sorted((PROJECT / "transforms" / "packaging").glob("*.py")), PROJECT / "transforms/access/dip.py",
           PROJECT / "transforms/archive/certificate.py", PROJECT / "transforms/archive/evidence.py"]


def test_the_package_writers_name_the_software_only_through_the_profile():
    found = _naming_the_software(WRITERS)
    assert sorted(found) == ["transforms/packaging/agents.py"], found


def test_renaming_the_software_touches_one_module_of_transforms():
    names = {path: [line for line, text in _literals(path) if SOFTWARE_NAME in text]
             for path in sorted((PROJECT / "transforms").rglob("*.py"))}
    assert [p.relative_to(PROJECT).as_posix() for p, lines in names.items() if lines] == \
        ["transforms/__init__.py"]


def test_the_writer_files_are_not_left_behind_by_a_crash_between_renames(tmp_path, monkeypatch):
    """The package gets its name by one rename after everything is fsynced; a failure before it leaves nothing."""
    real = os.replace

    def failing(src, dst):
        if str(dst).endswith(".tar"):
            raise OSError(28, "No space left on device")
        return real(src, dst)

    monkeypatch.setattr(os, "replace", failing)
    with pytest.raises(OSError, match="No space"):
        _write(tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_a_sip_lists_the_person_a_batch_event_names(staged, tmp_path):
    """A deviation an archivist approved reaches the SIP's PREMIS with the archivist as its agent."""
    from transforms.config.systems import load_system
    from transforms.packaging.sip import build_packages

    lex = load_system(PROJECT / "dags" / "systems" / "lex.yaml")
    approved = agents.catalogue_event("catalogue-event-7", "validation", NOW, "warning",
                                      "deviation approved: 2 documents without a file", "Bo Arkivarie")
    software_event = agents.catalogue_event("catalogue-event-8", "capture", NOW, "success", "rows",
                                            agents.SOFTWARE_LABEL)
    rc = min(staged.partitions)
    built = build_packages(lex, staged, rc, tmp_path, events=[approved, software_event],
                           policy=lex.formats.without_conversion(), now=NOW)
    members = _members(Path(built[0].path))
    doc = etree.fromstring(members["metadata/preservation/premis.xml"])
    event = next(el for el in doc.iterfind("p:event", NS)
                 if el.findtext("p:eventIdentifier/p:eventIdentifierValue", namespaces=NS) == "catalogue-event-7")
    assert [el.findtext("p:linkingAgentIdentifierValue", namespaces=NS)
            for el in event.iterfind("p:linkingAgentIdentifier", NS)] == ["person-Bo Arkivarie"]
    people = [el.findtext("p:agentName", namespaces=NS) for el in doc.iterfind("p:agent", NS)
              if el.findtext("p:agentType", namespaces=NS) == "person"]
    assert people == ["Bo Arkivarie"]
    assert validate_package(built[0].path, "fgs").valid
