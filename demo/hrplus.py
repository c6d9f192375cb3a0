"""Simulator of HR+, the payroll system of Strängnäs kommun: the monthly export to the e-archive.

``generate`` writes one delivery folder ``<inbox>/<period>/`` as HR+'s archive export job
leaves it after a lönekörning: four XML files (UTF-8, one ``<row>`` per record, one element
per column) and a ``manifest.json`` with every file's size and SHA-256, as
docs/source-systems.md describes for ``kind: file_export``:

- ``loneperioder.xml`` — the pay period (löneperiod) and its payment date: the package unit;
- ``anstallda.xml`` — the employees paid in the period (anställningsnummer, personnummer, name);
- ``anstallningar.xml`` — their employments (form, befattning, arbetsplats, förvaltning,
  sysselsättningsgrad, månadslön or timlön);
- ``lonerader.xml`` — the salary-slip lines (lönespecifikationsrader): löneart, quantity,
  à-pris and amount in kronor and öre, with the period each line was earned in.

Everything derives from ``random.Random(seed)`` and the period label, never the clock. With
``bad=N`` N rows of each kind in :data:`BAD_KINDS` are planted (valid XML, wrong content: the
quality suite's business); ``defect`` instead breaks the delivery itself in one of the
ways in :data:`DEFECTS` (the file-export reader's quarantine business).

Run ``python -m demo.hrplus --inbox var/demo/hrplus-inbox --period 2025-12``.
"""

from __future__ import annotations

import datetime as dt
import random
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from xml.sax.saxutils import escape

from demo import _simulator as sim
from demo import names
from transforms.common.identifiers import make_personnummer

SYSTEM = "hrplus"
BAD_KINDS = (
    "invalid_personnummer",
    "employment_rate_out_of_range",
    "ended_before_started",
    "unknown_wage_type",
    "missing_amount",
)
DEFECTS = sim.DELIVERY_DEFECTS  # what the file-export reader must quarantine

# Table -> (file, root element). Column order is the YAML's; the XML elements carry the names.
FILES = {
    "pay_periods": ("loneperioder.xml", "loneperioder"),
    "employees": ("anstallda.xml", "anstallda"),
    "employments": ("anstallningar.xml", "anstallningar"),
    "salary_lines": ("lonerader.xml", "lonerader"),
}
COLUMNS = {
    "pay_periods": ["period_id", "period_start", "period_end", "payment_date", "run_type", "description"],
    "employees": ["employee_id", "period_id", "personnummer", "name"],
    "employments": ["employment_id", "period_id", "employee_id", "employment_form", "position", "workplace",
                    "department", "cost_centre", "start_date", "end_date", "employment_rate", "monthly_salary",
                    "hourly_rate"],
    "salary_lines": ["line_id", "period_id", "employment_id", "wage_type", "wage_type_text", "quantity", "unit",
                     "unit_price", "amount", "from_date", "to_date"],
}

# Lönearter as HR+ numbers them in Strängnäs (code, text, unit).
WAGE_TYPES: dict[str, tuple[str, str | None]] = {
    "1101": ("Månadslön", "mån"),
    "1201": ("Timlön", "tim"),
    "1310": ("OB-tillägg kväll", "tim"),
    "1311": ("OB-tillägg natt", "tim"),
    "1312": ("OB-tillägg helg", "tim"),
    "1320": ("Övertidsersättning enkel", "tim"),
    "1410": ("Semesterersättning 12 %", None),
    "1510": ("Sjukavdrag dag 2–14", "dag"),
    "1511": ("Sjuklön 80 % dag 2–14", "dag"),
    "1512": ("Karensavdrag", None),
    "9010": ("Preliminärskatt", None),
}
# OB rates in kronor per hour (AB / HÖK levels, rounded).
_OB = {"1310": Decimal("26.45"), "1311": Decimal("61.10"), "1312": Decimal("61.10")}

