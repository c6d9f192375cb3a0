"""The preservation copy (PDF/A) beside the original: listed, downloadable, authorised and delivered as one.

Lex's format policy converts DOCX to PDF/A, so the archived Lex of ``lex_archive`` holds both copies of
each DOCX document: the original in ``rep1-original`` and the PDF/A in ``rep1``.
"""

from __future__ import annotations

import hashlib
import tarfile
from urllib.parse import quote

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from transforms.access import index
from transforms.access.api import create_app
from transforms.catalogue import AccessDocument
from transforms.validation.validator import validate_package


@pytest.fixture(scope="module")
def client(lex_archive):
    return TestClient(create_app(lex_archive["settings"], archive=lex_archive["archive"]))


def _h(lex_archive, who: str, purpose: str = "") -> dict:
    h = {"Authorization": f"Bearer {lex_archive['tokens'][who]}"}
    if purpose:
        h["X-Purpose"] = quote(purpose)
    return h


def _converted_cases(lex_archive) -> list[str]:
    """Public cases (ids) with at least one DOCX document and no secret document."""
    out = []
    for cid, case in sorted(lex_archive["cases"].items(), key=lambda kv: int(kv[0])):
        docs = case.get("documents", [])
        if not case["secrecy"] and docs and not any(d["secrecy"] for d in docs) and \
                any(d["file_path"].endswith(".docx") for d in docs):
            out.append(cid)
    return out


@pytest.fixture(scope="module")
def converted(lex_archive):
    arc = lex_archive["archive"]
    with arc.cat.engine.connect() as c:
        archived = {r[0] for r in c.execute(sa.text("SELECT source_id FROM records WHERE system = 'lex'"))}
    cids = [c for c in _converted_cases(lex_archive) if c in archived]
    assert cids, "the generated Lex has no archived public case with a DOCX document"
    return lex_archive["cases"][cids[0]]


def test_record_lists_both_copies_and_defaults_to_the_preservation_copy(client, lex_archive, converted):
    h = _h(lex_archive, "lex", "Lex: bevarandeexemplar")
    rec = client.get(f"/api/v1/records/lex/{converted['case_id']}", headers=h).json()
    docx = [d for d in converted["documents"] if d["file_path"].endswith(".docx")]
    for src in docx:
        doc = next(d for d in rec["documents"] if d["document_id"] == str(src["document_id"]))
        copies = {c["copy"]: c for c in doc["copies"]}
        assert list(copies) == ["preservation", "original"] and doc["default_copy"] == "preservation"
        pres, orig = copies["preservation"], copies["original"]
        assert pres["mimetype"] == "application/pdf" and pres["puid"] and pres["puid"].startswith("fmt/")
        assert "PDF/A" in (pres["format_name"] or "") or pres["puid"] in {"fmt/95", "fmt/354", "fmt/476",
                                                                           "fmt/477", "fmt/478", "fmt/479",
                                                                           "fmt/480", "fmt/481"}
        assert orig["puid"] == "fmt/412" and orig["mimetype"].endswith("wordprocessingml.document")
        source = (lex_archive["files"] / src["file_path"]).read_bytes()
        assert orig["sha256"] == hashlib.sha256(source).hexdigest() and orig["size"] == len(source)
        for c in (pres, orig):
            got = client.get(c["content"], headers=h)
            assert got.status_code == 200, got.text
            assert hashlib.sha256(got.content).hexdigest() == c["sha256"] and len(got.content) == c["size"]
            assert got.headers["x-checksum-sha256"] == c["sha256"]
        assert client.get(c["content"].replace("copy=original", "copy=preservation"), headers=h).content \
            .startswith(b"%PDF")
        got = client.get(orig["content"], headers=h)
        assert got.content == source
        default = client.get(doc["content"], headers=h)
        assert default.content.startswith(b"%PDF") and hashlib.sha256(default.content).hexdigest() == pres["sha256"]
        assert default.headers["content-type"] == "application/pdf"
        assert doc["sha256"] == pres["sha256"] and doc["name"].endswith(".pdf")
    # a document kept as delivered has only its original, which is also the default
    kept = [d for d in rec["documents"] if len(d["copies"]) == 1]
    for doc in kept:
        assert doc["default_copy"] == "original" and doc["copies"][0]["copy"] == "original"
        r = client.get(doc["content"] + "?copy=preservation", headers=h)
        assert r.status_code == 404
    # the log names the copy read
    with lex_archive["archive"].cat.engine.connect() as c:
        targets = [t for (t,) in c.execute(sa.text("SELECT target FROM access_log WHERE action = 'document' "
                                                   "AND actor = 'lex-client' AND outcome = 'granted'"))]
    d0 = str(docx[0]["document_id"])
    base = f"lex/{converted['case_id']}/documents/{d0}"
    assert f"{base}?copy=preservation" in targets and f"{base}?copy=original" in targets


