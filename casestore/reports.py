"""Reports: how the service centre and each CSR perform over a period.

Every figure is defined once: in :data:`FIGURES` (the key, the label and the
definition that ``docs/reports.md`` repeats word for word) and in the
docstring of the function that computes it. The facts come from the store's
own rows, never from a counter kept aside:

* ``message``: customer mail in (``direction = 'in'``, ``kind = 'customer'``);
  our answers out (``kind`` ``reply`` or ``solution``);
* ``support_case``: ``created``, ``closed`` (the last close; NULL while open),
  ``status``, ``rating``, ``assignee``;
* ``consultation``: ``asked``, ``due``, ``answered``;
* ``event``: status changes (``kind = 'status'``, detail ``"closed -> …"``);
* ``pool.resolve_within``: the resolution target (``pool set --resolve-within``).

A period is whole UTC days, ``--from`` and ``--to`` both included. Each fact
counts in the period of its own timestamp (a customer's mail when it arrived,
a case when it opened or when it closed …). A case counts for the CSR it is
assigned to when the report runs (``(unassigned)`` when nobody), and for the
pool of its mailbox. The open backlog and the overdue cases are a snapshot at
the time the report runs, whatever the period.

The counting is done in SQL (one grouped query per fact, by CSR, pool, day
and product at once, with the indexes of migration 0012); the durations
(first answer, closing) stream one number per case and their percentiles are
computed here, so one code path serves SQLite and PostgreSQL.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import peewee
from peewee import JOIN, SQL, fn

from casestore.models import Case, Consultation, Csr, Event, Mailbox, Message, Pool
from casestore.store import Store, StoreError, aware
from rules.vocab import OPEN_STATUSES

UNASSIGNED = "(unassigned)"
NO_PRODUCT = "(none)"
OVERDUE_LIST_LIMIT = 500  # overdue cases listed by name (the count is always whole)

# The open backlog's age buckets: (key, lower bound in days, upper bound in days or None).
BACKLOG_BUCKETS: tuple[tuple[str, int, int | None], ...] = (
    ("backlog_under_1d", 0, 1),
    ("backlog_1d_3d", 1, 3),
    ("backlog_3d_7d", 3, 7),
    ("backlog_7d_30d", 7, 30),
    ("backlog_over_30d", 30, None),
)

# key, label, definition. The order is the order of the table, CSV and HTML.
FIGURES: tuple[tuple[str, str, str], ...] = (
    ("emails_received", "E-mails received",
     "Customer messages stored in the period: mail from a customer to a supervised address, "
     "new cases and follow-ups alike (not CSR, department, automatic mail, bounces or survey answers)."),
    ("cases_opened", "Cases opened", "Cases created in the period (by a customer's mail or by a CSR)."),
    ("cases_closed", "Cases closed",
     "Cases closed now whose last closing falls in the period (a case reopened and closed "
     "again counts once, when it closed last)."),
    ("closed_on_time", "Closed on time",
     "Closed cases whose time from opening to closing is within their pool's resolution target "
     "(`pool set --resolve-within`); a case of a pool without a target is on time."),
    ("closed_on_time_not_consulted", "  on time, without consulting",
     "Closed on time, and no department was ever consulted on the case."),
    ("closed_on_time_consulted", "  on time, with consulting",
     "Closed on time, and at least one department was consulted on the case."),
    ("closed_late", "Closed past the deadline",
     "Closed cases whose time from opening to closing exceeds their pool's resolution target."),
    ("closed_late_not_consulted", "  late, without consulting",
     "Closed past the deadline, and no department was consulted."),
    ("closed_late_consulted", "  late, with consulting",
     "Closed past the deadline, and at least one department was consulted."),
    ("closed_without_target", "Closed without a target",
     "Closed cases of pools without a resolution target (counted on time too)."),
    ("consulted_on_time", "Consultations answered on time",
     "Consultations asked in the period that the department answered by its deadline."),
    ("consulted_late", "Consultations past the deadline",
     "Consultations asked in the period that were answered after the department's deadline, "
     "or are still unanswered with the deadline passed."),
    ("consultations_pending", "Consultations pending",
     "Consultations asked in the period, unanswered, deadline not yet reached."),
    ("surveys_answered", "Surveys answered",
     "Cases closed in the period that the customer rated (the survey's 1–5 grade)."),
    ("feedback_share", "Feedback share",
     "surveys_answered / cases_closed, a fraction from 0 to 1 (empty when nothing closed)."),
    ("average_rating", "Average rating",
     "The mean grade of the surveys answered, 1–5 (empty when none)."),
    ("first_answer_median_seconds", "Time to first answer, median",
     "For cases opened in the period and answered: seconds from opening to our first answer "
     "to the customer (a CSR's reply or proposed solution); the median."),
    ("first_answer_p90_seconds", "Time to first answer, 90th percentile",
     "The same durations, 90th percentile (linear interpolation, as PostgreSQL's percentile_cont)."),
    ("close_median_seconds", "Time to close, median",
     "For cases closed in the period: seconds from opening to the last closing; the median."),
    ("close_p90_seconds", "Time to close, 90th percentile", "The same durations, 90th percentile."),
    ("cases_reopened", "Reopenings",
     "Times a closed case was reopened in the period (the customer's mail, #reopen, `case reopen`); "
     "a case reopened twice counts twice."),
    ("open_cases", "Open backlog", "Cases open when the report runs (every status but closed)."),
    ("backlog_under_1d", "  open less than 1 day", "Open cases opened less than 1 day ago."),
    ("backlog_1d_3d", "  open 1–3 days", "Open cases opened 1 to 3 days ago."),
    ("backlog_3d_7d", "  open 3–7 days", "Open cases opened 3 to 7 days ago."),
    ("backlog_7d_30d", "  open 7–30 days", "Open cases opened 7 to 30 days ago."),
    ("backlog_over_30d", "  open 30 days or more", "Open cases opened 30 days ago or earlier."),
    ("overdue_cases", "Overdue open cases",
     "Open cases past their pool's resolution target, or with a consultation past its deadline "
     "and unanswered, when the report runs."),
)
FIGURE_KEYS = tuple(k for k, _, _ in FIGURES)
LABELS = {k: label.strip() for k, label, _ in FIGURES}
DURATION_KEYS = frozenset(k for k in FIGURE_KEYS if k.endswith("_seconds"))
SNAPSHOT_KEYS = frozenset(["open_cases", "overdue_cases", *(b[0] for b in BACKLOG_BUCKETS)])

GROUPINGS = ("csr", "pool", "day", "product")


@dataclass(frozen=True)
class Period:
    """Whole UTC days: ``first`` and ``last`` both included."""

    first: dt.date
    last: dt.date

    def __post_init__(self) -> None:
        if self.last < self.first:
            raise ValueError(f"the period ends ({self.last}) before it starts ({self.first})")

    @property
    def start(self) -> dt.datetime:
        """Naive UTC, as the rows store it; included."""
        return dt.datetime.combine(self.first, dt.time())

    @property
    def end(self) -> dt.datetime:
        """Naive UTC; excluded (midnight after the last day)."""
        return dt.datetime.combine(self.last + dt.timedelta(days=1), dt.time())

    def days(self) -> list[str]:
        n = (self.last - self.first).days + 1
        return [(self.first + dt.timedelta(days=i)).isoformat() for i in range(n)]


def parse_day(text: str) -> dt.date:
    """``2026-11-30``; ValueError with the accepted form otherwise."""
    try:
        return dt.date.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"not a date: {text!r} (use YYYY-MM-DD, e.g. 2026-11-30)") from None


def default_period(today: dt.date, first: dt.date | None, last: dt.date | None) -> Period:
    """``--to`` defaults to today, ``--from`` to 29 days before ``--to`` (30 days)."""
    last = last or today
    return Period(first or last - dt.timedelta(days=29), last)


# -- accumulation -------------------------------------------------------------------------


@dataclass
class _Acc:
    counts: dict[str, int] = field(default_factory=dict)
    rating_sum: int = 0
    first_answer: list[float] = field(default_factory=list)
    close: list[float] = field(default_factory=list)

    def add(self, key: str, n: int = 1) -> None:
        self.counts[key] = self.counts.get(key, 0) + n


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th quantile (0..1) with linear interpolation between the closest
    ranks (PostgreSQL's ``percentile_cont``, numpy's default); None for none."""
    if not values:
        return None
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q
    lo, hi = math.floor(pos), math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def _seconds(value: float | None) -> float | int | None:
    if value is None:
        return None
    rounded = round(value, 3)
    return int(rounded) if rounded == int(rounded) else rounded