EMPLOYMENT_FORMS = {"Tillsvidareanställning": 74, "Vikariat": 10, "Särskild visstidsanställning": 6, "Timavlönad": 10}

# Förvaltning -> [(befattning, monthly salary range in kr (or hourly for timavlönade), OB?)].
POSITIONS: dict[str, list[tuple[str, int, int, bool]]] = {
    "Socialförvaltningen": [
        ("Undersköterska", 30_500, 34_500, True),
        ("Undersköterska", 30_500, 34_500, True),
        ("Vårdbiträde", 27_000, 29_800, True),
        ("Personlig assistent", 28_000, 30_500, True),
        ("Sjuksköterska", 40_000, 47_000, True),
        ("Socialsekreterare", 38_000, 45_500, False),
        ("Biståndshandläggare", 37_000, 42_000, False),
        ("Enhetschef", 50_000, 60_000, False),
    ],
    "Barn- och utbildningsförvaltningen": [
        ("Lärare i grundskolan", 38_500, 46_500, False),
        ("Lärare i grundskolan", 38_500, 46_500, False),
        ("Förskollärare", 36_000, 41_500, False),
        ("Barnskötare", 28_000, 31_500, False),
        ("Elevassistent", 26_500, 29_000, False),
        ("Fritidspedagog", 33_000, 38_000, False),
        ("Rektor", 56_000, 68_000, False),
        ("Kock", 28_500, 31_500, True),
    ],
    "Samhällsbyggnadsförvaltningen": [
        ("Bygglovshandläggare", 39_000, 46_000, False),
        ("Miljöinspektör", 37_500, 44_000, False),
        ("Lokalvårdare", 26_500, 28_800, False),
        ("Drifttekniker", 33_000, 38_500, True),
    ],
    "Kommunledningsförvaltningen": [
        ("Löneadministratör", 33_000, 37_500, False),
        ("Ekonom", 40_000, 48_000, False),
        ("Arkivarie", 36_500, 42_000, False),
        ("HR-specialist", 42_000, 50_000, False),
        ("Registrator", 31_000, 35_000, False),
    ],
    "Kultur- och fritidsförvaltningen": [
        ("Bibliotekarie", 34_000, 38_500, False),
        ("Fritidsledare", 29_000, 32_500, True),
        ("Badmästare", 28_500, 31_000, True),
    ],
}
DEPARTMENT_WEIGHTS = {"Socialförvaltningen": 34, "Barn- och utbildningsförvaltningen": 40,
                      "Samhällsbyggnadsförvaltningen": 10, "Kommunledningsförvaltningen": 9,
                      "Kultur- och fritidsförvaltningen": 7}
WORKPLACES: dict[str, list[str]] = {
    "Socialförvaltningen": ["Hemtjänsten Strängnäs", "Hemtjänsten Mariefred", "Solgårdens vård- och omsorgsboende",
                            "Eldstadens äldreboende", "Individ- och familjeomsorgen", "LSS-boende Tosterö"],
    "Barn- och utbildningsförvaltningen": ["Finningeskolan", "Paulinskolan", "Karinslundsskolan",
                                           "Åkers styckebruks skola", "Stallarholmens förskola",
                                           "Mariefreds förskola Ängsgården", "Härads skola"],
    "Samhällsbyggnadsförvaltningen": ["Bygglovsenheten", "Miljöenheten", "Fastighetsenheten"],
    "Kommunledningsförvaltningen": ["Lönecenter", "Ekonomienheten", "Kansliet", "HR-avdelningen"],
    "Kultur- och fritidsförvaltningen": ["Strängnäs bibliotek", "Mariefreds bibliotek", "Strängnäs simhall",
                                         "Fritidsgården Ungdomens hus"],
}
# Positions tied to a kind of workplace (the rest work anywhere in their förvaltning).
_CARE = ["Hemtjänsten Strängnäs", "Hemtjänsten Mariefred", "Solgårdens vård- och omsorgsboende",
         "Eldstadens äldreboende"]
