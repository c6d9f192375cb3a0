"""``arkiv drill``: a failed quality gate end to end, in a home of its own, told step by step.

A Lex with planted defects (a duplicate diarienummer, a malformed one, a closing date before
the registration date, a document registered without its file, an invalid personnummer) is
extracted; the quality gate fails and opens a quarantine case; a named archivist approves it
with a deviation (scripted, as `arkiv quarantine approve` would); the same run resumes, as the
DAG's wait for a decision does, and archives the batch; the deviation is found in the stored
package's PREMIS. Every step is printed in Swedish and English, and the drill ends with where
to look. It never touches the demo's own ``var/``: its home is ``--home`` or a new folder under
``var/drill``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path

from transforms.common.errors import ContentError, StateError
from transforms.config.settings import PROJECT_ROOT, Settings

DEFAULT_ARCHIVIST = "Anna Arkivarie (övning / drill)"
JUSTIFICATION = ("Övning: kända fel i Lex godkänns med avvikelse för att visa flödet / drill: known defects "
                 "approved with a deviation to show the flow")
INTERVAL = ("2025-01-01", "2026-01-01")


@contextlib.contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    """The drill's own ARKIV_HOME and Lex files for the pipeline, restored afterwards."""
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def new_home() -> Path:
    """A fresh folder under var/drill for one drill."""
    root = PROJECT_ROOT / "var" / "drill"
    root.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    home = root / f"drill-{stamp}"
    n = 1
    while home.exists():
        n += 1
        home = root / f"drill-{stamp}-{n}"
    return home


def run(home: Path, *, archivist: str = DEFAULT_ARCHIVIST, size: int = 30,
        say: Callable[[str], None] = print) -> dict:
    """Run the drill in ``home`` (created; must not hold an earlier catalogue) and return what it made."""
    from demo import lex
    from transforms import pipeline
    from transforms.chain import CHAIN
    from transforms.quality import quarantine as review

    home = home.resolve()
    if (home / "catalogue").exists():
        raise StateError(f"{home} already holds a catalogue: a drill needs a home of its own (give a new --home)")
    source = home / "drill-source"
    source.mkdir(parents=True, exist_ok=True)
    url = f"sqlite:///{source / 'lex.sqlite'}"
    say(f"Övningens hem / The drill's home: ARKIV_HOME={home}")
    lex.generate(url, source / "files", cases=size, seed=7, year=2025, bad=1)
    say("1. Ett parti med fel / A bad batch: Lex (diarium) 2025 med inplanterade fel — dubblerat och felformat "
        "diarienummer, avslutsdatum före registreringsdatum, ett dokument utan fil, ett ogiltigt personnummer / "
        "with planted defects: a duplicate and a malformed diarienummer, a closing date before the registration "
        "date, a document without its file, an invalid personnummer.")
    with _environment({"ARKIV_HOME": str(home), "ARKIV_LEX_FILES": str(source / "files")}):
        settings = Settings.from_env().ensure()
        batch = pipeline.extract(settings, "lex", *INTERVAL, url)
        say("   Uttaget / Extracted: " + ", ".join(f"{v} {k}" for k, v in batch["rows"].items()))
        try:
            pipeline.check_quality(settings, "lex", batch["manifest"])
        except ContentError:
            pass
        else:
            raise StateError("the drill's batch passed its quality gate: the planted defects were not caught")
        state = pipeline.await_decision(settings, "lex", batch["manifest"], batch["batch"])
        if state.get("state") != "waiting":
            raise StateError(f"the drill expected a batch waiting for a decision, found {state.get('state')}")
        cat = pipeline.catalogue(settings)
        (case,) = [c for c in review.cases(cat, "open") if c.kind == "quality"]
        reasons = len(json.loads(case.reasons or "[]"))
        say(f"2. Kvalitetskontrollen underkände partiet; inget paketerades. Karantänärende {case.id} ({reasons} "
            f"orsaker) / The quality gate failed; nothing was packaged. Quarantine case {case.id} ({reasons} "
            "reasons).")
        page = Path(case.path) / "rapport.html"
        say(f"   Rapport / Report: {page}")

        review.decide(cat, case.id, approve=True, by=archivist, justification=JUSTIFICATION)
        say(f"3. Beslut: {archivist} godkände med avvikelse och motivering / Decision: {archivist} approved with a "
            f"deviation and a justification (as `arkiv quarantine approve {case.id} --by NAME --reason TEXT`).")

        state = pipeline.await_decision(settings, "lex", batch["manifest"], batch["batch"])
        if state.get("state") != "approved":
            raise StateError(f"the drill expected the approved batch to resume, found {state.get('state')}")
        # the rest of the chain, from where the DAG's wait for the decision ends
        rest = CHAIN[[s.name for s in CHAIN].index("await_decision") + 1:]
        done = pipeline.run_steps(settings, "lex", {**batch, "decision": state}, rest)
        packages = cat.packages("lex")
        say(f"4. Körningen återupptogs och arkiverade partiet / The run resumed and archived the batch: "
            f"{done['packages_new']} paket / packages in the mellanarkiv.")

        found = []
        for p in packages:
            with tarfile.open(settings.mellanarkiv / p.location) as tar:
                member = tar.extractfile(f"{p.id}/metadata/preservation/premis.xml")
                premis = member.read() if member is not None else b""
            if f"quality deviation approved by {archivist}".encode() in premis:
                found.append(p.id)
        if len(found) != len(packages) or not packages:
            raise StateError(f"the deviation is missing from the PREMIS of {len(packages) - len(found)} package(s)")
        say(f"5. Avvikelsen står i varje pakets PREMIS / The deviation is in every package's PREMIS: "
            f"{packages[0].id}/metadata/preservation/premis.xml (händelse / event 'validation', outcome warning, "
            f"\"quality deviation approved by {archivist}\").")
        cat.dispose()
    env = f"ARKIV_HOME={home}"
    say("Här tittar du / Where to look:")
    say(f"   {env} arkiv summary                       # partiets historia / the batch's history")
    say(f"   {env} arkiv quarantine show {case.id}")
    say(f"   {env} arkiv events {packages[0].id}")
    say(f"   {page}")
    return {"home": str(home), "case": case.id, "packages": [p.id for p in packages], "archivist": archivist}
