"""`casegate report` on a scripted month (issue 11 §1): cases built through
the real engine on real stores (a SQLite file, a PostgreSQL database) with a
fake clock, and every figure checked exactly in the table, CSV, JSON and
HTML outputs of the click command. The HTML is also rendered in headless
Chromium: the screenshot is not blank and the page shows the month's figures.

The month (November 2026; the report runs on 1 December 09:00; pool
``default`` of support@ has a 2-day resolution target, ``billing`` none):

====  ===========================  ==========================================================
case  opened                       life
====  ===========================  ==========================================================
J     Oct 20 09:00 support         never answered (open 42 days: overdue)
A     Oct 31 10:00 support         answered Nov 1, closed Nov 2; the customer writes Nov 16
                                   (reopened), answered, closed Nov 17 (late: 16d 23h)
B     Nov 3 09:00 support          answered +1h, legal consulted 11:00 and answers 15:00
                                   (on time), closed Nov 4 (on time, consulted), rated 5
C     Nov 5 09:00 support          answered +24h, the customer writes again, closed Nov 9
                                   (late, not consulted), rated 2
D     Nov 10 09:00 support         answered +3h, legal consulted 13:00 and answers Nov 12
                                   (late), closed Nov 13 (late, consulted)
E     Nov 14 09:00 billing (Bob)   answered +30m, closed Nov 20 (no target: on time), rated 4
F     Nov 20 09:00 support         legal consulted, never answers (late); open, overdue
G     Nov 27 15:00 support         legal consulted Nov 30 20:30 (pending); open, overdue
K     Nov 29 09:00 billing (Bob)   open
H     Nov 30 20:00 billing (Bob)   open
I     Dec 1 08:00 support          after the period; open
====  ===========================  ==========================================================
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import os
import re
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import pytest
from click.testing import CliRunner

import cli
from casestore.models import Case, Message
from casestore.reports import FIGURE_KEYS, Period, build, percentile
from casestore.store import Store
from rules import replies
from rules.classify import parse_networks
from smtpd_hook.engine import Delivery, Engine
from smtpd_hook.settings import Settings
from tests.support.clock import Clock
from tests.support.mail import make, parse

SECRET = b"r" * 32
SUPPORT, BILLING = "support@example.com", "billing@example.com"
JANE, BOB = "jane@example.com", "bob@example.com"
LEGAL = "legal@example.com"
NOW = dt.datetime(2026, 12, 1, 9, 0, tzinfo=dt.UTC)
DAY, HOUR = 86400, 3600


class Month:
    """Drives the engine as customers, CSRs and a department would, by mail."""

    def __init__(self, engine: Engine, clock: Clock) -> None:
        self.engine, self.clock = engine, clock
        self.qid = 0

    def at(self, month: int, day: int, hour: int, minute: int = 0) -> None:
        self.clock.now = dt.datetime(2026, month, day, hour, minute, tzinfo=dt.UTC)

    def _deliver(self, raw: bytes, *, mail_from: str, rcpt: str, client: str,
                 number: str | None = None) -> None:
        """Deliver and check the 250 names the case (``number``, or the newest)."""
        self.qid += 1
        reply = self.engine.process(Delivery(mail_from=mail_from, rcpt_tos=(rcpt,), data=raw,
                                             client_addr=client, queue_id=f"R{self.qid}"))
        number = number or Case.select().order_by(Case.id.desc()).get().number
        assert reply == replies.stored(number), reply

    @staticmethod
    def _plus(case: Case) -> str:
        local, _, domain = case.mailbox.address.partition("@")
        return f"{local}+{case.number}@{domain}"

    def opens(self, mailbox: str, customer: str, subject: str) -> Case:
        self._deliver(make(from_=customer, to=mailbox, subject=f"test_reports {subject}"),
                      mail_from=customer, rcpt=mailbox, client="127.0.0.2")
        return Case.select().order_by(Case.id.desc()).get()

    def customer(self, case: Case, body: str) -> None:
        last = (Message.select().where((Message.case == case) & (Message.direction == "out")
                                       & (Message.recipients == case.customer_address))
                .order_by(Message.id.desc()).get())
        raw = make(from_=case.customer_address, to=self._plus(case), body=body,
                   subject=f"Re: [Case #{case.number}] {case.subject}",
                   in_reply_to=last.message_id, references=[last.message_id])
        self._deliver(raw, mail_from=case.customer_address, rcpt=self._plus(case), client="127.0.0.2",
                      number=case.number)

    def csr(self, case: Case, body: str, csr: str = JANE) -> None:
        raw = make(from_=csr, to=self._plus(case), body=body,
                   subject=f"Re: [Case #{case.number}] {case.subject}")
        self._deliver(raw, mail_from=csr, rcpt=self._plus(case), client="127.0.0.1", number=case.number)

    def legal_answers(self, case: Case, body: str) -> None:
        ask = (Message.select().where((Message.case == case) & (Message.kind == "consult"))
               .order_by(Message.id.desc()).get())
        reply_to = str(parse(bytes(ask.raw))["Reply-To"])
        raw = make(from_=LEGAL, to=reply_to, subject="Re: " + ask.subject, body=body,
                   in_reply_to=ask.message_id, references=[ask.message_id])
        self._deliver(raw, mail_from=LEGAL, rcpt=reply_to, client="127.0.0.1", number=case.number)


def scripted_month(url: str, clock: Clock) -> dict[str, str]:
    """Builds the month of the module's docstring; returns case letter -> number."""
    store = Store(url, clock=clock)
    store.migrate()
    store.add_mailbox(SUPPORT, "default", "Example Support")
    store.add_mailbox(BILLING, "billing", "Example Billing")
    store.add_csr(JANE, "Jane Doe", ["default"])
    store.add_csr(BOB, "Bob Roe", ["billing"])
    store.set_pool("default", resolve_within=2 * DAY, remind_after=None, autoclose_after=None)
    store.set_pool("billing", remind_after=None, autoclose_after=None)
    store.add_department("legal", LEGAL, DAY)
    m = Month(Engine(store, Settings(secret=SECRET, trusted_networks=parse_networks(["127.0.0.1/32"]))),
              clock)
    n: dict[str, Case] = {}
    m.at(10, 20, 9)
    n["J"] = m.opens(SUPPORT, "j@customer.test", "J")
    m.at(10, 31, 10)
    n["A"] = a = m.opens(SUPPORT, "a@customer.test", "A")
    m.at(11, 1, 9)
    m.csr(a, "Please restart it.\n")
    m.at(11, 2, 9)
    m.csr(a, "#close\n")
    m.at(11, 3, 9)
    n["B"] = b = m.opens(SUPPORT, "b@customer.test", "B")
    m.at(11, 3, 10)
    m.csr(b, "Looking into it.\n")
    m.at(11, 3, 11)
    m.csr(b, "#consult legal\nMay we refund?\n")
    m.at(11, 3, 15)
    m.legal_answers(b, "Yes.\n")
    m.at(11, 4, 9)
    m.csr(b, "#close\n")
    m.at(11, 4, 12)
    m.customer(b, "5\n")
    m.at(11, 5, 9)
    n["C"] = c = m.opens(SUPPORT, "c@customer.test", "C")
    m.at(11, 6, 9)
    m.csr(c, "Which model?\n")
    m.at(11, 6, 9, 30)
    m.customer(c, "Model 42.\n")
    m.at(11, 9, 9)
    m.csr(c, "#close\n")
    m.at(11, 9, 10)
    m.customer(c, "2\n")
    m.at(11, 10, 9)
    n["D"] = d = m.opens(SUPPORT, "d@customer.test", "D")
    m.at(11, 10, 12)
    m.csr(d, "Checking.\n")
    m.at(11, 10, 13)
    m.csr(d, "#consult legal\nMay we replace it?\n")
    m.at(11, 12, 9)
    m.legal_answers(d, "Yes, late but yes.\n")
    m.at(11, 13, 9)
    m.csr(d, "#close\n")
    m.at(11, 14, 9)
    n["E"] = e = m.opens(BILLING, "e@customer.test", "E")
    m.at(11, 14, 9, 30)
    m.csr(e, "Invoice corrected.\n", csr=BOB)
    m.at(11, 16, 9)
    m.customer(a, "It broke again.\n")
    m.at(11, 16, 10)
    m.csr(a, "Try the other cable.\n")
    m.at(11, 17, 9)
    m.csr(a, "#close\n")
    m.at(11, 20, 9)
    m.csr(e, "#close\n", csr=BOB)
    n["F"] = f = m.opens(SUPPORT, "f@customer.test", "F")
    m.at(11, 20, 10)
    m.csr(f, "#consult legal\nIs this covered?\n")
    m.at(11, 20, 11)
    m.customer(e, "4\n")
    m.at(11, 27, 15)
    n["G"] = g = m.opens(SUPPORT, "g@customer.test", "G")
    m.at(11, 29, 9)
    n["K"] = m.opens(BILLING, "k@customer.test", "K")
    m.at(11, 30, 20)
    n["H"] = m.opens(BILLING, "h@customer.test", "H")
    m.at(11, 30, 20, 30)
    m.csr(g, "#consult legal\nAny objection?\n")
    m.at(12, 1, 8)
    n["I"] = m.opens(SUPPORT, "i@customer.test", "I")
    clock.now = NOW
    numbers = {k: Case.get_by_id(v.id).number for k, v in n.items()}
    statuses = {k: Case.get_by_id(v.id).status for k, v in n.items()}
    assert statuses == {"J": "received", "A": "closed", "B": "closed", "C": "closed", "D": "closed",
                        "E": "closed", "F": "under_consultation", "G": "under_consultation",
                        "K": "received", "H": "received", "I": "received"}, statuses
    assert [Case.get_by_id(v.id).rating for v in (b, c, e)] == [5, 2, 4]
    store.close()
    return numbers


