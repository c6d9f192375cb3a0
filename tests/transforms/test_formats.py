"""Format identification (PRONOM via fido, in-process) and the format policy, on real files."""

from __future__ import annotations

import datetime as dt
import tarfile
from pathlib import Path

import pytest
import yaml
from format_corpus import make_corpus

from transforms.common.errors import ConfigError
from transforms.config.systems import load_system
from transforms.formats.identification import (
    UNIDENTIFIED,
    Identifier,
    default_policy,
    load_policy,
    pdf_facts,
    policy_for,
)
from transforms.intake.database import extract_database
from transforms.intake.prepared import take_in
from transforms.packaging.sip import build_packages

SYSTEMS = Path(__file__).resolve().parents[2] / "dags" / "systems"
LEX = load_system(SYSTEMS / "lex.yaml")

#: what each corpus file must be identified as, and how
EXPECTED = {
    "pdf": ("fmt/18", "signature"), "pdfa": ("fmt/477", "signature"), "docx": ("fmt/412", "container"),
    "xlsx": ("fmt/214", "container"), "doc": ("fmt/40", "signature"), "jpeg": ("fmt/43", "signature"),
    "tiff": ("fmt/353", "signature"), "png": ("fmt/11", "signature"), "txt": ("x-fmt/111", "extension"),
    "csv": ("x-fmt/18", "extension"), "xml": ("fmt/101", "signature"), "encrypted": ("fmt/20", "signature"),
    "broken_docx": ("fmt/412", "container"),
    # cut in the middle of its zip: no container signature matches, only the name's extension
    "corrupt": ("fmt/412", "extension"), "unknown": (UNIDENTIFIED, "none"),
}
#: the default policy's verdict on each
VERDICT = {"pdf": "accept", "pdfa": "accept", "docx": "convert", "xlsx": "convert", "doc": "convert",
           "jpeg": "accept", "tiff": "accept", "png": "accept", "txt": "accept", "csv": "accept", "xml": "accept",
           "encrypted": "reject", "broken_docx": "convert", "corrupt": "reject", "unknown": "reject"}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict[str, Path]:
    return make_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="module")
def identified(corpus):
    return Identifier().identify_all(corpus.values())


def test_every_file_of_the_corpus_gets_its_puid(corpus, identified):
    got = {key: (identified[str(p)].puid, identified[str(p)].method) for key, p in corpus.items()}
    assert got == EXPECTED
    for key, p in corpus.items():
        ident = identified[str(p)]
        assert ident.tool.startswith("fido 1.") and "PRONOM v" in ident.tool
        if ident.identified:
            assert ident.name, key


def test_pdf_facts_tell_pdfa_and_encryption(corpus, identified):
    assert pdf_facts(corpus["pdfa"]) == (False, "2B")
    assert identified[str(corpus["pdfa"])].pdfa == "2B"
    assert pdf_facts(corpus["pdf"]) == (False, None)
    encrypted, _ = pdf_facts(corpus["encrypted"])
    assert encrypted and identified[str(corpus["encrypted"])].encrypted


@pytest.mark.parametrize("cut", [0, 3, 7, 12])
def test_pdf_facts_find_markers_cut_by_the_read_chunks(tmp_path, cut):
    """The markers are found where a 1 MiB read ends inside them, in a large file (read in
    chunks) and in one passed whole; a file without them says so."""
    xmp = (b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF><rdf:Description pdfaid:part="2" '
           b'pdfaid:conformance="B"/></rdf:RDF></x:xmpmeta>')
    for marker, expected in ((b"/Encrypt 5 0 R", (True, None)), (xmp, (False, "2B")), (b"/Encryp", (False, None))):
        data = b"%PDF-1.7\n" + b"\x00" * ((1 << 20) - 9 - cut) + marker + b"\n%%EOF\n" + b"\x01" * (1 << 20)
        path = tmp_path / "big.pdf"
        path.write_bytes(data)
        assert pdf_facts(path) == expected
        assert pdf_facts(path, data) == expected


def test_default_policy_verdicts(corpus, identified):
    policy = default_policy()
    verdicts = {key: policy.decide(identified[str(p)]) for key, p in corpus.items()}
    assert {k: d.action for k, d in verdicts.items()} == VERDICT
    assert verdicts["docx"].target == "pdfa-2b"
    assert verdicts["pdf"].warn and not verdicts["pdfa"].warn  # plain PDF is flagged for the archivist
    assert "encrypted" in verdicts["encrypted"].reason
    assert "extension" in verdicts["corrupt"].reason
    assert "not identified" in verdicts["unknown"].reason


def test_default_policy_cites_its_sources():
    text = (Path(__file__).resolve().parents[2] / "transforms" / "policies" / "format-policy.yaml").read_text()
    assert "RA-FS 2009:2" in text and "E-ARK" in text and "PRONOM" in text