_SCHOOLS = ["Finningeskolan", "Paulinskolan", "Karinslundsskolan", "Åkers styckebruks skola", "Härads skola"]
_POSITION_WORKPLACES = {
    "Undersköterska": _CARE,
    "Vårdbiträde": _CARE,
    "Sjuksköterska": _CARE,
    "Elevassistent": _SCHOOLS,
    "Fritidspedagog": _SCHOOLS,
    "Förskollärare": ["Stallarholmens förskola", "Mariefreds förskola Ängsgården"],
    "Barnskötare": ["Stallarholmens förskola", "Mariefreds förskola Ängsgården"],
    "Lärare i grundskolan": _SCHOOLS,
    "Lokalvårdare": ["Fastighetsenheten"],
    "Drifttekniker": ["Fastighetsenheten"],
    "Bygglovshandläggare": ["Bygglovsenheten"],
    "Miljöinspektör": ["Miljöenheten"],
    "Löneadministratör": ["Lönecenter"],
    "Ekonom": ["Ekonomienheten"],
    "Arkivarie": ["Kansliet"],
    "Registrator": ["Kansliet"],
    "HR-specialist": ["HR-avdelningen"],
    "Bibliotekarie": ["Strängnäs bibliotek", "Mariefreds bibliotek"],
    "Badmästare": ["Strängnäs simhall"],
    "Fritidsledare": ["Fritidsgården Ungdomens hus"],
    "Socialsekreterare": ["Individ- och familjeomsorgen"],
    "Biståndshandläggare": ["Individ- och familjeomsorgen"],
    "Personlig assistent": ["LSS-boende Tosterö"],
}
_COST_CENTRE_BASE = {"Kommunledningsförvaltningen": 1, "Barn- och utbildningsförvaltningen": 3,
                     "Socialförvaltningen": 5, "Samhällsbyggnadsförvaltningen": 7,
                     "Kultur- och fritidsförvaltningen": 8}
# Dates on which no salary is paid (the payment moves to the previous banking day).
_NO_PAYMENT = {(1, 1), (1, 6), (5, 1), (6, 6), (12, 24), (12, 25), (12, 26), (12, 31)}
_CENT = Decimal("0.01")
_MONTHS = ["januari", "februari", "mars", "april", "maj", "juni", "juli", "augusti", "september", "oktober",
           "november", "december"]

# --------------------------------------------------------------------------- data types


@dataclass
class HRPlusSummary:
    """What one ``generate`` run produced: rows per table, files in the delivery, their bytes."""

    counts: dict[str, int]
    bytes: int
    bad_rows: dict[str, int] = field(default_factory=dict)  # kind -> count
    period: str = ""
    defect: str | None = None

    def describe(self) -> str:
        """One line, e.g. ``HR+ 2025-12: 100 employees, 108 employments, 612 salary lines, 5 files (0.4 MB)``."""
        c = self.counts
        text = (
            f"HR+ {self.period}: {c['employees']} employees, {c['employments']} employments, "
            f"{c['salary_lines']} salary lines, {c['files']} files ({self.bytes / 1e6:.1f} MB)"
        )
        if any(self.bad_rows.values()):
            text += "; bad rows: " + ", ".join(f"{k}={v}" for k, v in self.bad_rows.items())
        if self.defect:
            text += f"; defect: {self.defect}"
        return text


# ---------------------------------------------------------------------------- helpers


def _money(value: Decimal) -> Decimal:
    return value.quantize(_CENT, rounding=ROUND_HALF_UP)


def parse_period(period: str) -> tuple[dt.date, dt.date]:
    """First and last day of a ``YYYY-MM`` period."""
    try:
        first = dt.datetime.strptime(period, "%Y-%m").date()
    except ValueError:
        raise ValueError(f"period must be YYYY-MM, got {period!r}") from None
    return first, sim.month_end(first)


def payment_date(first: dt.date) -> dt.date:
    """The 25th, or the banking day before it (December: the 23rd, before julafton)."""
    day = first.replace(day=25)
    while day.weekday() >= 5 or (day.month, day.day) in _NO_PAYMENT:
        day -= dt.timedelta(days=1)
    return day


