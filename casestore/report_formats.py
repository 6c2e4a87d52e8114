"""The report (``casestore.reports.build``) as a table, CSV, JSON or one
self-contained HTML file (inline CSS and SVG; nothing is fetched)."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

import jinja2
from markupsafe import Markup

from casestore.reports import DURATION_KEYS, FIGURE_KEYS, FIGURES, LABELS

FORMATS = ("table", "csv", "json", "html")

# The columns of the per-group table on a terminal (CSV and HTML have them all).
TABLE_COLUMNS: tuple[tuple[str, str], ...] = (
    ("emails_received", "received"), ("cases_opened", "opened"), ("cases_closed", "closed"),
    ("closed_on_time", "on time"), ("closed_late", "late"), ("consulted_on_time", "cons ok"),
    ("consulted_late", "cons late"), ("surveys_answered", "surveys"), ("feedback_share", "share"),
    ("average_rating", "rating"), ("first_answer_median_seconds", "1st answer"),
    ("close_median_seconds", "to close"), ("cases_reopened", "reopened"), ("open_cases", "open"),
    ("overdue_cases", "overdue"),
)


def human_duration(seconds: float | None) -> str:
    """``2d 3h``, ``3h 20m``, ``45m``, ``30s``; ``-`` for none."""
    if seconds is None:
        return "-"
    s = round(seconds)
    days, rest = divmod(s, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    if minutes:
        return f"{minutes}m"
    return f"{secs}s"


def shown(key: str, value: Any) -> str:
    """A figure as a person reads it."""
    if value is None:
        return "-"
    if key in DURATION_KEYS:
        return human_duration(value)
    if key == "feedback_share":
        return f"{value * 100:.1f}%"
    if key == "average_rating":
        return f"{value:.2f}"
    return str(value)


def _groups(report: dict[str, Any], by: str) -> dict[str, dict[str, Any]]:
    return report.get(f"by_{by}", {})


def to_json(report: dict[str, Any]) -> str:
    return json.dumps(report, indent=2, ensure_ascii=False) + "\n"


def to_csv(report: dict[str, Any], by: str = "csr") -> str:
    """One row for everything (group ``(all)``), then one per group of ``by``;
    a column per figure, raw values (seconds, fractions)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([by, *FIGURE_KEYS])
    rows = [("(all)", report), *_groups(report, by).items()]
    for name, row in rows:
        writer.writerow([name, *("" if row.get(k) is None else row.get(k) for k in FIGURE_KEYS)])
    return out.getvalue()


def to_table(report: dict[str, Any], by: str = "csr") -> str:
    period = report["period"]
    lines = [f"Report {period['from']} to {period['to']}"
             + (f", pool {period['pool']}" if period.get("pool") else "")
             + f" (generated {report['generated']})", ""]
    width = max(len(label) for _, label, _ in FIGURES)
    for key, label, _ in FIGURES:
        lines.append(f"{label:<{width}}  {shown(key, report.get(key))}")
    groups = _groups(report, by)
    lines += ["", f"By {by}:"]
    header = [by, *(title for _, title in TABLE_COLUMNS)]
    body = [[name, *(shown(k, row.get(k)) for k, _ in TABLE_COLUMNS)] for name, row in groups.items()]
    widths = [max(len(str(r[i])) for r in [header, *body]) for i in range(len(header))]
    for r in [header, *body]:
        lines.append("  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w)
                               for i, (c, w) in enumerate(zip(r, widths, strict=True))).rstrip())
    overdue = report.get("overdue") or []
    if overdue:
        lines += ["", f"Overdue open cases ({report.get('overdue_cases', len(overdue))}):"]
        for o in overdue:
            lines.append(f"  ! {o['number']}  {o['csr']}  open {human_duration(o['age_seconds'])}  "
                         f"{'; '.join(o['reasons'])}  {o['subject']}")
    return "\n".join(lines) + "\n"


# -- HTML ------------------------------------------------------------------------------------

_ENV = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True,
                          lstrip_blocks=True)

_ICON = ('<svg class="icon" viewBox="0 0 16 16" width="16" height="16" aria-hidden="true">'
         '<path d="M8 1 L15.5 14.5 H0.5 Z" fill="#c62828"/>'
         '<rect x="7.2" y="5.5" width="1.6" height="5" fill="#fff"/>'
         '<rect x="7.2" y="11.6" width="1.6" height="1.6" fill="#fff"/></svg>')

