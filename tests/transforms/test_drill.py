"""``arkiv drill``: a failed quality gate end to end in a home of its own, told in Swedish and English."""

from __future__ import annotations

import os
import tarfile

from transforms import cli
from transforms.catalogue import Catalogue
from transforms.config.settings import Settings
from transforms.quality import quarantine as review


def test_the_drill_goes_from_a_bad_batch_to_an_archived_deviation(tmp_path, monkeypatch, capsys):
    demo_home = tmp_path / "demo-var"
    monkeypatch.setenv("ARKIV_HOME", str(demo_home))  # the demo's own home: the drill must not touch it
    home = tmp_path / "drill"
    assert cli.main(["drill", "--home", str(home), "--archivist", "Berit Beslutsfattare", "--size", "20"]) == 0
    out = capsys.readouterr().out
    steps = [line.split(".", 1)[0] for line in out.splitlines() if line[:2] in {"1.", "2.", "3.", "4.", "5."}]
    assert steps == ["1", "2", "3", "4", "5"]
    assert "Kvalitetskontrollen underkände partiet" in out and "The quality gate failed" in out
    assert "Berit Beslutsfattare godkände med avvikelse" in out and "The run resumed and archived the batch" in out
    assert "Här tittar du / Where to look:" in out and f"ARKIV_HOME={home.resolve()} arkiv summary" in out
    assert os.environ["ARKIV_HOME"] == str(demo_home) and not demo_home.exists()

    # what the drill said is what the drill's catalogue and packages hold
    settings = Settings.from_env({"ARKIV_HOME": str(home)})
    cat = Catalogue(settings.catalogue_url)
    (case,) = review.cases(cat)
    assert case.kind == "quality" and case.status == "approved" and case.decided_by == "Berit Beslutsfattare"
    packages = cat.packages("lex")
    assert packages and all(p.status == "stored" for p in packages)
    for p in packages:
        with tarfile.open(settings.mellanarkiv / p.location) as tar:
            premis = tar.extractfile(f"{p.id}/metadata/preservation/premis.xml").read().decode()
        assert "quality deviation approved by Berit Beslutsfattare" in premis
    cat.dispose()

    monkeypatch.setenv("ARKIV_HOME", str(home))
    assert cli.main(["summary"]) == 0
    assert "failed → approved with deviation by Berit Beslutsfattare" in capsys.readouterr().out

    # a second drill in the same home is refused: it would mix its batch with the first one's
    assert cli.main(["drill", "--home", str(home)]) == 1
    assert "a drill needs a home of its own" in capsys.readouterr().err