def _zero() -> dict[str, object]:
    return dict.fromkeys(FIGURE_KEYS, 0)


def expected() -> dict[str, dict[str, object]]:
    """The month's figures, worked out by hand from the table above."""
    total = _zero() | {
        "emails_received": 10, "cases_opened": 8, "cases_closed": 5,
        "closed_on_time": 2, "closed_on_time_not_consulted": 1, "closed_on_time_consulted": 1,
        "closed_late": 3, "closed_late_not_consulted": 2, "closed_late_consulted": 1,
        "closed_without_target": 1,
        "consulted_on_time": 1, "consulted_late": 2, "consultations_pending": 1,
        "surveys_answered": 3, "feedback_share": 0.6, "average_rating": 3.67,
        # first answers B 1h, C 24h, D 3h, E 30m
        "first_answer_median_seconds": 7200, "first_answer_p90_seconds": 63720,
        # to close A 16d23h, B 1d, C 4d, D 3d, E 6d
        "close_median_seconds": 4 * DAY, "close_p90_seconds": 1086480,
        "cases_reopened": 1,
        "open_cases": 6, "backlog_under_1d": 2, "backlog_1d_3d": 1, "backlog_3d_7d": 1,
        "backlog_7d_30d": 1, "backlog_over_30d": 1, "overdue_cases": 3,
    }
    jane = _zero() | {
        "emails_received": 7, "cases_opened": 5, "cases_closed": 4,
        "closed_on_time": 1, "closed_on_time_consulted": 1,
        "closed_late": 3, "closed_late_not_consulted": 2, "closed_late_consulted": 1,
        "consulted_on_time": 1, "consulted_late": 2, "consultations_pending": 1,
        "surveys_answered": 2, "feedback_share": 0.5, "average_rating": 3.5,
        "first_answer_median_seconds": 3 * HOUR, "first_answer_p90_seconds": 71280,
        "close_median_seconds": 302400, "close_p90_seconds": 1129320,
        "cases_reopened": 1,
        "open_cases": 4, "backlog_under_1d": 1, "backlog_3d_7d": 1, "backlog_7d_30d": 1,
        "backlog_over_30d": 1, "overdue_cases": 3,
    }
    bob = _zero() | {
        "emails_received": 3, "cases_opened": 3, "cases_closed": 1,
        "closed_on_time": 1, "closed_on_time_not_consulted": 1, "closed_without_target": 1,
        "surveys_answered": 1, "feedback_share": 1.0, "average_rating": 4.0,
        "first_answer_median_seconds": 1800, "first_answer_p90_seconds": 1800,
        "close_median_seconds": 6 * DAY, "close_p90_seconds": 6 * DAY,
        "open_cases": 2, "backlog_under_1d": 1, "backlog_1d_3d": 1,
    }
    for row in (total, jane, bob):
        for key in ("feedback_share", "average_rating", "first_answer_median_seconds",
                    "first_answer_p90_seconds", "close_median_seconds", "close_p90_seconds"):
            row.setdefault(key, None)
            if row[key] == 0:
                row[key] = None
    return {"total": total, JANE: jane, BOB: bob}


