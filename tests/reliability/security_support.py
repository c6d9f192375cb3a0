"""What the security checks of the reliability suite measured, for the `make reliability` table.

:data:`SENSITIVE_SCAN` is filled by ``test_sensitive_outputs.py``: per location, how many files or
rows were scanned and how many sensitive values were found (must be 0), plus how many sensitive
values were searched for. :func:`table_lines` formats it.
"""

from __future__ import annotations

#: one row per hostile case of ``test_hostile_inputs.py``: class, case, refused (the safe outcome
#: happened), crashed (an exception escaped), leaks (planted sensitive values found in any output),
#: half_archived (batches left partly stored and not reported)
HOSTILE: list[dict] = []

#: location -> {"scanned": n, "unit": "files"|"rows"|"texts", "hits": n}; key "_values" holds the
#: counts of values searched for ({"identity_numbers": n, "text_values": n, "skipped": {...}})
SENSITIVE_SCAN: dict[str, dict] = {}


def table_lines() -> list[str]:
    """The scan as Markdown table rows: location | scanned | sensitive values found."""
    rows = [(k, v) for k, v in sorted(SENSITIVE_SCAN.items()) if not k.startswith("_")]
    if not rows:
        return []
    lines = ["| location | scanned | sensitive values found |", "| --- | --: | --: |"]
    lines += [f"| {k} | {v['scanned']} {v['unit']} | {v['hits']} |" for k, v in rows]
    total = sum(v["hits"] for _, v in rows)
    values = SENSITIVE_SCAN.get("_values", {})
    lines.append(f"| **total** | {sum(v['scanned'] for _, v in rows)} | **{total}** |")
    if values:
        lines.append(f"\nSearched for {values.get('identity_numbers', 0)} personnummer/samordningsnummer and "
                     f"{values.get('text_values', 0)} other sensitive values "
                     f"(not searched, cannot single anyone out: {values.get('skipped', {})}).")
    return lines


def e2e_totals(folder) -> dict[str, dict]:
    """The end-to-end tests' scans (one JSON per test under test-output/sensitive-scan/e2e), summed by location."""
    import json
    from pathlib import Path

    totals: dict[str, dict] = {}
    for path in sorted(Path(folder).glob("*.json")):
        data = json.loads(path.read_text(encoding="utf-8"))
        for loc, v in data.get("locations", {}).items():
            t = totals.setdefault(loc, {"scanned": 0, "unit": v.get("unit", ""), "hits": 0})
            t["scanned"] += v["scanned"]
            t["hits"] += v["hits"]
    return totals


def hostile_lines() -> list[str]:
    """The hostile-input cases per class as Markdown rows: tried, refused cleanly, leaks, half-archived."""
    if not HOSTILE:
        return []
    classes: dict[str, dict[str, int]] = {}
    for r in HOSTILE:
        c = classes.setdefault(r["class"], {"tried": 0, "refused": 0, "crashed": 0, "leaks": 0, "half": 0})
        c["tried"] += 1
        c["refused"] += bool(r["refused"]) and not r["crashed"]
        c["crashed"] += bool(r["crashed"])
        c["leaks"] += r["leaks"]
        c["half"] += r.get("half_archived", 0)
    lines = ["| class | cases tried | refused cleanly | crashed | leaks found | half-archived batches |",
             "| --- | --: | --: | --: | --: | --: |"]
    for name, c in classes.items():
        lines.append(f"| {name} | {c['tried']} | {c['refused']} | {c['crashed']} | {c['leaks']} | {c['half']} |")
    total = {k: sum(c[k] for c in classes.values()) for k in ("tried", "refused", "crashed", "leaks", "half")}
    lines.append(f"| **total** | {total['tried']} | {total['refused']} | {total['crashed']} | **{total['leaks']}** "
                 f"| **{total['half']}** |")
    return lines