_HTML = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>casegate report {{ period.from }} to {{ period.to }}</title>
<style>
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif;
       margin: 24px; color: #1d2330; background: #f6f7fb; }
h1 { font-size: 22px; margin: 0 0 4px; } h2 { font-size: 17px; margin: 28px 0 8px; }
.sub { color: #5a6270; margin-bottom: 18px; }
.cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(170px, 1fr)); gap: 10px; }
.card { background: #fff; border-radius: 8px; padding: 10px 12px; box-shadow: 0 1px 3px #0002; }
.card .v { font-size: 24px; font-weight: 600; } .card .l { font-size: 12px; color: #5a6270; }
.card.bad { border-left: 5px solid #c62828; } .card.good { border-left: 5px solid #2e7d32; }
table { border-collapse: collapse; background: #fff; box-shadow: 0 1px 3px #0002; font-size: 13px; }
th, td { padding: 5px 9px; border-bottom: 1px solid #e3e6ee; text-align: right; }
th { background: #e8ebf3; } td:first-child, th:first-child { text-align: left; white-space: nowrap; }
tr.overdue td { background: #fdecea; color: #8e1b1b; }
#overdue td, #overdue th { text-align: left; }
tr.overdue td:first-child { border-left: 5px solid #c62828; font-weight: 600; }
.icon { vertical-align: -3px; margin-right: 4px; }
.chart { background: #fff; box-shadow: 0 1px 3px #0002; border-radius: 8px; padding: 8px; }
.legend span { display: inline-block; width: 12px; height: 12px; margin: 0 4px 0 14px;
               vertical-align: -1px; }
dl { font-size: 12px; color: #3b4250; } dt { font-weight: 600; margin-top: 6px; } dd { margin-left: 14px; }
</style>
</head>
<body>
<h1>casegate report</h1>
<div class="sub">{{ period.from }} to {{ period.to }}{% if period.pool %}, pool {{ period.pool }}{% endif %}
 &middot; generated {{ generated }}</div>

<h2>Summary</h2>
<div class="cards" id="summary">
{% for key, label in cards %}
{% set tone = "bad" if key in bad and report[key] else "good" if key == "closed_on_time" else "" %}
<div class="card {{ tone }}" data-figure="{{ key }}">
<div class="v">{{ shown(key, report[key]) }}</div><div class="l">{{ label }}</div></div>
{% endfor %}
</div>

<h2>Received and closed per day</h2>
<div class="chart">
<div class="legend"><span style="background:#3566c9"></span>e-mails received
<span style="background:#2e9d5b"></span>cases closed</div>
{{ chart | safe }}
</div>

<h2>By CSR</h2>
{{ table(by_csr, "CSR") }}
{% if by != "csr" %}
<h2>By {{ by }}</h2>
{{ table(by_other, by) }}
{% endif %}

<h2>Overdue open cases ({{ report.overdue_cases }})</h2>
{% if overdue %}
<table id="overdue"><tr><th>case</th><th>subject</th><th>customer</th><th>CSR</th><th>pool</th>
<th>open for</th><th>why</th></tr>
{% for o in overdue %}
<tr class="overdue"><td>{{ icon | safe }}{{ o.number }}</td><td>{{ o.subject }}</td><td>{{ o.customer }}</td>
<td>{{ o.csr }}</td><td>{{ o.pool }}</td><td>{{ human_duration(o.age_seconds) }}</td>
<td>overdue: {{ o.reasons | join("; ") }}</td></tr>
{% endfor %}
</table>
{% if report.overdue_cases > overdue | length %}
<p>… and {{ report.overdue_cases - overdue | length }} more.</p>
{% endif %}
{% else %}
<p>None.</p>
{% endif %}

<h2>All figures</h2>
<table id="figures"><tr><th>figure</th><th>value</th></tr>
{% for key, label, _ in figures %}
<tr data-figure="{{ key }}"><td>{{ label }}</td><td>{{ shown(key, report[key]) }}</td></tr>
{% endfor %}
</table>

<h2>Definitions</h2>
<dl>
{% for key, label, definition in figures %}
<dt>{{ label | trim }} <code>{{ key }}</code></dt><dd>{{ definition }}</dd>
{% endfor %}
</dl>
</body>
</html>
"""

_TABLE = """<table class="groups"><tr><th>{{ title }}</th>
{% for _, head in columns %}<th>{{ head }}</th>{% endfor %}</tr>
{% for name, row in rows.items() %}
{% if row.get('overdue_cases') %}<tr class="overdue"><td>{{ icon | safe }}{{ name }}</td>
{% else %}<tr><td>{{ name }}</td>{% endif %}
{% for key, _ in columns %}<td>{{ shown(key, row.get(key)) }}</td>{% endfor %}</tr>
{% endfor %}
</table>"""

CARDS = ("emails_received", "cases_opened", "cases_closed", "closed_on_time", "closed_late",
         "consulted_on_time", "consulted_late", "surveys_answered", "feedback_share", "average_rating",
         "first_answer_median_seconds", "close_median_seconds", "cases_reopened", "open_cases",
         "overdue_cases")


def chart_svg(days: dict[str, dict[str, Any]], width: int = 960, height: int = 260) -> str:
    """Grouped bars, e-mails received and cases closed per day, as inline SVG."""
    left, bottom, top = 40, 34, 10
    names = list(days)
    peak = max([1, *(max(r.get("emails_received", 0), r.get("cases_closed", 0)) for r in days.values())])
    plot_w, plot_h = width - left - 10, height - bottom - top
    slot = plot_w / max(1, len(names))
    bar = max(1.0, slot * 0.38)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="100%" height="{height}" '
             f'viewBox="0 0 {width} {height}" role="img" aria-label="received and closed per day">']
    step = max(1, -(-peak // 5))
    for tick in range(0, peak + 1, step):
        y = top + plot_h - plot_h * tick / peak
        parts.append(f'<line x1="{left}" y1="{y:.1f}" x2="{width - 10}" y2="{y:.1f}" stroke="#e3e6ee"/>'
                     f'<text x="{left - 6}" y="{y + 4:.1f}" font-size="11" text-anchor="end" '
                     f'fill="#5a6270">{tick}</text>')
    every = max(1, len(names) // 15)
    for i, name in enumerate(names):
        row = days[name]
        x = left + i * slot + slot * 0.1
        for j, (key, colour) in enumerate((("emails_received", "#3566c9"), ("cases_closed", "#2e9d5b"))):
            value = row.get(key, 0)
            h = plot_h * value / peak
            parts.append(f'<rect x="{x + j * bar:.1f}" y="{top + plot_h - h:.1f}" width="{bar:.1f}" '
                         f'height="{h:.1f}" fill="{colour}">'
                         f'<title>{name} {LABELS[key]}: {value}</title></rect>')
        if i % every == 0:
            parts.append(f'<text x="{x + bar:.1f}" y="{height - bottom + 16}" font-size="10" '
                         f'text-anchor="middle" fill="#5a6270">{name[5:]}</text>')
    parts.append(f'<line x1="{left}" y1="{top + plot_h}" x2="{width - 10}" y2="{top + plot_h}" '
                 'stroke="#8a92a3"/></svg>')
    return "".join(parts)


def to_html(report: dict[str, Any], by: str = "csr") -> str:
    def table(rows: dict[str, dict[str, Any]], title: str) -> Markup:
        return Markup(_ENV.from_string(_TABLE).render(
            rows=rows, title=title, columns=TABLE_COLUMNS, shown=shown, icon=_ICON))

    return _ENV.from_string(_HTML).render(
        report=report, period=report["period"], generated=report["generated"], by=by,
        cards=[(k, LABELS[k]) for k in CARDS], figures=FIGURES, shown=shown,
        human_duration=human_duration, chart=chart_svg(report.get("by_day", {})),
        by_csr=report.get("by_csr", {}), by_other=_groups(report, by), table=table,
        overdue=report.get("overdue") or [], icon=_ICON,
        bad=("closed_late", "consulted_late", "overdue_cases"))


def render(report: dict[str, Any], fmt: str, by: str = "csr") -> str:
    if fmt == "json":
        return to_json(report)
    if fmt == "csv":
        return to_csv(report, by)
    if fmt == "html":
        return to_html(report, by)
    return to_table(report, by)