def _text(value: object) -> str:
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return f"{value:.2f}"
    return str(value)


def _xml(table: str, rows: list[dict], period: str) -> bytes:
    """One table as HR+ writes it: root element, one <row> per record; a null is an empty element.

    Salary lines leave a null element out altogether (HR+ does so for the optional
    quantity/à-pris of tax and percentage lines); both forms mean null in the contract.
    """
    _, root = FILES[table]
    out = ['<?xml version="1.0" encoding="UTF-8"?>',
           f'<{root} system="HR+" kommun="Strängnäs kommun" period="{period}">']
    omit_nulls = table == "salary_lines"
    for row in rows:
        out.append("  <row>")
        for col in COLUMNS[table]:
            value = row[col]
            if value is None:
                if not omit_nulls:
                    out.append(f"    <{col}/>")
            else:
                out.append(f"    <{col}>{escape(_text(value))}</{col}>")
        out.append("  </row>")
    out.append(f"</{root}>")
    return ("\n".join(out) + "\n").encode("utf-8")


# --------------------------------------------------------------------------- the model


class _Generator:
    def __init__(self, seed: int, period: str) -> None:
        self.rng = random.Random(f"{SYSTEM}:{seed}:{period}")  # a string seed is hashed deterministically
        self.period = period
        self.first, self.last = parse_period(period)
        # Variable pay (hours, OB, overtime, sick leave) is paid a month in arrears.
        self.prev_last = self.first - dt.timedelta(days=1)
        self.prev_first = self.prev_last.replace(day=1)
        self.pnr_today = self.first
        self.rows: dict[str, list[dict]] = {t: [] for t in FILES}
        self.persons = 0
        self.next_employee_id = 100_000 + self.rng.randint(100, 4000)

    def employee(self) -> dict:
        r = self.rng
        female = r.random() < 0.78  # municipal workforces are about four fifths women
        age = r.randint(19, 67)
        birth = sim.days_between(r, dt.date(self.first.year - age - 1, self.first.month, 1),
                      dt.date(self.first.year - age, self.first.month, 1))
        self.persons += 1
        samordning = self.persons % 41 == 17  # newly arrived staff before a personnummer
        serial = r.randrange(100) * 10 + r.choice([0, 2, 4, 6, 8] if female else [1, 3, 5, 7, 9])
        first = r.choice(names.FIRST_NAMES_FEMALE if female else names.FIRST_NAMES_MALE)
        last = r.choice(names.LAST_NAMES)
        if r.random() < 0.07:
            last = f"{last}-{r.choice(names.LAST_NAMES)}"
        row = {
            "employee_id": self.next_employee_id,
            "period_id": self.period,
            "personnummer": make_personnummer(birth, serial, samordning=samordning, today=self.pnr_today),
            "name": f"{first} {last}",
        }
        # Anställningsnummer are handed out in hiring order; gaps are people who have left.
        self.next_employee_id += r.randint(1, 9)
        self.rows["employees"].append(row)
        return row

    def employment(self, employee: dict, form: str | None = None) -> dict:
        r = self.rng
        form = form or r.choices(list(EMPLOYMENT_FORMS), weights=list(EMPLOYMENT_FORMS.values()))[0]
        dept = r.choices(list(DEPARTMENT_WEIGHTS), weights=list(DEPARTMENT_WEIGHTS.values()))[0]
        position, low, high, ob = r.choice(POSITIONS[dept])
        earliest = dt.date(self.first.year - 30, 1, 1) if form == "Tillsvidareanställning" \
            else self.first - dt.timedelta(days=400)
        start = sim.days_between(r, earliest, self.first)
        end = None
        rate: Decimal | None = Decimal(r.choice([100, 100, 100, 100, 90, 80, 75, 75, 60, 50]))
        monthly: Decimal | None = Decimal(r.randrange(low, high + 1, 100))
        hourly = None
        if form in ("Vikariat", "Särskild visstidsanställning"):
            end = sim.days_between(r, self.last, self.last + dt.timedelta(days=240))
            if r.random() < 0.15:
                end = sim.days_between(r, self.first, self.last)  # ends within the period: gets semesterersättning
        elif form == "Timavlönad":
            rate = monthly = None
            hourly = _money(Decimal(low) / Decimal("165") + Decimal(r.randint(-5, 5)))
        row = {
            "employment_id": 500_000 + len(self.rows["employments"]) + 1,
            "period_id": self.period,
            "employee_id": employee["employee_id"],
            "employment_form": form,
            "position": position,
            "workplace": r.choice(_POSITION_WORKPLACES.get(position) or WORKPLACES[dept]),
            "department": dept,
            "cost_centre": f"{_COST_CENTRE_BASE[dept]}{r.randint(100, 699)}",
            "start_date": start,
            "end_date": end,
            "employment_rate": rate,
            "monthly_salary": monthly,
            "hourly_rate": hourly,
            "_ob": ob,
        }
        self.rows["employments"].append(row)
        return row

    def line(self, employment: dict, code: str, quantity: Decimal | None, unit_price: Decimal | None,
             amount: Decimal | None, start: dt.date, end: dt.date, *, text: str | None = None) -> dict:
        row = {
            "line_id": len(self.rows["salary_lines"]) + 1,
            "period_id": self.period,
            "employment_id": employment["employment_id"],
            "wage_type": code,
            "wage_type_text": text or WAGE_TYPES[code][0],
            "quantity": quantity,
            "unit": WAGE_TYPES.get(code, ("", None))[1],
            "unit_price": unit_price,
            "amount": amount,
            "from_date": start,
            "to_date": end,
        }
        self.rows["salary_lines"].append(row)
        return row

    def pay(self, e: dict) -> None:
        """The salary slip of one employment: pay, additions and deductions, then tax."""
        r = self.rng
        gross = Decimal(0)

        def add(code: str, qty: Decimal | None, price: Decimal | None, start: dt.date, end: dt.date,
                amount: Decimal | None = None) -> None:
            nonlocal gross
            amount = amount if amount is not None else _money(qty * price)  # type: ignore[operator]
            self.line(e, code, qty, price, amount, start, end)
            gross += amount

        if e["employment_form"] == "Timavlönad":
            hours = Decimal(r.randint(16, 150)) + Decimal(r.choice(["0", "0.25", "0.5", "0.75"]))
            add("1201", hours, e["hourly_rate"], self.prev_first, self.prev_last)
            # Hourly staff get their holiday pay with every salary (semesterlagen 16 a §, 12 %).
            add("1410", None, None, self.prev_first, self.prev_last, _money(gross * Decimal("0.12")))
        else:
            start = max(self.first, e["start_date"])
            end = min(self.last, e["end_date"] or self.last)
            monthly = _money(e["monthly_salary"] * e["employment_rate"] / 100)
            if start == self.first and end == self.last:
                add("1101", Decimal(1), monthly, start, end)
            else:  # part of a month: kalenderdagslön
                days = Decimal((end - start).days + 1)
                add("1101", days, _money(monthly / Decimal((self.last - self.first).days + 1)), start, end)
            if e["end_date"] is not None and e["end_date"] <= self.last:
                # A fixed-term employment ending: unused holiday paid out.
                add("1410", None, None, start, end, _money(monthly * Decimal("0.046") * r.randint(2, 12)))
            if r.random() < 0.07:
                days = Decimal(r.randint(1, 6))
                daily = _money(e["monthly_salary"] * e["employment_rate"] / 100 * 12 / 365)
                sick_start = sim.days_between(r, self.prev_first, self.prev_last - dt.timedelta(days=6))
                sick_end = sick_start + dt.timedelta(days=int(days))
                add("1512", None, None, sick_start, sick_start, -_money(daily * Decimal("0.8") * 5 / 7))
                add("1510", days, -daily, sick_start, sick_end)
                add("1511", days, _money(daily * Decimal("0.8")), sick_start, sick_end)
        hourly = e["hourly_rate"] or _money((e["monthly_salary"] or Decimal(30_000)) / Decimal("165"))
        if e["_ob"]:
            for code in r.sample(["1310", "1311", "1312"], r.randint(1, 3)):
                add(code, Decimal(r.randint(4, 40)) + Decimal(r.choice(["0", "0.5"])), _OB[code],
                    self.prev_first, self.prev_last)
        if r.random() < 0.08:
            add("1320", Decimal(r.randint(1, 12)), _money(hourly * Decimal("1.5")), self.prev_first, self.prev_last)
        # Preliminärskatt from the tax table: roughly the municipal rate on income over the
        # basic allowance; Strängnäs' kommunal- and regionskatt is about 33 %.
        tax = _money(max(gross - Decimal(2_000), Decimal(0)) * Decimal(r.choice(["0.30", "0.31", "0.32", "0.33"])))
        self.line(e, "9010", None, None, -tax.quantize(Decimal(1)), self.first, self.last)