def figures(acc: _Acc) -> dict[str, Any]:
    """The figures of one group (or of everything), keyed as FIGURES."""
    c = acc.counts
    row: dict[str, Any] = {k: c.get(k, 0) for k in FIGURE_KEYS}
    row["closed_on_time"] = c.get("closed_on_time_not_consulted", 0) + c.get("closed_on_time_consulted", 0)
    row["closed_late"] = c.get("closed_late_not_consulted", 0) + c.get("closed_late_consulted", 0)
    answered, closed = c.get("surveys_answered", 0), c.get("cases_closed", 0)
    row["feedback_share"] = round(answered / closed, 4) if closed else None
    row["average_rating"] = round(acc.rating_sum / answered, 2) if answered else None
    row["first_answer_median_seconds"] = _seconds(percentile(acc.first_answer, 0.5))
    row["first_answer_p90_seconds"] = _seconds(percentile(acc.first_answer, 0.9))
    row["close_median_seconds"] = _seconds(percentile(acc.close, 0.5))
    row["close_p90_seconds"] = _seconds(percentile(acc.close, 0.9))
    row["open_cases"] = sum(c.get(b[0], 0) for b in BACKLOG_BUCKETS)
    return row


class _Groups:
    """The total and one accumulator per value of each grouping."""

    def __init__(self, groupings: Sequence[str]) -> None:
        self.total = _Acc()
        self.groupings = tuple(groupings)
        self.by: dict[str, dict[str, _Acc]] = {g: {} for g in self.groupings}

    def accs(self, keys: Sequence[Any]) -> Iterable[_Acc]:
        yield self.total
        for grouping, value in zip(self.groupings, keys, strict=True):
            if value is None and grouping == "day":
                continue  # a snapshot figure: no day
            yield self.by[grouping].setdefault(_label(grouping, value), _Acc())


