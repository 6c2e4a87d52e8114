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

The database does the counting, grouped by ids (the case's assignee and
mailbox, the day, the product; names are looked up here), with the indexes of
migrations 0012, 0016, 0017 and 0019, and no row per case or per message reaches
Python (but the ids of the cases ever consulted, a set): each day's cases
opened and closed come as one row per group (from covering indexes: 0019's
day indexes on SQLite, 0016's on PostgreSQL; the first answer's time is kept
on the case row as ``first_answer_at``)
with their durations concatenated in one text (:meth:`_Sql.concat`) as exact
integers (:meth:`_Sql.exact`); the customers'
e-mails as the day's case ids, counted here by each case's key (read once
from the index of 0017, so no message is joined to its case); consultations,
reopenings (a partial index) and the backlog as grouped counts. Each pass
over cases is one statement: on SQLite read in the order of its day index
(0019: the day, then the key, so grouping sorts nothing), on PostgreSQL
hashed. The e-mails and consultations are one statement per day on SQLite
(index ranges in order; grouping by day in SQL would sort every row), one per
pass on PostgreSQL. The percentiles
are computed here from the durations, so one definition serves both stores.
Adding a grouping is a column in :meth:`Report._keys` and
:meth:`Report._load_keys` and a name in
:data:`GROUPINGS` (``product`` is there when the store has the column).
"""

from __future__ import annotations

import datetime as dt
import math
import operator
from array import array
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from functools import partial, reduce
from itertools import repeat
from typing import Any

import peewee
from peewee import SQL, fn

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


def percentiles(values: Sequence[float], qs: Sequence[float]) -> list[float | None]:
    """:func:`percentile` for several quantiles, sorting once."""
    if not values:
        return [None for _ in qs]
    ordered = sorted(values)
    out: list[float | None] = []
    for q in qs:
        pos = (len(ordered) - 1) * q
        lo, hi = math.floor(pos), math.ceil(pos)
        out.append(ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo))
    return out


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
    median, p90 = percentiles(acc.first_answer, (0.5, 0.9))
    row["first_answer_median_seconds"], row["first_answer_p90_seconds"] = _seconds(median), _seconds(p90)
    median, p90 = percentiles(acc.close, (0.5, 0.9))
    row["close_median_seconds"], row["close_p90_seconds"] = _seconds(median), _seconds(p90)
    row["open_cases"] = sum(c.get(b[0], 0) for b in BACKLOG_BUCKETS)
    return row


class _Tally:
    """Accumulators per raw key (assignee id, mailbox id, day, product) as the
    queries return them; spread over the total and the groupings at the end,
    so a row costs one dict lookup."""

    def __init__(self) -> None:
        self.by_key: dict[tuple[Any, ...], _Acc] = {}

    def __getitem__(self, key: tuple[Any, ...]) -> _Acc:
        acc = self.by_key.get(key)
        if acc is None:
            acc = self.by_key[key] = _Acc()
        return acc


def _merge(into: _Acc, acc: _Acc) -> None:
    for key, n in acc.counts.items():
        into.counts[key] = into.counts.get(key, 0) + n
    into.rating_sum += acc.rating_sum
    into.first_answer.extend(acc.first_answer)
    into.close.extend(acc.close)


def _label(grouping: str, value: Any) -> str:
    if value is None or value == "":
        return UNASSIGNED if grouping == "csr" else NO_PRODUCT if grouping == "product" else "(none)"
    if isinstance(value, dt.datetime | dt.date):
        return value.strftime("%Y-%m-%d")
    return str(value)


# -- the queries ----------------------------------------------------------------------------


class _Sql:
    """What differs between SQLite and PostgreSQL: days and instants as numbers,
    and the aggregate that joins a group's values into one text."""

    def __init__(self, store: Store) -> None:
        self.sqlite = store.is_sqlite

    def day(self, column: Any) -> Any:
        """``YYYY-MM-DD`` of a timestamp (SQLite keeps ``YYYY-MM-DD HH:MM:SS…`` text)."""
        if self.sqlite:
            # Literals, not parameters: as the day indexes of 0019_report_days say it.
            return fn.substr(column, SQL("1"), SQL("10")).coerce(False)
        return column.cast("date")  # a date (to_char costs several times more)

    def epoch(self, column: Any) -> Any:
        """Seconds since 1970 as a float (differences of two are durations)."""
        if self.sqlite:
            return ((fn.julianday(column) - 2440587.5) * 86400.0).coerce(False)
        return fn.date_part("epoch", column).coerce(False)

    def concat(self, value: Any, where: Any | None = None) -> Any:
        """The group's values (NULLs left out) as one comma-separated text:
        one row for thousands, parsed here with split and int. Every concat
        of one query sees the rows in the same order, so their lists align
        (PostgreSQL's parallel workers are off for the report)."""
        agg = (fn.group_concat(value) if self.sqlite
               else fn.string_agg(value.cast("text"), ",")).coerce(False)
        return agg if where is None else agg.filter(where)

    @staticmethod
    def exact(seconds: Any) -> Any:
        """A duration as an integer that :data:`SCALE` turns back into the very
        same float: a difference of two epochs (each past 2**22 s, i.e. after
        February 1970) is a multiple of 2**-30, so times 2**30 it is a whole
        number, below 2**63 for any duration under 270 years."""
        return (seconds * float(1 << 30)).cast("bigint")