EMAILS_BY_DAY = {"2026-11-03": 1, "2026-11-05": 1, "2026-11-06": 1, "2026-11-10": 1, "2026-11-14": 1,
                 "2026-11-16": 1, "2026-11-20": 1, "2026-11-27": 1, "2026-11-29": 1, "2026-11-30": 1}
CLOSED_BY_DAY = {"2026-11-04": 1, "2026-11-09": 1, "2026-11-13": 1, "2026-11-17": 1, "2026-11-20": 1}


@pytest.fixture
def month(store_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    clock = Clock()
    numbers = scripted_month(store_url, clock)
    # The CLI's store runs on the same fake clock ("now" is 1 December 09:00).
    monkeypatch.setattr(cli, "Store", lambda url, **kw: Store(url, clock=clock, **kw))
    runner = CliRunner()
    base = ["--config", str(tmp_path / "casegate.toml"), "--store", store_url]
    assert runner.invoke(cli.main, [*base, "init"], catch_exceptions=False).exit_code == 0

    def run(*args: str) -> str:
        result = runner.invoke(cli.main, [*base, "report", "--from", "2026-11-01", "--to", "2026-11-30",
                                          *args], catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return result.output

    return numbers, run


def _figures(row: dict[str, object]) -> dict[str, object]:
    return {k: row[k] for k in FIGURE_KEYS}


def test_scripted_month_json(month) -> None:
    numbers, run = month
    report = json.loads(run("--format", "json"))
    want = expected()
    assert report["period"] == {"from": "2026-11-01", "to": "2026-11-30", "pool": None}
    assert report["generated"] == "2026-12-01T09:00:00+00:00"
    assert _figures(report) == want["total"]
    assert sorted(report["by_csr"]) == [BOB, JANE]
    assert _figures(report["by_csr"][JANE]) == want[JANE]
    assert _figures(report["by_csr"][BOB]) == want[BOB]
    assert {k: _figures(v) for k, v in report["by_pool"].items()} == {
        "default": want[JANE], "billing": want[BOB]}
    days = report["by_day"]
    assert list(days) == [f"2026-11-{d:02d}" for d in range(1, 31)]
    assert {d: r["emails_received"] for d, r in days.items() if r["emails_received"]} == EMAILS_BY_DAY
    assert {d: r["cases_closed"] for d, r in days.items() if r["cases_closed"]} == CLOSED_BY_DAY
    assert {d: r["cases_reopened"] for d, r in days.items() if r["cases_reopened"]} == {"2026-11-16": 1}
    assert days["2026-11-04"]["surveys_answered"] == 1 and days["2026-11-04"]["average_rating"] == 5.0
    assert "open_cases" not in days["2026-11-04"]  # a snapshot has no day
    assert list(report["by_product"]) == ["(none)"]  # no case of the month has a product
    assert report["by_product"]["(none)"]["cases_opened"] == report["cases_opened"]
    assert [(o["number"], o["csr"], o["reasons"]) for o in report["overdue"]] == [
        (numbers["J"], JANE, ["past the resolution target"]),
        (numbers["F"], JANE, ["past the resolution target", "consultation past its deadline"]),
        (numbers["G"], JANE, ["past the resolution target"])]
    assert report["overdue"][1]["age_seconds"] == 11 * DAY
    # One pool only: billing is Bob's.
    billing = json.loads(run("--format", "json", "--pool", "billing"))
    assert _figures(billing) == want[BOB] and list(billing["by_csr"]) == [BOB]
    assert billing["overdue"] == []


def test_scripted_month_csv(month) -> None:
    _, run = month
    rows = list(csv.DictReader(io.StringIO(run("--format", "csv"))))
    want = expected()
    by_name = {r.pop("csr"): r for r in rows}
    assert list(by_name) == ["(all)", BOB, JANE]
    for name, key in (("(all)", "total"), (JANE, JANE), (BOB, BOB)):
        assert by_name[name] == {k: "" if v is None else str(v) for k, v in want[key].items()}, name
    days = list(csv.DictReader(io.StringIO(run("--format", "csv", "--by", "day"))))
    assert len(days) == 31 and days[0]["day"] == "(all)"
    assert {r["day"]: int(r["emails_received"]) for r in days[1:] if r["emails_received"] != "0"} == EMAILS_BY_DAY


def test_scripted_month_table(month) -> None:
    _, run = month
    text = run()
    lines = {re.split(r"\s{2,}", line.strip())[0]: re.split(r"\s{2,}", line.strip())[-1]
             for line in text.splitlines() if line.strip()}
    assert text.startswith("Report 2026-11-01 to 2026-11-30")
    assert (lines["E-mails received"], lines["Cases opened"], lines["Cases closed"]) == ("10", "8", "5")
    assert (lines["Closed on time"], lines["on time, without consulting"], lines["on time, with consulting"],
            lines["Closed past the deadline"], lines["late, without consulting"],
            lines["late, with consulting"]) == ("2", "1", "1", "3", "2", "1")
    assert (lines["Consultations answered on time"], lines["Consultations past the deadline"],
            lines["Consultations pending"]) == ("1", "2", "1")
    assert (lines["Surveys answered"], lines["Feedback share"], lines["Average rating"]) == ("3", "60.0%", "3.67")
    assert (lines["Time to first answer, median"], lines["Time to first answer, 90th percentile"],
            lines["Time to close, median"], lines["Time to close, 90th percentile"]) == (
        "2h 0m", "17h 42m", "4d 0h", "12d 13h")
    assert (lines["Reopenings"], lines["Open backlog"], lines["Overdue open cases"]) == ("1", "6", "3")
    jane = next(line for line in text.splitlines() if line.startswith(JANE)).split()
    assert jane == [JANE, "7", "5", "4", "1", "3", "1", "2", "2", "50.0%", "3.50", "3h", "0m", "3d", "12h",
                    "1", "4", "3"]
    assert sum(line.strip().startswith("! CS") for line in text.splitlines()) == 3


def _cards(page: str) -> dict[str, str]:
    return dict(re.findall(r'data-figure="(\w+)">\s*<div class="v">([^<]*)</div>', page))


def test_scripted_month_html(month, tmp_path: Path) -> None:
    numbers, run = month
    out = tmp_path / "report.html"
    run("--format", "html", "--output", str(out))
    page = out.read_text()
    assert _cards(page) == {
        "emails_received": "10", "cases_opened": "8", "cases_closed": "5", "closed_on_time": "2",
        "closed_late": "3", "consulted_on_time": "1", "consulted_late": "2", "surveys_answered": "3",
        "feedback_share": "60.0%", "average_rating": "3.67", "first_answer_median_seconds": "2h 0m",
        "close_median_seconds": "4d 0h", "cases_reopened": "1", "open_cases": "6", "overdue_cases": "3"}
    assert len(re.findall(r'<tr class="overdue"><td><svg class="icon"', page)) == 4  # 3 cases + Jane's row
    for letter in "JFG":
        assert f"{numbers[letter]}</td>" in page
    # Self-contained: nothing to fetch.
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page) and "@import" not in page
    assert page.count("<svg") >= 5 and 'fill="#3566c9"' in page


# -- headless Chromium ------------------------------------------------------------------------------


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _chromium_reason() -> str | None:
    if chromium():
        return None
    if os.geteuid() == 0:
        return None  # scripts/test installs it; a root run without it fails below, loudly
    return "chromium missing and not root (apt-get install chromium, or run scripts/test as root)"


def _headless(*args: str, timeout: int = 90) -> subprocess.CompletedProcess[str]:
    browser = chromium()
    assert browser, "chromium is not installed: run scripts/test as root, or apt-get install chromium"
    return subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                           "--no-first-run", "--disable-dev-shm-usage", *args],
                          capture_output=True, text=True, timeout=timeout, check=False)