def _label(grouping: str, value: Any) -> str:
    if value is None or value == "":
        return UNASSIGNED if grouping == "csr" else NO_PRODUCT if grouping == "product" else "(none)"
    if isinstance(value, dt.datetime | dt.date):
        return value.strftime("%Y-%m-%d")
    return str(value)


# -- the queries ----------------------------------------------------------------------------


class _Sql:
    """What differs between SQLite and PostgreSQL: days and durations."""

    def __init__(self, store: Store) -> None:
        self.sqlite = store.is_sqlite

    def day(self, column: Any) -> Any:
        if self.sqlite:
            return fn.strftime("%Y-%m-%d", column).coerce(False)
        return fn.to_char(column, "YYYY-MM-DD").coerce(False)

    def seconds(self, start: Any, end: Any) -> Any:
        """``end - start`` in seconds, as a float."""
        if self.sqlite:
            return ((fn.julianday(end) - fn.julianday(start)) * 86400.0).coerce(False)
        return fn.date_part("epoch", peewee.Expression(end, "-", start)).coerce(False)


def product_column(store: Store) -> Any | None:
    """The case's product when the store has products (the ``product`` column
    of ``support_case``), else None: ``--by product`` then says so."""
    fld = Case._meta.fields.get("product")
    if fld is None:
        return None
    columns = {c.name for c in store.db.get_columns(Case._meta.table_name)}
    if fld.column_name not in columns:
        return None
    if isinstance(fld, peewee.ForeignKeyField):  # a products table: group by its name
        return fld.rel_model.name if "name" in fld.rel_model._meta.fields else fld
    return fld