# The case keys' array may be this many entries longer than 4 per case (else a dict).
_DENSE_SLACK = 1_000_000
SCALE = 1.0 / (1 << 30)  # _Sql.exact's integer -> the duration in seconds (exact: a power of 2)


def _split(text: str | None) -> list[str]:
    """A concat's values, as text ([] for NULL: nothing in the group)."""
    return text.split(",") if text else []


_scaled = partial(operator.mul, SCALE)  # SCALE * i: the same float as i * SCALE, without a Python loop


def _seconds_list(text: str | None) -> list[float]:
    """A concat of :meth:`_Sql.exact` durations back as the floats they were."""
    return list(map(_scaled, map(int, text.split(",")))) if text else []


class _Bound:
    """A query's SQL with its parameters (one statement, run once per day)."""

    def __init__(self, sql: str, params: Sequence[Any]) -> None:
        self._sql = (sql, list(params))

    def sql(self) -> tuple[str, list[Any]]:
        return self._sql


def product_column(store: Store) -> Any | None:
    """The case's product column when the store has products (``product`` on
    ``support_case``), else None: ``--by product`` then says so."""
    fld = Case._meta.fields.get("product")
    if fld is None:
        return None
    columns = {c.name for c in store.db.get_columns(Case._meta.table_name)}
    return fld if fld.column_name in columns else None


