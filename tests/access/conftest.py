"""An archived Lex (real packages in a real mellanarkiv and catalogue) for the access tests."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from transforms.access.auth import add_credential
from transforms.access.service import Archive
from transforms.cli import main
from transforms.config.settings import Settings


def archive_lex(home, lex_source, catalogue_url: str | None = None) -> Settings:
    """Run the Lex chain for 2025 into ``home`` (optionally with another catalogue) and index it."""
    env = {"ARKIV_HOME": str(home), "ARKIV_LEX_FILES": str(lex_source["files"]),
           "ARKIV_CONN_LEX_DB": lex_source["url"]}
    if catalogue_url:
        env["ARKIV_CATALOGUE_URL"] = catalogue_url
    with pytest.MonkeyPatch.context() as mp:
        for k, v in env.items():
            mp.setenv(k, v)
        if not catalogue_url:
            mp.delenv("ARKIV_CATALOGUE_URL", raising=False)
        assert main(["run", "lex", "--start", "2025-01-01", "--end", "2026-01-01"]) == 0
        settings = Settings.from_env().ensure()
    return settings


def source_cases(lex_source) -> dict:
    """What the source says, to check the index against: cases, parties, documents (by case id)."""
    eng = sa.create_engine(lex_source["url"])
    with eng.connect() as c:
        cases = {str(r.case_id): r._asdict() for r in c.execute(sa.text("SELECT * FROM cases"))}
        for r in c.execute(sa.text("SELECT * FROM parties ORDER BY party_id")):
            cases[str(r.case_id)].setdefault("parties", []).append(r._asdict())
        for r in c.execute(sa.text("SELECT * FROM documents ORDER BY document_id")):
            cases[str(r.case_id)].setdefault("documents", []).append(r._asdict())
    eng.dispose()
    return cases


def pick(archive: Archive, cases: dict) -> dict:
    """Cases of each kind among the archived ones: public with a person party, secret, public with a secret doc."""
    with archive.cat.engine.connect() as c:
        archived = {r[0] for r in c.execute(sa.text("SELECT source_id FROM records WHERE system = 'lex'"))}
    out = {}
    for cid in sorted(archived, key=int):
        case = cases[cid]
        docs, parties = case.get("documents", []), case.get("parties", [])
        if case["secrecy"]:
            out.setdefault("secret", case)
        elif any(p["personnummer"] for p in parties) and docs and not any(d["secrecy"] for d in docs):
            out.setdefault("public", case)
        elif any(d["secrecy"] for d in docs):
            out.setdefault("secret_doc", case)
    assert {"secret", "public", "secret_doc"} <= set(out), "the generated Lex lacks a kind of case the tests need"
    return out


@pytest.fixture(scope="module")
def archive_helpers():
    """The helpers above, for test modules (the tests folder is not a package)."""
    return {"archive_lex": archive_lex, "source_cases": source_cases, "pick": pick}


@pytest.fixture(scope="module")
def lex_archive(tmp_path_factory, lex_source):
    """An archived and indexed Lex on the embedded SQLite catalogue, with API credentials."""
    settings = archive_lex(tmp_path_factory.mktemp("access") / "var", lex_source)
    arc = Archive(settings)
    arc.sync()  # the pipeline indexed each package as it was recorded; sync finds nothing missed
    with arc.cat.engine.connect() as c:
        assert c.execute(sa.text("SELECT count(*) FROM access_entries")).scalar() >= 1
    tokens = {
        "archivist": add_credential(arc.cat, "anna-arkivarie", "archivist", by="test"),
        "lex": add_credential(arc.cat, "lex-client", "client", system="lex", by="test"),
        "lex_cleared": add_credential(arc.cat, "lex-cleared", "client", system="lex", cleared=True, by="test"),
        "viva": add_credential(arc.cat, "viva-client", "client", system="viva", by="test"),
        "researcher": add_credential(arc.cat, "rita-forskare", "researcher", by="test"),
        "owner": add_credential(arc.cat, "lex-owner", "system_owner", system="lex", by="test"),
    }
    cases = source_cases(lex_source)
    return {"settings": settings, "archive": arc, "files": lex_source["files"], "tokens": tokens, "cases": cases,
            "pick": pick(arc, cases)}