def test_system_overrides_change_single_formats(tmp_path, identified, corpus):
    strict = policy_for({"name": "strict", "formats": {"fmt/18": {"action": "reject", "note": "PDF/A only"}},
                         "unidentified": {"action": "accept", "warn": True}})
    pdf = identified[str(corpus["pdf"])]
    assert strict.decide(pdf).action == "reject"
    assert strict.decide(identified[str(corpus["unknown"])]).action == "accept"
    assert strict.decide(identified[str(corpus["docx"])]).action == "convert"  # the rest is the default's
    # the same override through a system's YAML
    data = yaml.safe_load((SYSTEMS / "lex.yaml").read_text(encoding="utf-8"))
    data["format_policy"] = {"formats": {"fmt/18": "reject"}}
    (tmp_path / "lex.yaml").write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    system = load_system(tmp_path / "lex.yaml")
    assert system.formats.decide(pdf).action == "reject"
    assert LEX.formats.decide(pdf).action == "accept"


@pytest.mark.parametrize("override, message", [
    ({"formats": {"fmt/18": "keep"}}, "is not one of"),
    ({"formats": {"fmt/412": {"action": "convert", "target": "tiff"}}}, "target"),
    ({"unidentified": 3}, "expected a mapping"),
])
def test_bad_overrides_are_config_errors(tmp_path, override, message):
    data = yaml.safe_load((SYSTEMS / "lex.yaml").read_text(encoding="utf-8"))
    data["format_policy"] = override
    (tmp_path / "lex.yaml").write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    with pytest.raises(ConfigError, match=message) as err:
        load_system(tmp_path / "lex.yaml")
    assert "format_policy" in str(err.value)


def test_a_policy_file_can_replace_the_default(tmp_path):
    (tmp_path / "p.yaml").write_text("name: only-text\nformats:\n"
                                     "  x-fmt/111: {action: accept, trust_extension: true}\n")
    policy = load_policy(tmp_path / "p.yaml")
    assert policy.name == "only-text" and set(policy.rules) == {"x-fmt/111"}
    assert policy.unlisted.action == "reject"


def test_prepared_delivery_files_are_identified_and_rejected_formats_reported(lex_source, tmp_path):
    staged = extract_database(LEX, lex_source["url"], dt.datetime(2025, 1, 1), dt.datetime(2026, 1, 1),
                              tmp_path / "staging", env={"ARKIV_LEX_FILES": str(lex_source["files"])})
    rc = min(staged.partitions, key=lambda k: staged.partitions[k].rows["cases"])
    built = build_packages(LEX, staged, rc, tmp_path / "build")[0]
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "delivery.tar").write_bytes(Path(built.path).read_bytes())
    with tarfile.open(built.path) as tar:
        pdfs = [m.name for m in tar.getmembers() if "/representations/rep1/data/" in m.name and m.name.endswith(".pdf")]
    assert pdfs, "the Lex sample should carry PDF documents"
    strict = policy_for({"formats": {"fmt/18": {"action": "reject", "note": "PDF/A only here"}}})
    [intake] = take_in(inbox, tmp_path / "out", tmp_path / "quarantine", policy=strict)
    assert intake.outcome == "valid"  # the package is taken in as delivered …
    data_files = intake.formats
    assert len(data_files) == len(built.formats)  # … every data file identified …
    assert all(f["puid"] for f in data_files)
    rejected = {f["path"] for f in data_files if f["outcome"] == "policy: reject"}
    assert rejected and all(p.endswith(".pdf") for p in rejected)
    assert len(intake.format_findings) == len(rejected)  # … and each rejected one reported
    originals = [f for f in data_files if f["representation"] == "rep1-original"]
    assert originals and all(f["outcome"] == "original" for f in originals)  # kept originals are not judged
    assert all("PDF/A only here" in f for f in intake.format_findings)


def test_a_package_whose_every_document_is_held_back_still_builds_and_validates(lex_source, tmp_path):
    """Nothing left for the preservation representation: its PREMIS keeps its events on the
    representation object, the originals stay beside it, and the package is valid."""
    from transforms.validation.validator import validate_package

    staged = extract_database(LEX, lex_source["url"], dt.datetime(2025, 1, 1), dt.datetime(2026, 1, 1),
                              tmp_path / "staging", env={"ARKIV_LEX_FILES": str(lex_source["files"])})
    rc = min(staged.partitions, key=lambda k: staged.partitions[k].rows["cases"])
    reject_all = policy_for({"formats": {puid: {"action": "reject", "note": "test: nothing accepted"}
                                         for puid in ("fmt/18", "fmt/19", "fmt/20", "fmt/276", "fmt/412", "fmt/43",
                                                      "fmt/44", "x-fmt/111", "fmt/101", "fmt/40", "fmt/214")}})
    built = build_packages(LEX, staged, rc, tmp_path / "build", policy=reject_all,
                           quarantine_dir=tmp_path / "held")[0]
    with tarfile.open(built.path) as tar:
        names = [m.name for m in tar.getmembers()]
    assert not [n for n in names if "/representations/rep1/data/" in n]
    assert [n for n in names if "/representations/rep1-original/data/" in n]
    report = validate_package(Path(built.path))
    assert report.valid, report.errors[:5]
