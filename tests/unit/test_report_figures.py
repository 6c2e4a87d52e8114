"""The report's figures defined once: the definitions in docs/reports.md are
the code's (casestore.reports.FIGURES), and the small pure helpers."""

from __future__ import annotations

from pathlib import Path

import pytest

from casestore.report_formats import human_duration, shown
from casestore.reports import FIGURE_KEYS, FIGURES, Period, _Acc, default_period, figures, parse_day

DOC = Path(__file__).resolve().parents[2] / "docs" / "reports.md"


def test_the_docs_define_every_figure_as_the_code_does() -> None:
    rows = {}
    section = DOC.read_text().split("\n## The figures\n", 1)[1].split("\n## ", 1)[0]
    for line in section.splitlines():
        if line.startswith("| `"):
            cells = [c.strip() for c in line.strip("|").split(" | ")]
            rows[cells[0].strip("`")] = (cells[1], cells[2])
    assert list(rows) == list(FIGURE_KEYS)
    for key, label, definition in FIGURES:
        assert rows[key] == (label.strip(), definition.replace("|", "/")), key


def test_figures_of_an_accumulator() -> None:
    acc = _Acc(counts={"cases_closed": 4, "closed_on_time_consulted": 1, "closed_on_time_not_consulted": 2,
                       "closed_late_not_consulted": 1, "surveys_answered": 3, "backlog_1d_3d": 2,
                       "backlog_over_30d": 1},
               rating_sum=10, first_answer=[60, 3600, 120], close=[10.5])
    row = figures(acc)
    assert (row["closed_on_time"], row["closed_late"], row["open_cases"]) == (3, 1, 3)
    assert (row["feedback_share"], row["average_rating"]) == (0.75, 3.33)
    assert (row["first_answer_median_seconds"], row["close_p90_seconds"]) == (120, 10.5)
    empty = figures(_Acc())
    assert empty["feedback_share"] is None and empty["average_rating"] is None
    assert empty["close_median_seconds"] is None and empty["cases_closed"] == 0


@pytest.mark.parametrize("seconds,text", [(None, "-"), (0, "0s"), (45, "45s"), (60, "1m"), (7200, "2h 0m"),
                                          (12000, "3h 20m"), (86400, "1d 0h"), (1086480, "12d 13h")])
def test_human_duration(seconds, text) -> None:
    assert human_duration(seconds) == text


def test_shown() -> None:
    assert shown("feedback_share", 0.6) == "60.0%" and shown("average_rating", 3.5) == "3.50"
    assert shown("cases_closed", 7) == "7" and shown("average_rating", None) == "-"


def test_periods() -> None:
    import datetime as dt

    assert parse_day(" 2026-11-30 ") == dt.date(2026, 11, 30)
    with pytest.raises(ValueError, match="use YYYY-MM-DD"):
        parse_day("30.11.2026")
    p = default_period(dt.date(2026, 12, 1), None, None)
    assert (p.first, p.last, len(p.days())) == (dt.date(2026, 11, 2), dt.date(2026, 12, 1), 30)
    assert (p.start.isoformat(), p.end.isoformat()) == ("2026-11-02T00:00:00", "2026-12-02T00:00:00")
    with pytest.raises(ValueError, match=r"ends .* before it starts"):
        Period(dt.date(2026, 12, 1), dt.date(2026, 11, 1))