class Report:
    """Computes the figures for a period (and pool); :meth:`run` returns one dict.

    The queries group by ids (the case's assignee and mailbox, a day, the
    product) with no join to the directory tables; ids become names here."""

    def __init__(self, store: Store, period: Period, *, pool: str | None = None,
                 progress: Callable[[str], None] | None = None) -> None:
        self.store = store
        self.period = period
        self.pool_name = pool
        self.progress = progress or (lambda step: None)
        self.sql = _Sql(store)
        self.now = store.now()

    STEPS = ("cases", "backlog", "emails", "consultations", "reopenings", "overdue")

    # -- helpers ----------------------------------------------------------------

    def _directory(self) -> None:
        self._product = product_column(self.store)
        self._csr = {i: a for i, a in Csr.select(Csr.id, Csr.address).tuples()}
        pools = {i: (n, t) for i, n, t in Pool.select(Pool.id, Pool.name, Pool.resolve_within).tuples()}
        self._pool = None
        if self.pool_name is not None:
            self._pool = next((i for i, (n, _) in pools.items() if n == self.pool_name), None)
            if self._pool is None:
                names = ", ".join(sorted(n for n, _ in pools.values()))
                raise StoreError(f"no pool named {self.pool_name!r} (pools: {names or 'none'})")
        self._mailbox_pool: dict[int, str] = {}
        self._target: dict[int, int | None] = {}  # mailbox id -> its pool's resolve_within
        self._mailboxes: list[int] = []  # the mailboxes in the report (--pool)
        for mid, pid in Mailbox.select(Mailbox.id, Mailbox.pool).tuples():
            self._mailbox_pool[mid], self._target[mid] = pools[pid]
            if self._pool is None or pid == self._pool:
                self._mailboxes.append(mid)
        self._products: dict[Any, str] = {}
        if isinstance(self._product, peewee.ForeignKeyField):  # a products table: its names
            rel = self._product.rel_model
            if "name" in rel._meta.fields:
                self._products = {i: n for i, n in rel.select(rel.id, rel.name).tuples()}

    def _groupings(self) -> tuple[str, ...]:
        return GROUPINGS if self._product is not None else tuple(g for g in GROUPINGS if g != "product")

    def _keys(self, day: Any) -> list[Any]:
        """The raw grouping columns: assignee id, mailbox id, day (NULL for a
        snapshot), product."""
        keys: list[Any] = [Case.assignee, Case.mailbox, self.sql.day(day) if day is not None else SQL("NULL")]
        if self._product is not None:
            keys.append(self._product)
        return keys

    @staticmethod
    def _group(keys: Sequence[Any]) -> list[Any]:
        """The keys to GROUP BY: not the NULL that stands for a snapshot's day."""
        return [k for k in keys if not isinstance(k, SQL)]

    def _cases(self, *, by_day: bool = False) -> Any:
        """The report's cases: those of --pool's mailboxes, or all. ``by_day``:
        a test that no index serves on SQLite (``+mailbox_id``), so the passes
        read their day index (else the planner takes the mailbox's index, and
        every case's row)."""
        if self._pool is None:
            return SQL("1 = 1")
        if not self._mailboxes:
            return SQL("1 = 0")
        mailbox = (peewee.NodeList((SQL("+"), Case.mailbox), glue="") if by_day and self.sql.sqlite
                   else Case.mailbox)
        return mailbox.in_(self._mailboxes)

    def _between(self, column: Any) -> Any:
        return (column >= self.period.start) & (column < self.period.end)

    def _rows(self, query: Any) -> Any:
        """Raw tuples straight from the driver (no per-row model conversion)."""
        sql, params = query.sql()
        return self.store.db.execute_sql(sql, params)

    def _count(self, tally: _Tally, key: str, query: Any, n_keys: int) -> None:
        for row in self._rows(query):
            tally[tuple(row[:n_keys])].add(key, int(row[n_keys] or 0))

    # -- the facts --------------------------------------------------------------

    def _load_keys(self) -> None:
        """Every case of the report (--pool's mailboxes, or all) -> the number
        of its tally key without the day, (assignee, mailbox[, product]), in
        ``_key_list``: ``_keyof[case id]``, -1 for a case not in the report,
        -2 for one not looked up. An array indexed by the id when the ids are
        dense enough (a case's key is an index away), else a dict. One row
        per key with its case ids (index support_case_report_keys, 0017: no
        sort, and no row per case to Python). Every case is read, those of
        other pools as -1: with --pool their e-mails and consultations then
        need no look-up."""
        cols = [Case.assignee, Case.mailbox] + ([self._product] if self._product is not None else [])
        n = len(cols)
        self._key_list: list[tuple[Any, ...]] = []
        mailboxes = None if self._pool is None else set(self._mailboxes)
        groups: list[tuple[int, list[int]]] = []
        for row in self._rows(Case.select(*cols, self.sql.concat(Case.id)).group_by(*cols)):
            number = -1
            if mailboxes is None or row[1] in mailboxes:
                number = len(self._key_list)
                self._key_list.append(tuple(row[:n]))
            groups.append((number, list(map(int, _split(row[n])))))
        self._key_columns = cols
        top = max((max(ids) for _, ids in groups if ids), default=0)
        low = min((min(ids) for _, ids in groups if ids), default=0)
        self._keyof: array[int] | dict[int, int]
        if low >= 0 and top < 4 * sum(len(ids) for _, ids in groups) + _DENSE_SLACK:
            self._keyof = array("i", [-2]) * (top + 1)
            for number, ids in groups:
                for i in ids:
                    self._keyof[i] = number
        else:
            self._keyof = {i: number for number, ids in groups for i in ids}

    def _numbers(self, ids: list[int]) -> Iterator[int]:
        """The key numbers of these cases, as :meth:`_load_keys` keeps them."""
        keyof = self._keyof
        if isinstance(keyof, dict):
            return map(keyof.get, ids, repeat(-2))
        if ids and (max(ids) >= len(keyof) or min(ids) < 0):
            # An id past the array (a case new since the keys were read): a dict from now on.
            self._keyof = {i: number for i, number in enumerate(keyof) if number != -2}
            return self._numbers(ids)
        return map(keyof.__getitem__, ids)

    def _look_up(self, ids: list[int]) -> None:
        """Keys of cases new since :meth:`_load_keys` (-1: not in the report)."""
        for i in ids:
            self._keyof[i] = -1
        n = len(self._key_columns)
        number = {key: i for i, key in enumerate(self._key_list)}
        for row in self._rows(Case.select(Case.id, *self._key_columns)
                              .where(Case.id.in_(sorted(set(ids))) & self._cases())):
            key = tuple(row[1:n + 1])
            if key not in number:
                number[key] = len(self._key_list)
                self._key_list.append(key)
            self._keyof[row[0]] = number[key]

    def _count_by_key(self, day: Any, ids: list[int]) -> dict[tuple[Any, ...], int]:
        """How many of ``ids`` (case ids, repeats counting again) by tally key
        (assignee, mailbox, day, product); cases not in the report left out."""
        by = Counter(self._numbers(ids))
        if -2 in by:
            self._look_up([i for i, k in zip(ids, self._numbers(ids), strict=True) if k == -2])
            return self._count_by_key(day, ids)
        by.pop(-1, None)
        keys = self._key_list
        return {(keys[i][0], keys[i][1], day, *keys[i][2:]): n for i, n in by.items()}

    def _days(self, model: Any, columns: list[Any], day: Any, where: Any, *,
              keys: bool = True, day_index: bool = False) -> Iterator[tuple[Any, Sequence[Any]]]:
        """(key, aggregates) for each day of the period: ``columns`` (aggregates)
        over the rows of ``where`` whose ``day`` timestamp falls on that day,
        grouped by the case's assignee, mailbox (and product): the key is the
        tally's (assignee, mailbox, day, product), or the day alone without
        ``keys``. PostgreSQL: one statement (hashed). SQLite with
        ``day_index`` (an index of 0019_report_days on the day, then the
        keys): one statement too, grouped in the index's order; without, one
        statement per day, each a range of an index read in order, sorting
        only the day's rows by key (grouping by day too would sort every row
        at once). The day is as :meth:`_Sql.day` gives it."""
        group = self._key_columns if keys else []
        n = len(group)
        sqlite = self.sql.sqlite
        if not sqlite or day_index:
            day_key = self.sql.day(day)
            # SQLite: the period as a range of the index's day (the same rows:
            # the stored text starts with the day).
            period = ((day_key >= self.period.first.isoformat()) & (day_key <= self.period.last.isoformat())
                      if sqlite else self._between(day))
            q = model.select(day_key, *group, *columns).where(where & period).group_by(day_key, *group)
            if sqlite:
                rows = self._rows(q)
            else:
                # Hashed: the planner takes every case for a group of its own (it
                # cannot tell how few days the casts make) and would sort them.
                self.store.db.execute_sql("SET LOCAL enable_sort = off")
                try:
                    rows = list(self._rows(q))
                finally:
                    self.store.db.execute_sql("SET LOCAL enable_sort = on")
            for row in rows:
                yield ((row[1], row[2], row[0], *row[3:n + 1]) if keys else row[0]), row[n + 1:]
            return
        # Stand-ins for the day's bounds in the statement's parameters.
        lo, hi = (dt.datetime.combine(dt.date.min, dt.time(0, 0, s)) for s in (1, 2))
        q = model.select(*group, *columns).where(where & (day >= lo) & (day < hi))
        sql, params = (q.group_by(*group) if keys else q).sql()
        first = self.period.start
        for i in range((self.period.last - self.period.first).days + 1):
            start = first + dt.timedelta(days=i)
            end = start + dt.timedelta(days=1)
            label = start.strftime("%Y-%m-%d")
            bound = [start if p == lo else end if p == hi else p for p in params]
            for row in self._rows(_Bound(sql, bound)):
                yield ((row[0], row[1], label, *row[2:n]) if keys else label), row[n:]

    def emails_received(self, tally: _Tally) -> None:
        """Customer messages in the period: ``message`` rows ``kind = 'customer'``
        (always ``direction = 'in'``), by ``created``. Day by day, the case ids
        of the day's messages from the index message(kind, created, case_id)
        alone (the rows, with their raw bytes, are never read), counted by the
        case's key here (no join, no sort)."""
        for day, (ids,) in self._days(Message, [self.sql.concat(Message.case)], Message.created,
                                      Message.kind == "customer", keys=False):
            for key, n in self._count_by_key(day, list(map(int, _split(ids)))).items():
                tally[key].add("emails_received", n)

    def cases(self, tally: _Tally) -> None:
        """Two passes over the period's ``support_case`` rows, one statement
        each, from an index alone (SQLite: the day indexes of 0019, read in
        order; PostgreSQL: those of 0016, hashed); the period tests are done
        in SQL, exactly; each day comes as a row per group (assignee, mailbox,
        product) with its count and its durations concatenated
        (:meth:`_Sql.concat`, :meth:`_Sql.exact`):

        * opened: cases by ``created`` in the period, with the time to our
          first answer: ``first_answer_at``, the first message of kind
          ``reply`` or ``solution`` (kept on the case row since 0016);
        * closed: cases ``status = 'closed'`` with ``closed`` in the period,
          against their pool's ``resolve_within`` (on time when within it or
          when the pool has none), consulted or not (a ``consultation`` row
          for the case), rated or not."""
        sql = self.sql
        first = sql.exact(sql.epoch(Case.first_answer_at) - sql.epoch(Case.created))
        for key, (n, firsts) in self._days(Case, [fn.COUNT(SQL("*")), sql.concat(first)], Case.created,
                                           self._cases(by_day=True), day_index=True):
            acc = tally[key]
            acc.add("cases_opened", int(n))
            times = _seconds_list(firsts)
            if times and min(times) < 0.0:  # never negative (an answer before the case: a clock set back)
                times = [t if t > 0.0 else 0.0 for t in times]
            acc.first_answer.extend(times)

        # The cases ever consulted, from the index on consultation(case_id):
        # a set here instead of a lookup per closed case in SQL.
        consulted = {i for (i,) in self._rows(Consultation.select(Consultation.case).distinct())}
        took = sql.exact(sql.epoch(Case.closed) - sql.epoch(Case.created))
        # Instants come as floats accurate to some 20 microseconds (SQLite's
        # julianday): comparisons allow half a millisecond, so a case closed
        # exactly at its target is on time.
        slack = 0.0005
        for key, (ids, tooks, rated, rating_sum) in self._days(
                Case, [sql.concat(Case.id), sql.concat(took), fn.COUNT(Case.rating), fn.SUM(Case.rating)],
                Case.closed, (Case.status == "closed") & self._cases(by_day=True), day_index=True):
            acc = tally[key]
            times, cases = _seconds_list(tooks), list(map(int, _split(ids)))
            acc.close.extend(times)
            n_consulted = len(consulted.intersection(cases))
            target = self._target.get(key[1])
            late_consulted = late = 0
            if target is None:
                acc.add("closed_without_target", len(times))
            else:
                limit = target + slack
                late_cases = [c for t, c in zip(times, cases, strict=True) if t > limit]
                late, late_consulted = len(late_cases), len(consulted.intersection(late_cases))
            on_time, on_time_consulted = len(times) - late, n_consulted - late_consulted
            for name, count in (("cases_closed", len(times)),
                                ("closed_on_time_consulted", on_time_consulted),
                                ("closed_on_time_not_consulted", on_time - on_time_consulted),
                                ("closed_late_consulted", late_consulted),
                                ("closed_late_not_consulted", late - late_consulted),
                                ("surveys_answered", int(rated))):
                if count:
                    acc.add(name, count)
            acc.rating_sum += int(rating_sum or 0)

    def backlog(self, tally: _Tally) -> None:
        """Open cases now (every status but ``closed``), counted by age from
        ``created`` and overdue or not, one row per group from SQL: overdue
        when opened longer ago than the pool's ``resolve_within``, or with a
        consultation unanswered past its ``due``. The age buckets come as the
        counts opened after each bound (1, 3, 7, 30 days ago), newest first."""
        def count(condition: Any) -> Any:
            return fn.SUM(peewee.Case(None, [(condition, 1)], 0))

        bounds = [upper for _key, _lower, upper in BACKLOG_BUCKETS if upper is not None]
        keys = self._key_columns
        n = len(keys)
        # SQLite: grouped by status and closing day too, the order of the
        # closed cases' day index (0019), so nothing is sorted; the few rows
        # per key add up here.
        group = [Case.status, self.sql.day(Case.closed), *keys] if self.sql.sqlite else keys
        q = (Case.select(*keys, fn.COUNT(SQL("*")), count(self._overdue()),
                         *(count(Case.created > self.now - dt.timedelta(days=d)) for d in bounds))
             .where(Case.status.in_(OPEN_STATUSES) & self._cases(by_day=True)).group_by(*group))
        for row in self._rows(q):
            total, overdue, *newer = (int(v or 0) for v in row[n:])
            acc = tally[(*row[:2], None, *row[2:n])]
            # newer[i]: opened after the i-th bound; each bucket lies between two bounds.
            for (key, _lower, _upper), upto, since in zip(BACKLOG_BUCKETS, [*newer, total], [0, *newer],
                                                         strict=True):
                if upto - since:
                    acc.add(key, upto - since)
            if overdue:
                acc.add("overdue_cases", overdue)

    def consultations(self, tally: _Tally) -> None:
        """Consultations by ``asked`` in the period (index consultation(asked)):
        on time when ``answered <= due``; late when answered after ``due`` or
        unanswered past it now; pending otherwise."""
        verdict = peewee.Case(None, [
            (Consultation.answered.is_null(False) & (Consultation.answered <= Consultation.due),
             "consulted_on_time"),
            (Consultation.answered.is_null(False) | (Consultation.due < self.now), "consulted_late"),
        ], "consultations_pending")
        # Day by day, each verdict's case ids, counted by the case's key here
        # (no join to the cases, no sort).
        names = ("consulted_on_time", "consulted_late", "consultations_pending")
        columns = [self.sql.concat(Consultation.case, verdict == name) for name in names]
        for day, lists in self._days(Consultation, columns, Consultation.asked, SQL("1 = 1"), keys=False):
            for name, ids in zip(names, lists, strict=True):
                for key, n in self._count_by_key(day, list(map(int, _split(ids)))).items():
                    tally[key].add(name, n)

    def reopenings(self, tally: _Tally) -> None:
        """``event`` rows ``kind = 'status'`` whose detail starts ``closed ->``,
        by ``at`` in the period (index event(kind, at))."""
        keys = self._keys(Event.at)
        # Literals, not parameters, as the partial index event_reopened (0016)
        # says them, so the planner uses it. ILIKE as peewee's startswith: LIKE
        # on SQLite (psycopg2 makes the %% one %).
        pattern = "'closed -> %'" if self.store.is_sqlite else "'closed -> %%'"
        reopened = ((Event.kind == SQL("'status'"))
                    & peewee.Expression(Event.detail, peewee.OP.ILIKE, SQL(pattern)))
        q = (Event.select(*keys, fn.COUNT(SQL("*"))).join(Case, on=(Event.case == Case.id))
             .where(reopened & self._between(Event.at) & self._cases())
             .group_by(*keys))
        self._count(tally, "cases_reopened", q, len(keys))

    def _past_target(self) -> Any:
        """Opened longer ago than the pool's target: per mailbox, so no date
        arithmetic in SQL (and the index on created serves it)."""
        terms = [(Case.mailbox == mid) & (Case.created < self.now - dt.timedelta(seconds=target))
                 for mid, target in self._target.items() if target is not None and mid in self._mailboxes]
        if not terms:
            return SQL("1 = 0")
        return reduce(operator.or_, terms)

    def _late_consultation(self) -> Any:
        """The case has a consultation unanswered past its ``due`` (one subquery,
        not one per case)."""
        return Case.id.in_(Consultation.select(Consultation.case).where(
            Consultation.answered.is_null() & (Consultation.due < self.now)))

    def _overdue(self) -> Any:
        return self._past_target() | self._late_consultation()

    def overdue(self) -> list[dict[str, Any]]:
        """The oldest :data:`OVERDUE_LIST_LIMIT` overdue open cases: past their
        pool's ``resolve_within`` now, or with a consultation unanswered past
        its ``due`` (``overdue_cases``, counted in :meth:`cases`, has them all)."""
        late = self._late_consultation()
        # The ids first, from the covering index of 0016 (a top-N sort of small
        # rows), then only their rows, subjects and all.
        first = (Case.select(Case.id)
                 .where(Case.status.in_(OPEN_STATUSES) & self._cases() & (self._past_target() | late))
                 .order_by(Case.created, Case.id).limit(OVERDUE_LIST_LIMIT))
        q = (Case.select(Case.number, Case.subject, Case.customer_address, Case.status, Case.assignee,
                         Case.mailbox, Case.created, late)
             .where(Case.id.in_(first)).order_by(Case.created, Case.id))
        listed = []
        for number, subject, customer, status, csr, mailbox, created, consult in q.tuples():
            opened = aware(created)
            age = (self.now - created).total_seconds() if isinstance(created, dt.datetime) else None
            target = self._target.get(mailbox)
            reasons = []
            if target is not None and age is not None and age > target:
                reasons.append("past the resolution target")
            if consult:
                reasons.append("consultation past its deadline")
            listed.append({"number": number, "subject": subject, "customer": customer, "status": status,
                           "csr": self._csr.get(csr, UNASSIGNED), "pool": self._mailbox_pool.get(mailbox),
                           "opened": opened.isoformat() if opened else None,
                           "age_seconds": _seconds(age), "reasons": reasons})
        return listed

    # -- the whole ------------------------------------------------------------------

    def _labels(self, key: tuple[Any, ...]) -> tuple[Any, ...]:
        assignee, mailbox, day, *rest = key
        labels = [_label("csr", self._csr.get(assignee)), _label("pool", self._mailbox_pool.get(mailbox)),
                  None if day is None else _label("day", day)]
        if rest:
            product = rest[0]
            labels.append(_label("product", self._products.get(product, product)
                                 if self._products else product))
        return tuple(labels)

    def run(self) -> dict[str, Any]:
        # PostgreSQL: in a transaction, for settings of this report only. (Not
        # SQLite: the store's transactions take the write lock up front.)
        with self.store.guard(), nullcontext() if self.store.is_sqlite else self.store.db.atomic():
            if self.store.is_sqlite:
                # Read the store through memory maps and a larger page cache:
                # this connection reads much more than the mail path does.
                self.store.db.execute_sql("PRAGMA mmap_size = 1073741824")
                self.store.db.execute_sql("PRAGMA cache_size = -65536")
            else:
                # The grouping hashes fit in memory; compiling the queries
                # (JIT) costs more than it saves on queries of well under a second.
                self.store.db.execute_sql("SET LOCAL work_mem = '64MB'")
                self.store.db.execute_sql("SET LOCAL jit = off")
                # One process: the concatenations of one group see its rows in one order.
                self.store.db.execute_sql("SET LOCAL max_parallel_workers_per_gather = 0")
            self._directory()
            self._load_keys()
            tally = _Tally()
            steps: list[tuple[str, Callable[[_Tally], Any]]] = [
                ("cases", self.cases), ("backlog", self.backlog), ("emails", self.emails_received),
                ("consultations", self.consultations), ("reopenings", self.reopenings)]
            for name, step in steps:
                step(tally)
                self.progress(name)
            overdue = self.overdue()
            self.progress("overdue")
        groupings = self._groupings()
        by: dict[str, dict[str, _Acc]] = {g: {} for g in groupings}
        # The keys without their day first, each grouping but the day's from
        # those: every list is sorted once and merged from few sorted runs
        # (the percentiles sort them again, fast).
        undated: dict[tuple[Any, ...], _Acc] = {}
        for key, acc in tally.by_key.items():
            acc.first_answer.sort()
            acc.close.sort()
            _merge(undated.setdefault((key[0], key[1], None, *key[3:]), _Acc()), acc)
            if key[2] is not None:
                _merge(by["day"].setdefault(_label("day", key[2]), _Acc()), acc)
        total = _Acc()
        for key, acc in undated.items():
            acc.first_answer.sort()
            acc.close.sort()
            _merge(total, acc)
            for grouping, label in zip(groupings, self._labels(key), strict=True):
                if label is not None:
                    _merge(by[grouping].setdefault(label, _Acc()), acc)
        report: dict[str, Any] = {
            "period": {"from": self.period.first.isoformat(), "to": self.period.last.isoformat(),
                       "pool": self.pool_name},
            "generated": aware(self.now).isoformat() if self.now else None,
            **figures(total),
        }
        for grouping in groupings:
            accs = by[grouping]
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