# ------------------------------------------------------------------------------ public


def generate(inbox: Path, *, period: str = "2025-12", size: int = 100, seed: int = 1, bad: int = 0,
             defect: str | None = None) -> HRPlusSummary:
    """Write the HR+ delivery ``<inbox>/<period>/`` (replacing an existing one) and return a summary.

    ``size`` employees are paid in the period; about one in twelve also has a second,
    hourly employment. ``bad`` plants that many rows of each kind in :data:`BAD_KINDS`
    after the valid ones (the files stay well-formed); ``defect`` (one of :data:`DEFECTS`)
    breaks the delivery itself. Same arguments ⇒ identical bytes.
    """
    if size < 0 or bad < 0:
        raise ValueError("size and bad must not be negative")
    if defect is not None and defect not in DEFECTS:
        raise ValueError(f"defect must be one of {DEFECTS}, got {defect!r}")
    g = _Generator(seed, period)
    r = g.rng
    g.rows["pay_periods"].append({
        "period_id": period,
        "period_start": g.first,
        "period_end": g.last,
        "payment_date": payment_date(g.first),
        "run_type": "ordinarie",
        "description": f"Ordinarie lönekörning {_MONTHS[g.first.month - 1]} {g.first.year}",
    })
    for _ in range(size):
        emp = g.employee()
        g.pay(g.employment(emp))
        if r.random() < 0.08:  # a second, hourly employment (extra shifts elsewhere)
            g.pay(g.employment(emp, "Timavlönad"))

    # Bad rows after every valid one: bad=N is bad=0 plus them.
    for _ in range(bad):  # a transposed digit: the check digit no longer fits
        emp = g.employee()
        emp["personnummer"] = sim.wrong_check_digit(r, emp["personnummer"])
        g.pay(g.employment(emp, "Tillsvidareanställning"))
    for _ in range(bad):  # sysselsättningsgrad typed as 1000 instead of 100.0
        e = g.employment(g.employee(), "Tillsvidareanställning")
        e["employment_rate"] = Decimal(r.choice([0, 1000, 750]))
        g.pay({**e, "employment_rate": Decimal(100)})
    for _ in range(bad):  # a fixed-term employment whose end precedes its start
        e = g.employment(g.employee(), "Vikariat")
        e["end_date"] = e["start_date"] - dt.timedelta(days=r.randint(1, 90))
        g.pay({**e, "end_date": None})
    for _ in range(bad):  # a manual löneart outside the code list
        e = g.employment(g.employee(), "Tillsvidareanställning")
        g.pay(e)
        g.line(e, "7999", Decimal(1), Decimal(1_500), Decimal("1500.00"), g.first, g.last, text="Manuell justering")
    for _ in range(bad):  # a line without an amount
        e = g.employment(g.employee(), "Tillsvidareanställning")
        g.pay(e)
        g.line(e, "1320", Decimal(3), None, None, g.prev_first, g.prev_last)
    for e in g.rows["employments"]:
        e.pop("_ob", None)

    files = {FILES[t][0]: _xml(t, g.rows[t], period) for t in FILES}
    extra: dict[str, bytes] = {}
    if defect == "wrong_encoding":
        data = files["anstallda.xml"]
        i = next(i for i in range(len(data)) if data[i] in (0xC3,) and data[i + 1] in (0xA5, 0xA4, 0xB6))
        files["anstallda.xml"] = data[:i] + b"\xff" + data[i + 2:]  # a lone byte UTF-8 cannot start with
    elif defect == "ragged_row":
        data = files["anstallda.xml"]
        files["anstallda.xml"] = data.replace(b"</name>", b"", 1)  # unclosed <name>: not well-formed XML
    elif defect == "unknown_column":
        files["anstallda.xml"] = files["anstallda.xml"].replace(
            b"  </row>", b"    <fackforbund>Kommunal</fackforbund>\n  </row>", 1)
    elif defect == "bad_value":
        data = files["lonerader.xml"]
        start = data.index(b"<amount>") + len(b"<amount>")
        end = data.index(b"</amount>", start)
        kronor = Decimal(data[start:end].decode())
        swedish = f"{kronor:,.2f}".replace(",", " ").replace(".", ",").encode()  # 32 500,00: not a decimal
        files["lonerader.xml"] = data[:start] + swedish + data[end:]

    created = dt.datetime.combine(g.last + dt.timedelta(days=1), dt.time(2, 0))  # the export job's run
    manifest = sim.delivery_manifest(SYSTEM, period, created, files)
    # Built beside its place and swapped in finished: the DAG never sees a half-written delivery.
    with sim.swapped_in(Path(inbox) / period) as work:
        for name, data in files.items():
            (work / name).write_bytes(data)
        (work / "manifest.json").write_bytes(manifest)
        if defect == "checksum_mismatch":
            data = files["lonerader.xml"]
            i = data.index(b"<amount>") + len(b"<amount>")
            digit = b"7" if data[i:i + 1] != b"7" else b"3"
            files["lonerader.xml"] = data[:i] + digit + data[i + 1:]  # same size, other bytes
            (work / "lonerader.xml").write_bytes(files["lonerader.xml"])
        elif defect == "missing_file":
            (work / "anstallda.xml").unlink()
            del files["anstallda.xml"]
        elif defect == "unlisted_file":
            extra["lonerader_kopia.xml"] = files["lonerader.xml"]
            (work / "lonerader_kopia.xml").write_bytes(extra["lonerader_kopia.xml"])

    written = [*files.values(), *extra.values()]
    counts = {t: len(g.rows[t]) for t in FILES}
    counts["files"] = len(written) + 1  # the table files and the manifest
    total = sum(map(len, written)) + len(manifest)
    return HRPlusSummary(counts=counts, bytes=total, bad_rows=dict.fromkeys(BAD_KINDS, bad), period=period,
                         defect=defect)


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``python -m demo.hrplus --inbox DIR [--period YYYY-MM --size N --seed S --bad B --defect D]``."""
    parser = sim.parser("demo.hrplus", __doc__)
    parser.add_argument("--inbox", default="var/demo/hrplus-inbox", type=Path, help="the export inbox folder")
    parser.add_argument("--period", default="2025-12", help="the pay period, YYYY-MM")
    parser.add_argument("--size", type=int, default=100, help="number of employees paid in the period")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--bad", type=int, default=0, help="bad rows of each kind to plant")
    parser.add_argument("--defect", choices=DEFECTS, default=None, help="break the delivery in one way")
    args = parser.parse_args(argv)
    sim.report(lambda: generate(args.inbox, period=args.period, size=args.size, seed=args.seed, bad=args.bad,
                                defect=args.defect))
    return 0


if __name__ == "__main__":
    sys.exit(main())
