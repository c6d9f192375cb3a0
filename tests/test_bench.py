"""The benchmarks still run: ``python -m bench --size tiny`` once, and its JSON has every section.

No timing is asserted: benchmarks measure, they do not pass or fail on speed. The loaded-machine
verdict is tested apart with made-up load averages (the real one depends on who else is running).
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.common import MB, load_verdict, load_warning
from bench.rebuild import GOAL
from bench.run import SECTIONS, SIZES, table

PROJECT = Path(__file__).resolve().parents[1]


def tiny(fn):
    """The tests that read the one tiny run (slow: it builds, validates, extracts … for real)."""
    return pytest.mark.slow(pytest.mark.integration(pytest.mark.xdist_group("bench")(fn)))


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench-results")
    work = tmp_path_factory.mktemp("bench-work")
    # 441 s beside other test runs (load average 14 on two CPUs): the timeout leaves room for worse
    r = subprocess.run([sys.executable, "-m", "bench", "--size", "tiny", "--out", str(out), "--work", str(work)],
                       cwd=PROJECT, capture_output=True, text=True, timeout=1200)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    files = list(out.glob("*-tiny.json"))
    assert len(files) == 1
    return json.loads(files[0].read_text()), r.stdout, work


@tiny
def test_json_has_every_section(tiny_run):
    data, _, _ = tiny_run
    for key in ("machine", "limits", "corpus", "build", "rebuild", "validate", "extract", "memory", "workers",
                "dagparse"):
        assert key in data, key
    # each part's wall seconds, for estimating how long another size runs
    assert set(data["section_seconds"]) == {"limits", "corpus", *SECTIONS}
    assert sum(data["section_seconds"].values()) <= data["seconds"]
    m = data["machine"]
    for key in ("cpu_count", "ram_bytes", "disk_free_bytes", "python", "versions", "git_commit"):
        assert key in m, key
    assert {"pyarrow", "lxml"} <= set(m["versions"])


@tiny
def test_every_benchmark_ran_side_by_side(tiny_run):
    data, _, _ = tiny_run
    assert set(data["build"]["warm"]) == {"single_stream", "ours", "one_pass", "cp_sha256sum", "bagit"}
    assert data["validate"]["ours_tar"]["valid"] is True
    assert {"ours_tar", "ours_folder", "sha256sum_c", "eark"} <= set(data["validate"])
    if data["extract"].get("available"):
        assert {"ours", "copy", "pandas"} <= set(data["extract"])
        assert data["extract"]["pandas"]["rows"] == data["extract"]["rows"]
    mem = data["memory"]
    assert mem["one_package_1x"]["build"]["max_rss_mb"] > 0
    assert "single_file" in mem
    assert {"workers_1", "workers_2", "speedup"} <= set(data["workers"])
    assert data["dagparse"]["dagbag_project"]["import_errors"] == 0
    assert "empty_dag.py (baseline)" in data["dagparse"]["files"]


@tiny
def test_prints_the_table_and_cleans_up(tiny_run):
    _, stdout, work = tiny_run
    for heading in ("1. Package build", "2. Validation", "3. Extraction", "4. Peak RSS", "5. Workers",
                    "6. DAG parse", "7. Rebuild of an unchanged interval"):
        assert heading in stdout
    assert list(work.iterdir()) == []  # the work folder is removed


@tiny
def test_single_stream_limit_is_measured_in_the_same_rounds(tiny_run):
    data, stdout, _ = tiny_run
    b = data["build"]
    rounds = SIZES["tiny"].repeats
    assert b["rounds"] == rounds
    limit = b["warm"]["single_stream"]
    # the limit wrote every document into its one file, no more and no less
    assert limit["documents"] == b["files"] == data["corpus"]["documents"]
    assert limit["output_bytes"] == b["bytes"]
    for name, v in {**b["warm"], **b["variants"]["warm"]}.items():
        assert len(v["all_seconds"]) == rounds, name
        assert 0 < v["seconds"] <= v["median_seconds"] <= max(v["all_seconds"]), name
    vs = b["ours_vs_single_stream"]["warm"]
    assert vs["best"] == pytest.approx(limit["seconds"] / b["warm"]["ours"]["seconds"])
    assert vs["median"] == pytest.approx(limit["median_seconds"] / b["warm"]["ours"]["median_seconds"])
    section = stdout[stdout.index("1. Package build"):stdout.index("2. Validation")]
    # ours ÷ the limit comes first, then the limit's row, before ours and the other baselines
    assert section.index("ours ÷ single-stream limit") < section.index("single-stream limit  ")
    assert section.index("single-stream limit  ") < section.index("ours (FGS SIP TAR)")
    assert section.index("ours (FGS SIP TAR)") < section.index("per-file loop") < section.index("copy + bagit")


@tiny
def test_load_average_is_recorded_through_the_run(tiny_run):
    data, stdout, _ = tiny_run
    load = data["load"]
    whens = [s["when"] for s in load["samples"]]
    assert whens[0] == "start" and whens[-1] == "end"
    for n in range(1, SIZES["tiny"].repeats + 1):
        assert f"build warm round {n}" in whens
    for n in range(1, SIZES["tiny"].rebuild_repeats + 1):
        assert f"rebuild round {n}" in whens
    assert all(s["load1"] >= 0 and s["load5"] >= 0 and s["load15"] >= 0 for s in load["samples"])
    cpus = data["machine"]["cpu_affinity"] or data["machine"]["cpu_count"]
    assert load["threshold"] == cpus
    assert load["loaded"] == any(s["load1"] > (cpus if s["when"] == "start" else cpus + load["own_load"])
                                 for s in load["samples"])
    assert stdout.count("LOADED MACHINE") == (2 if load["samples"][0]["load1"] > cpus
                                               else 1 if load["loaded"] else 0)


@tiny
def test_rebuild_is_timed_against_a_first_build_with_empty_caches(tiny_run):
    data, stdout, _ = tiny_run
    rb = data["rebuild"]
    rounds = SIZES["tiny"].rebuild_repeats  # one at tiny: the conversion's first build is most of the section
    assert rb["rounds"] == rounds and rb["goal"] == GOAL
    # tiny builds the record class with the fewest documents, to stay short
    parts = data["corpus"]["record_classes"]
    assert len(rb["record_classes"]) == SIZES["tiny"].rebuild_classes and rb["all_record_classes"] == len(parts)
    assert 0 < rb["files"] < data["corpus"]["documents"]
    assert set(rb["variants"]) == {"without_conversion", "with_conversion"}
    for name, v in rb["variants"].items():
        first, again, ratio = v["first"], v["rebuild"], v["first_over_rebuild"]
        for step in (first, again):
            assert len(step["all_seconds"]) == rounds, name
            assert 0 < step["seconds"] <= step["median_seconds"] <= max(step["all_seconds"]), name
            assert step["identifications"] > 0, name  # the catalogue's cache was filled (and kept)
        assert ratio["best"] == pytest.approx(first["seconds"] / again["seconds"])
        assert ratio["median"] == pytest.approx(first["median_seconds"] / again["median_seconds"])
        assert len(ratio["rounds"]) == rounds
        assert v["goal_met"] is (ratio["median"] >= GOAL)
        # the rebuild's packages are the first build's, byte for byte, in every round
        assert v["identical"] is True, name
        assert v["package_sha256"] and all(len(h) == 64 for h in v["package_sha256"].values())
    conv = rb["variants"]["with_conversion"]
    assert conv["first"]["converted"] > 0 and conv["first"]["conversion_seconds"] > 0
    # every conversion came from the cache: the same documents converted, no time in LibreOffice
    assert conv["rebuild"]["converted"] == conv["first"]["converted"]
    assert conv["rebuild"]["conversion_seconds"] == 0
    assert rb["variants"]["without_conversion"]["first"]["converted"] == 0
    # the two variants package different bytes (PDF/A derivatives in one of them)
    assert conv["package_sha256"] != rb["variants"]["without_conversion"]["package_sha256"]
    section = stdout[stdout.index("7. Rebuild of an unchanged interval"):]
    assert section.index("without conversion: first build") < section.index("with PDF/A conversion (Lex): first")


def _rebuild_result(first: float, again: float, identical: bool) -> dict:
    step = {"seconds": again, "median_seconds": again, "files_s": 10.0, "all_seconds": [again],
            "identifications": 3, "converted": 0, "conversion_seconds": 0}
    return {"size": "quick", "seed": 1, "machine": {"cpu_count": 2}, "rebuild": {
        "files": 3, "bytes": 3 * MB, "rounds": 1, "goal": GOAL, "record_classes": ["a", "b"],
        "all_record_classes": 2, "variants": {"with_conversion": {
            "first": {**step, "seconds": first, "median_seconds": first, "all_seconds": [first]},
            "rebuild": step, "first_over_rebuild": {"best": first / again, "median": first / again},
            "goal_met": first / again >= GOAL, "identical": identical}}}}


def test_rebuild_table_marks_the_goal_and_differing_packages():
    met = table(_rebuild_result(9.0, 1.0, True))
    row = next(line for line in met.splitlines() if line.strip().startswith("rebuild (caches warm)"))
    assert row.split()[-4:] == ["9.00×", "9.00×", "met", "yes"]
    assert "every record class" in met
    missed = table(_rebuild_result(2.0, 1.0, False))
    row = next(line for line in missed.splitlines() if line.strip().startswith("rebuild (caches warm)"))
    assert row.split()[-4:] == ["2.00×", "2.00×", "MISSED", "NO"]


def _samples(*loads: float) -> list[dict]:
    return [{"when": "start" if i == 0 else f"round {i}", "at": 0.0, "load1": x, "load5": x, "load15": x}
            for i, x in enumerate(loads)]


def test_a_loaded_machine_is_named_at_the_top():
    verdict = load_verdict(_samples(0.4, 3.1, 1.2), cpu_count=2)
    assert verdict["loaded"] is True
    assert verdict["loaded_at"] == ["round 1"]
    assert verdict["max_load1"] == 3.1
    out = table({"size": "quick", "seed": 1, "machine": {"cpu_count": 2}, "load": verdict})
    first = out.splitlines()[0]
    assert first.startswith("WARNING: LOADED MACHINE")
    assert "3.10" in first and "the CPU count" in first


def test_a_machine_busy_before_the_run_starts_is_loaded():
    # nothing of the run's own runs yet at the start: the CPU count alone is the limit there
    verdict = load_verdict(_samples(2.3, 2.9), cpu_count=2)
    assert verdict["loaded"] is True and verdict["loaded_at"] == ["start"]


def test_an_idle_machine_gets_no_warning():
    # the run's own writer beside a LibreOffice per CPU keeps up to CPU count + 1 runnable
    verdict = load_verdict(_samples(0.4, 3.0, 2.9), cpu_count=2)
    assert verdict["loaded"] is False
    assert load_warning(verdict) is None
    out = table({"size": "quick", "seed": 1, "machine": {"cpu_count": 2}, "load": verdict})
    assert "LOADED" not in out
    assert out.startswith("Arkivflöde benchmarks")


def test_a_documented_threshold_overrides_the_cpu_count():
    verdict = load_verdict(_samples(0.4, 1.6), cpu_count=2, threshold=1.5)
    assert verdict["loaded"] is True and verdict["threshold"] == 1.5 and verdict["loaded_at"] == ["round 1"]
    assert "--load-threshold" in load_warning(verdict)
    assert load_verdict(_samples(3.0, 4.5), cpu_count=4)["loaded"] is False


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.xdist_group("bench")
def test_the_profiles_behind_the_explanations_run_and_name_the_work(tmp_path):
    """``python -m bench.profiles`` (the cProfile tables bench/README.md quotes) runs on the tiny corpus and
    its tables show the build's and the validator's own functions and where a package's memory lies, per file."""
    out = tmp_path / "results"
    r = subprocess.run([sys.executable, "-m", "bench.profiles", "--size", "tiny", "--top", "8", "--out", str(out),
                        "--work", str(tmp_path)], cwd=PROJECT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    build, rest = r.stdout.split("\n\nvalidate: ")
    validate, memory = rest.split("\n\nmemory: ")
    assert "build: " in build and "by own time" in build and "build_packages" in build
    assert "µs a file beyond the hash" in validate and "validate_package" in validate
    assert "kB a file" in memory and "B/file" in memory and ".py:" in memory
    (written,) = out.glob("*-profile-tiny.txt")
    assert written.read_text(encoding="utf-8").rstrip("\n") == r.stdout.rstrip("\n")
    assert not list(tmp_path.glob("arkiv-profile-*"))  # the work folder is removed