def png_pixels(path: Path) -> tuple[int, int, list[bytes]]:
    """Width, height and the RGB(A) rows of an 8-bit PNG (what Chromium writes), with the
    standard library only."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, header = 8, b"", b""
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        chunk = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            header = chunk
        elif kind == b"IDAT":
            idat += chunk
        pos += 12 + length
    width, height, depth, colour = struct.unpack(">IIBB", header[:10])
    assert depth == 8 and colour in (2, 6), (depth, colour)
    bpp = 3 if colour == 2 else 4
    raw = zlib.decompress(idat)
    stride = width * bpp
    rows, prev = [], bytearray(stride)
    for y in range(height):
        f = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b, c = prev[i], prev[i - bpp] if i >= bpp else 0
            if f == 1:
                line[i] = (line[i] + a) & 0xFF
            elif f == 2:
                line[i] = (line[i] + b) & 0xFF
            elif f == 3:
                line[i] = (line[i] + (a + b) // 2) & 0xFF
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 0xFF
        rows.append(bytes(line))
        prev = line
    return width, height, [bytes(r[i] for i in range(len(r)) if i % bpp != 3) for r in rows]


@pytest.mark.skipif(_chromium_reason() is not None, reason=_chromium_reason() or "")
def test_html_report_in_headless_chromium(sqlite_url: str, tmp_path: Path, monkeypatch) -> None:
    clock = Clock()
    numbers = scripted_month(sqlite_url, clock)
    store = Store(sqlite_url, clock=clock)
    report = build(store, Period(dt.date(2026, 11, 1), dt.date(2026, 11, 30)))
    store.close()
    from casestore.report_formats import to_html

    page = tmp_path / "report.html"
    page.write_text(to_html(report))
    shot = tmp_path / "report.png"
    done = _headless(f"--screenshot={shot}", "--window-size=1280,1400", page.as_uri())
    assert shot.exists(), done.stderr[-2000:]
    width, height, rows = png_pixels(shot)
    assert (width, height) == (1280, 1400)
    values = [v for row in rows[::4] for v in row[::12]]
    mean = sum(values) / len(values)
    variance = sum((v - mean) ** 2 for v in values) / len(values)
    assert variance > 200, f"the screenshot looks blank (pixel variance {variance:.1f})"
    # Red of the overdue rows and blue of the chart's bars are on screen.
    colours = {bytes(row[i:i + 3]) for row in rows[::2] for i in range(0, len(row) - 2, 6)}
    assert any(r > 180 and g < 80 and b < 80 for r, g, b in colours), "no overdue red on the page"
    assert any(b > 150 and r < 90 and 80 < g < 130 for r, g, b in colours), "no chart blue on the page"
    dom = _headless("--dump-dom", page.as_uri()).stdout
    assert _cards(dom)["emails_received"] == "10" and _cards(dom)["overdue_cases"] == "3"
    assert _cards(dom)["average_rating"] == "3.67" and _cards(dom)["feedback_share"] == "60.0%"
    for letter in "JFG":
        assert numbers[letter] in dom


def test_percentile_is_postgresql_percentile_cont() -> None:
    """percentile_cont: linear interpolation between the closest ranks."""
    for values, q, want in (([], 0.5, None), ([7], 0.9, 7), ([1, 2], 0.5, 1.5), ([4, 1, 3, 2], 0.5, 2.5),
                            ([1, 2, 3, 4, 5], 0.9, 4.6), ([10, 20, 30, 40], 0.9, 37.0),
                            ([1800, 3600, 10800, 86400], 0.9, 63720.0)):
        got = percentile(values, q)
        assert (got is None and want is None) or abs(got - want) < 1e-9, (values, q, got)


def test_report_refusals_say_what_to_give(tmp_path: Path) -> None:
    runner = CliRunner()
    base = ["--config", str(tmp_path / "casegate.toml"), "--store", f"sqlite:///{tmp_path / 'c.db'}"]
    assert runner.invoke(cli.main, [*base, "init"]).exit_code == 0
    assert runner.invoke(cli.main, [*base, "mailbox", "add", SUPPORT]).exit_code == 0
    for args, code, message in (
            (["--from", "30.11.2026"], 2, "not a date: '30.11.2026' (use YYYY-MM-DD"),
            (["--from", "2026-12-01", "--to", "2026-11-01"], 2, "ends (2026-11-01) before it starts"),
            (["--pool", "nosuch"], 1, "no pool named 'nosuch' (pools: default)"),
            (["--format", "pdf"], 2, "'pdf' is not one of"),
            (["--output", str(tmp_path / "no" / "such" / "r.html")], 1, "cannot write")):
        result = runner.invoke(cli.main, [*base, "report", *args])
        assert result.exit_code == code and message in result.output, (args, result.output)
    # An empty store reports zeros and nulls, and --output writes the file (quiet on stdout).
    out = tmp_path / "r.json"
    result = runner.invoke(cli.main, [*base, "report", "--format", "json", "--output", str(out)])
    assert result.exit_code == 0 and result.stdout == "", result.output
    empty = json.loads(out.read_text())
    assert empty["cases_closed"] == 0 and empty["feedback_share"] is None and empty["by_csr"] == {}
    assert len(empty["by_day"]) == 30 and empty["overdue"] == []


def test_by_product(sqlite_url: str) -> None:
    """Cases grouped by their product (intake: from the mailbox or a subject
    keyword); a case with none counts under "(none)"."""
    from casestore.report_formats import to_csv
    from casestore.reports import product_column

    clock = Clock(dt.datetime(2026, 11, 10, 9, 0, tzinfo=dt.UTC))
    store = Store(sqlite_url, clock=clock)
    store.migrate()
    box = store.add_mailbox(SUPPORT, "default")
    store.add_csr(JANE, "Jane Doe", ["default"])
    store.add_product("router", keywords=["RT-100"])
    try:
        assert product_column(store) is not None
        for n, product in enumerate(["router", "router", ""]):
            case = store.new_case(mailbox=box, prefix="CS", customer_address=f"c{n}@customer.test",
                                  customer_name="", subject=f"s{n}")
            Case.update(product=product).where(Case.id == case.id).execute()
        clock.advance(hours=5)
        Case.update(status="closed", closed=store.now()).where(Case.subject == "s0").execute()
        report = build(store, Period(dt.date(2026, 11, 1), dt.date(2026, 11, 30)))
        assert {k: (v["cases_opened"], v["cases_closed"], v["open_cases"])
                for k, v in report["by_product"].items()} == {"router": (2, 1, 1), "(none)": (1, 0, 1)}
        assert report["by_product"]["router"]["close_median_seconds"] == 5 * HOUR
        rows = list(csv.DictReader(io.StringIO(to_csv(report, "product"))))
        assert [(r["product"], r["cases_opened"]) for r in rows] == [("(all)", "3"), ("(none)", "1"),
                                                                      ("router", "2")]
    finally:
        store.close()