class Report:
    """Computes the figures for a period (and pool); :meth:`run` returns one dict."""

    def __init__(self, store: Store, period: Period, *, pool: str | None = None,
                 progress: Callable[[str], None] | None = None) -> None:
        self.store = store
        self.period = period
        self.pool_name = pool
        self.progress = progress or (lambda step: None)
        self.sql = _Sql(store)
        self.now = store.now()

    STEPS = ("emails", "opened", "closed", "first answers", "consultations", "reopenings",
             "backlog", "overdue")

    # -- helpers ----------------------------------------------------------------

    def _groupings(self) -> tuple[str, ...]:
        return GROUPINGS if self._product is not None else tuple(g for g in GROUPINGS if g != "product")

    def _keys(self, day: Any) -> list[Any]:
        """The grouping columns, in the order of _groupings(); ``day`` None for snapshots."""
        keys: list[Any] = [Csr.address, Pool.name, self.sql.day(day) if day is not None else SQL("NULL")]
        if self._product is not None:
            keys.append(self._product)
        return keys

    @staticmethod
    def _group(keys: Sequence[Any]) -> list[Any]:
        """The keys to GROUP BY: not the NULL that stands for a snapshot's day."""
        return [k for k in keys if not isinstance(k, SQL)]

    def _from_case(self, query: Any, on_case: Any | None = None) -> Any:
        """Join a query to the case's mailbox, pool and assignee (and product)."""
        if on_case is not None:
            query = query.join(Case, on=on_case)
        query = (query.join(Mailbox, on=(Case.mailbox == Mailbox.id))
                 .join(Pool, on=(Mailbox.pool == Pool.id))
                 .join(Csr, JOIN.LEFT_OUTER, on=(Case.assignee == Csr.id)))
        if self._product is not None and isinstance(Case._meta.fields.get("product"), peewee.ForeignKeyField):
            rel = Case._meta.fields["product"].rel_model
            query = query.join(rel, JOIN.LEFT_OUTER, on=(Case._meta.fields["product"] == rel.id))
        if self._pool is not None:
            query = query.where(Pool.id == self._pool.id)
        return query

    def _between(self, column: Any) -> Any:
        return (column >= self.period.start) & (column < self.period.end)

    def _count(self, groups: _Groups, key: str, query: Any, n_keys: int) -> None:
        for row in query.tuples().iterator():
            keys, n = row[:n_keys], int(row[n_keys] or 0)
            for acc in groups.accs(keys):
                acc.add(key, n)

    # -- the facts --------------------------------------------------------------

    def emails_received(self, groups: _Groups) -> None:
        """Customer messages in the period: ``message`` rows ``direction = 'in'``,
        ``kind = 'customer'``, by ``created`` (index message(kind, created))."""
        keys = self._keys(Message.created)
        q = self._from_case(Message.select(*keys, fn.COUNT(Message.id)), on_case=(Message.case == Case.id))
        q = q.where((Message.kind == "customer") & (Message.direction == "in")
                    & self._between(Message.created)).group_by(*keys)
        self._count(groups, "emails_received", q, len(keys))

    def cases_opened(self, groups: _Groups) -> None:
        """Cases by ``support_case.created`` in the period."""
        keys = self._keys(Case.created)
        q = self._from_case(Case.select(*keys, fn.COUNT(Case.id)))
        q = q.where(self._between(Case.created)).group_by(*keys)
        self._count(groups, "cases_opened", q, len(keys))

    def cases_closed(self, groups: _Groups) -> None:
        """Cases with ``status = 'closed'`` and ``closed`` in the period, one row
        each: the time from ``created`` to ``closed`` against the pool's
        ``resolve_within`` (on time when within it or when the pool has none),
        whether a consultation exists, the rating."""
        keys = self._keys(Case.closed)
        consulted = fn.EXISTS(Consultation.select(SQL("1")).where(Consultation.case == Case.id))
        q = self._from_case(Case.select(*keys, self.sql.seconds(Case.created, Case.closed),
                                        Pool.resolve_within, consulted, Case.rating))
        q = q.where((Case.status == "closed") & self._between(Case.closed))
        n = len(keys)
        for row in q.tuples().iterator():
            took, target, was_consulted, rating = row[n:]
            took = round(float(took), 3)
            late = target is not None and took > target
            which = ("closed_late" if late else "closed_on_time") + (
                "_consulted" if was_consulted else "_not_consulted")
            for acc in groups.accs(row[:n]):
                acc.add("cases_closed")
                acc.add(which)
                if target is None:
                    acc.add("closed_without_target")
                acc.close.append(took)
                if rating is not None:
                    acc.add("surveys_answered")
                    acc.rating_sum += int(rating)

    def first_answers(self, groups: _Groups) -> None:
        """Cases opened in the period that we answered: from ``created`` to the
        first outgoing ``message`` of kind ``reply`` or ``solution`` (index
        message(case, kind, created))."""
        answer = Message.alias("answer")
        first = (answer.select(fn.MIN(answer.created))
                 .where((answer.case == Case.id) & (answer.kind.in_(["reply", "solution"]))
                        & (answer.direction == "out")))
        keys = self._keys(Case.created)
        q = self._from_case(Case.select(*keys, self.sql.seconds(Case.created, first)))
        q = q.where(self._between(Case.created))
        n = len(keys)
        for row in q.tuples().iterator():
            if row[n] is None:
                continue
            took = max(0.0, round(float(row[n]), 3))
            for acc in groups.accs(row[:n]):
                acc.first_answer.append(took)

    def consultations(self, groups: _Groups) -> None:
        """Consultations by ``asked`` in the period: on time when ``answered <=
        due``; late when answered after ``due`` or unanswered past it now;
        pending otherwise."""
        verdict = peewee.Case(None, [
            (Consultation.answered.is_null(False) & (Consultation.answered <= Consultation.due),
             "consulted_on_time"),
            (Consultation.answered.is_null(False) | (Consultation.due < self.now), "consulted_late"),
        ], "consultations_pending")
        keys = self._keys(Consultation.asked)
        q = self._from_case(Consultation.select(*keys, verdict, fn.COUNT(Consultation.id)),
                            on_case=(Consultation.case == Case.id))
        q = q.where(self._between(Consultation.asked)).group_by(*keys, verdict)
        n = len(keys)
        for row in q.tuples().iterator():
            for acc in groups.accs(row[:n]):
                acc.add(str(row[n]), int(row[n + 1]))

    def reopenings(self, groups: _Groups) -> None:
        """``event`` rows ``kind = 'status'`` whose detail starts ``closed ->``,
        by ``at`` in the period (index event(kind, at))."""
        keys = self._keys(Event.at)
        q = self._from_case(Event.select(*keys, fn.COUNT(Event.id)), on_case=(Event.case == Case.id))
        q = q.where((Event.kind == "status") & Event.detail.startswith("closed -> ")
                    & self._between(Event.at)).group_by(*keys)
        self._count(groups, "cases_reopened", q, len(keys))

    def backlog(self, groups: _Groups) -> None:
        """Open cases now (every status but ``closed``), by age from ``created``."""
        whens = [(Case.created > self.now - dt.timedelta(days=upper), key)
                 for key, _lower, upper in BACKLOG_BUCKETS if upper is not None]
        bucket = peewee.Case(None, whens, BACKLOG_BUCKETS[-1][0])
        keys = self._keys(None)
        q = self._from_case(Case.select(*keys, bucket, fn.COUNT(Case.id)))
        q = q.where(Case.status.in_(OPEN_STATUSES)).group_by(*self._group(keys), bucket)
        n = len(keys)
        for row in q.tuples().iterator():
            for acc in groups.accs(row[:n]):
                acc.add(str(row[n]), int(row[n + 1]))

    def _overdue_where(self) -> tuple[Any, Any, Any]:
        past_target = Pool.resolve_within.is_null(False) & (
            self.sql.seconds(Case.created, self.now) > Pool.resolve_within)
        late_consult = fn.EXISTS(Consultation.select(SQL("1")).where(
            (Consultation.case == Case.id) & Consultation.answered.is_null() & (Consultation.due < self.now)))
        return Case.status.in_(OPEN_STATUSES) & (past_target | late_consult), past_target, late_consult

    def overdue(self, groups: _Groups) -> list[dict[str, Any]]:
        """Open cases past their pool's ``resolve_within`` now, or with a
        consultation unanswered past its ``due``: counted per group, and the
        oldest :data:`OVERDUE_LIST_LIMIT` listed."""
        where, _past_target, late_consult = self._overdue_where()
        keys = self._keys(None)
        q = self._from_case(Case.select(*keys, fn.COUNT(Case.id))).where(where).group_by(*self._group(keys))
        self._count(groups, "overdue_cases", q, len(keys))
        q = self._from_case(Case.select(
            Case.number, Case.subject, Case.customer_address, Case.status, Csr.address, Pool.name,
            Case.created, Pool.resolve_within, late_consult))
        q = q.where(where).order_by(Case.created, Case.id).limit(OVERDUE_LIST_LIMIT)
        listed = []
        for number, subject, customer, status, csr, pool, created, target, consult in q.tuples():
            opened = aware(created)
            age = (self.now - created).total_seconds() if isinstance(created, dt.datetime) else None
            reasons = []
            if target is not None and age is not None and age > target:
                reasons.append("past the resolution target")
            if consult:
                reasons.append("consultation past its deadline")
            listed.append({"number": number, "subject": subject, "customer": customer, "status": status,
                           "csr": csr or UNASSIGNED, "pool": pool,
                           "opened": opened.isoformat() if opened else None,
                           "age_seconds": _seconds(age), "reasons": reasons})
        return listed

    # -- the whole ------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        with self.store.guard():
            self._product = product_column(self.store)
            self._pool = None
            if self.pool_name is not None:
                self._pool = Pool.get_or_none(Pool.name == self.pool_name)
                if self._pool is None:
                    names = ", ".join(p.name for p in Pool.select(Pool.name).order_by(Pool.name))
                    raise StoreError(f"no pool named {self.pool_name!r} (pools: {names or 'none'})")
            groups = _Groups(self._groupings())
            steps: list[tuple[str, Callable[[_Groups], Any]]] = [
                ("emails", self.emails_received), ("opened", self.cases_opened),
                ("closed", self.cases_closed), ("first answers", self.first_answers),
                ("consultations", self.consultations), ("reopenings", self.reopenings),
                ("backlog", self.backlog)]
            for name, step in steps:
                step(groups)
                self.progress(name)
            overdue = self.overdue(groups)
            self.progress("overdue")
        report: dict[str, Any] = {
            "period": {"from": self.period.first.isoformat(), "to": self.period.last.isoformat(),
                       "pool": self.pool_name},
            "generated": aware(self.now).isoformat() if self.now else None,
            **figures(groups.total),
        }
        for grouping in groups.groupings:
            accs = groups.by[grouping]
            if grouping == "day":
                # Every day of the period, in order (a chart needs the empty ones too).
                rows = {day: figures(accs.get(day, _Acc())) for day in self.period.days()}
                for row in rows.values():
                    for key in SNAPSHOT_KEYS:
                        row.pop(key, None)
            else:
                rows = {name: figures(accs[name]) for name in sorted(accs)}
            report[f"by_{grouping}"] = rows
        report["overdue"] = overdue
        return report


def build(store: Store, period: Period, *, pool: str | None = None,
          progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """The report for a period (and pool) as one dict: ``period``, every
    figure of :data:`FIGURES` for everything, ``by_csr``, ``by_pool``,
    ``by_day`` (every day of the period), ``by_product`` when the store has
    products, and ``overdue`` (the oldest overdue open cases)."""
    return Report(store, period, pool=pool, progress=progress).run()