def test_an_unknown_copy_is_refused(client, lex_archive, converted):
    doc = converted["documents"][0]["document_id"]
    r = client.get(f"/api/v1/records/lex/{converted['case_id']}/documents/{doc}?copy=../etc",
                   headers=_h(lex_archive, "lex"))
    assert r.status_code == 422 and "../etc" not in r.text


def test_a_secret_cases_copies_are_both_withheld(client, lex_archive):
    arc = lex_archive["archive"]
    secret = lex_archive["pick"]["secret"]
    e = index.find_entry(arc.cat, "lex", str(secret["case_id"]))
    originals, preserved = index.copies_of(arc.cat, e.id)
    docx = [d for d in originals if d.document_id in preserved]
    if not docx:
        pytest.skip("the secret case of this generated Lex has no converted document")
    for who in ("researcher", "lex"):
        h = _h(lex_archive, who)
        for d in docx:
            for copy in ("preservation", "original", None):
                url = f"/api/v1/records/lex/{secret['case_id']}/documents/{d.document_id}"
                r = client.get(url + (f"?copy={copy}" if copy else ""), headers=h)
                assert r.status_code == 403 and r.json()["classified"] is True
    h = _h(lex_archive, "lex_cleared")
    for d in docx:
        r = client.get(f"/api/v1/records/lex/{secret['case_id']}/documents/{d.document_id}", headers=h)
        assert r.status_code == 200 and r.content.startswith(b"%PDF")


def test_the_preservation_copy_belongs_to_the_record_of_its_original(lex_archive, converted):
    """A public case whose metadata points at another case's PDF/A may not hand it out: the PDF/A is owned by
    whoever owns the original it was made from."""
    arc = lex_archive["archive"]
    secret = lex_archive["pick"]["secret"]
    se = index.find_entry(arc.cat, "lex", str(secret["case_id"]))
    _, spres = index.copies_of(arc.cat, se.id)
    if not spres:
        pytest.skip("the secret case of this generated Lex has no converted document")
    target = next(iter(spres.values()))
    with arc.cat.engine.connect() as c:
        pe = next(index.find_entry(arc.cat, "lex", str(i)) for (i,) in c.execute(sa.text(
            "SELECT source_id FROM access_entries WHERE package_id = :p AND secret = :f"),
            {"p": se.package_id, "f": False}))
    owners = index.file_owners(arc.cat, se.package_id, target.path)
    assert str(secret["case_id"]) in {o.source_id for o, _ in owners}
    # claimed through the original's document row too (its secrecy and its record), not only by the folder
    originals, _ = index.copies_of(arc.cat, se.id)
    original = next(d for d in originals if d.document_id == target.document_id)
    assert any(d is not None and d.path == original.path for _, d in owners)
    planted = AccessDocument(entry_id=pe.id, document_id="planted", number=99, title="x", path=target.path,
                             name="x.pdf", mimetype="application/pdf", size=target.size, sha256=target.sha256,
                             tar_offset=target.tar_offset, secret=False)
    from transforms.access.auth import authenticate

    who = authenticate(arc.cat, lex_archive["tokens"]["lex"])
    assert arc.file_allowed(who, pe, planted) is False


def test_the_dip_holds_both_copies(client, lex_archive, converted, tmp_path):
    h = _h(lex_archive, "researcher")
    rec = client.get(f"/api/v1/records/lex/{converted['case_id']}", headers=h).json()
    r = client.post("/api/v1/exports", headers=h,
                    json={"records": [f"lex/{converted['case_id']}"], "purpose": "Begäran KS 2026/0043"})
    assert r.status_code == 200, r.text
    dip = tmp_path / "dip.tar"
    dip.write_bytes(r.content)
    report = validate_package(dip, "dip")
    assert report.valid, [f.message for f in report.findings if f.severity == "ERROR"][:5]
    with tarfile.open(dip) as tar:
        data = {m.name.split("/representations/rep1/data/", 1)[1]: hashlib.sha256(tar.extractfile(m).read())
                .hexdigest() for m in tar.getmembers() if "/representations/rep1/data/" in m.name and m.isfile()}
        root = tar.getnames()[0].split("/")[0]
        premis = tar.extractfile(f"{root}/representations/rep1/metadata/preservation/premis.xml").read().decode()
    wanted = {c["sha256"] for d in rec["documents"] for c in d["copies"]}
    assert set(data.values()) == wanted and len(data) == len(wanted)
    assert any(n.endswith(".pdf") for n in data) and any(n.endswith(".docx") for n in data)
    assert "fmt/412" in premis and "<premis:relationshipType>derivation</premis:relationshipType>" in premis
