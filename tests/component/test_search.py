"""Finding cases on real stores (a SQLite file and a PostgreSQL database):
``case search`` through the full-text indexes of 0011_search, ``case list``
filters and sorting, and ``case show``'s timeline. The cases are made by the
engine from real messages, so the indexes see what production writes."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

import cli
from casestore.models import Case
from casestore.search import SearchError, list_cases, search
from casestore.store import Store
from smtpd_hook.engine import Engine
from tests.component.test_case_life import BOB, JANE, csr_says, customer_says, deliver
from tests.component.test_case_life import clock as _clock_fixture
from tests.component.test_case_life import engine as _engine_fixture
from tests.support.clock import Clock
from tests.support.mail import make

clock = _clock_fixture
engine = _engine_fixture

MAILS = [  # (From, Subject, body)
    ("Lucía García <lucia.garcia@firma.example.pl>", "test_search Router blinks red",
     "My router blinks red since the firmware update.\n"),
    ("Zoë Müller <zoe.mueller@mail.example.net>", "test_search Invoice question",
     "I was charged twice for the same month.\n"),
    ("Piotr Nowak <piotr@customer.test>", "test_search Śmieszny błąd w aplikacji",
     "Aplikacja się zawiesza po zalogowaniu, proszę o pomoc.\n"),
    ("John Smith <john.smith@customer.test>", "test_search Printer on fire",
     "The printer smokes when I print a router manual.\n"),
]


@pytest.fixture
def cases(engine: Engine, clock: Clock) -> list[str]:
    numbers = []
    for sender, subject, body in MAILS:
        deliver(engine, make(from_=sender, subject=subject, body=body))
        numbers.append(Case.select(Case.number).order_by(Case.id.desc()).get().number)
        clock.advance(seconds=3600)
    return numbers


def _found(store: Store, text: str, *, body: bool = False) -> list[str]:
    return [r["number"] for r in search(store, text, body=body)]


@pytest.mark.parametrize(("query", "body", "expected"), [
    ("garcia", False, [0]),                   # a name, accent-free query
    ("GARCÍA", False, [0]),                   # case and accents do not matter
    ("lucia garc", False, [0]),               # every word; the last one a prefix
    ("mueller", False, [1]),                  # an address word
    ("mail.example.net", False, [1]),         # an address fragment: its words
    ("firma.example", False, [0]),
    ("invoice", False, [1]),                  # a subject word
    ("blad", False, [2]),                     # Polish subject word without its accents
    ("router", False, [0]),                   # subject only without --body ...
    ("router", True, [3, 0]),                 # ... and the body of case 3 too, newest first
    ("charged twice", True, [1]),
    ("charged twice", False, []),
    ("zawiesza", True, [2]),
    ("printer fire", False, [3]),
    ("printer invoice", False, []),           # all words must match
    ("nobody-here", True, []),
])
def test_search_finds_by_name_address_subject_and_body(engine: Engine, cases: list[str], query: str,
                                                       body: bool, expected: list[int]) -> None:
    assert _found(engine.store, query, body=body) == [cases[i] for i in expected]


def test_search_by_case_number_comes_first(engine: Engine, cases: list[str]) -> None:
    number = cases[1]
    assert _found(engine.store, number)[0] == number
    assert _found(engine.store, number.lower())[0] == number
    digits = str(int(number[2:]))  # "2" for CS0000002
    assert _found(engine.store, digits)[0] == number


def test_search_follows_changes_and_deletes(engine: Engine, cases: list[str]) -> None:
    store = engine.store
    with store.atomic():
        case = store.case(cases[1])
        store.touch(case, subject="Renamed to something else", customer_name="Zoe Kowalska")
    assert _found(store, "invoice") == []
    assert _found(store, "kowalska") == [cases[1]]
    assert _found(store, "renamed else") == [cases[1]]
    with store.atomic():
        Case.delete().where(Case.number == cases[0]).execute()
    assert _found(store, "garcia") == []
    assert _found(store, "firmware", body=True) == []


def _notify_only_words(store: Store) -> set[str]:
    """Words of the notifications to CSRs that no other message, case field
    or number holds or starts with: what only a notification could be found by."""
    from casestore.models import Message
    from casestore.search import _NUMBER, _WORD, FOLD

    def split(text: str) -> set[str]:
        for a, b in FOLD:
            text = text.replace(a, b)
        return {w.lower() for w in _WORD.findall(text)}

    notify, other = set(), set()
    for m in Message.select(Message.kind, Message.text):
        (notify if m.kind == "notify" else other).update(split(m.text))
    for c in Case.select():
        other.update(split(" ".join((c.number, c.customer_name, c.customer_address, c.subject))))
    # A query's last word is a prefix; "c4" or "4" reads as a case number.
    return {w for w in notify - other if not _NUMBER.match(w) and not any(o.startswith(w) for o in other)}


def test_notifications_to_csrs_are_not_indexed(engine: Engine, cases: list[str]) -> None:
    """0021: a notification repeats the case's messages in template words;
    the messages are found, the template's words are not (both stores)."""
    store = engine.store
    only = _notify_only_words(store)
    assert {"history", "assigned"} <= only  # words of the notification template
    for word in sorted(only):
        assert _found(store, word, body=True) == [], word
    assert _found(store, "charged twice", body=True) == [cases[1]]


def test_search_limit_and_bad_query(engine: Engine, cases: list[str]) -> None:
    assert len(search(engine.store, "test_search", limit=2)) == 2
    assert [r["number"] for r in search(engine.store, "test_search")] == cases[::-1]
    with pytest.raises(SearchError, match="nothing to search for"):
        search(engine.store, " -- !! ")
    # FTS5 and tsquery syntax in the query is only words
    assert _found(engine.store, 'printer" OR "invoice* NEAR(') == []
    assert _found(engine.store, "printer & | ! ( :*") == [cases[3]]


def test_search_row_has_the_case_list_keys(engine: Engine, cases: list[str]) -> None:
    row = search(engine.store, "garcia")[0]
    assert row["customer"] == "lucia.garcia@firma.example.pl"
    assert row["customer_name"] == "Lucía García"
    assert row["mailbox"] == "support@example.com" and row["assignee"] == JANE
    assert row["subject"] == "test_search Router blinks red" and row["status"] == "received"


# -- case list ---------------------------------------------------------------------


def _numbers(rows: list[dict]) -> list[str]:
    return [r["number"] for r in rows]


def test_list_filters_and_sorting(engine: Engine, cases: list[str], clock: Clock) -> None:
    store = engine.store
    store.add_mailbox("billing@example.com", "billing")
    deliver(engine, make(from_="ann@customer.test", subject="test_search Another billing matter"),
            rcpt="billing@example.com")
    billing = Case.select(Case.number).order_by(Case.id.desc()).get().number
    case3 = store.case(cases[3])
    csr_says(engine, case3, "#close\n\nDone.\n")
    with store.atomic():
        for number in cases:
            store.touch(store.case(number), assignee=store.csr(BOB if number == cases[2] else JANE))
    t0 = Clock().now
    table = [
        ({}, [*cases, billing]),
        ({"status": "closed"}, [cases[3]]),
        ({"status": "open"}, [*cases[:3], billing]),
        ({"csr": BOB}, [cases[2]]),
        ({"csr": "none"}, [billing]),  # billing has no CSR in its pool
        ({"pool": "billing"}, [billing]),
        ({"pool": "default", "status": "open"}, cases[:3]),
        ({"since": t0 + dt.timedelta(hours=2)}, [cases[2], cases[3], billing]),
        ({"sort": "subject"}, [billing, cases[1], cases[3], cases[0], cases[2]]),
        ({"sort": "subject", "reverse": True}, [cases[2], cases[0], cases[3], cases[1], billing]),
        ({"sort": "created", "reverse": True, "limit": 2}, [billing, cases[3]]),
        ({"sort": "number", "reverse": True, "limit": 1}, [billing]),
    ]
    for filters, expected in table:
        assert _numbers(list_cases(store, **filters)) == expected, filters


def test_list_refuses_unknown_names(engine: Engine, cases: list[str]) -> None:
    for filters, message in [({"csr": "eve@example.com"}, "no CSR eve@example.com"),
                             ({"pool": "nope"}, "no pool nope"),
                             ({"sort": "size"}, "unknown sort")]:
        with pytest.raises(SearchError, match=message):
            list_cases(engine.store, **filters)


def test_list_by_product(engine: Engine, cases: list[str]) -> None:
    from casestore.search import product_field

    if product_field() is None:  # a schema without products: --product says so
        with pytest.raises(SearchError, match="no products"):
            list_cases(engine.store, product="Router")
        return
    with engine.store.atomic():
        Case.update(product="Router").where(Case.number.in_([cases[0], cases[3]])).execute()
    assert _numbers(list_cases(engine.store, product="router")) == [cases[0], cases[3]]
    assert [r["product"] for r in search(engine.store, "garcia")] == ["Router"]
    assert _numbers(list_cases(engine.store, product="Modem")) == []


# -- case show's timeline --------------------------------------------------------------


def test_timeline_in_time_order(engine: Engine, clock: Clock, store_url: str, tmp_path: Path) -> None:
    store = engine.store
    store.add_department("legal", "legal@example.com", 86400)
    deliver(engine, make(from_="Ann <ann@customer.test>", subject="test_search timeline"))
    case = Case.select().order_by(Case.id.desc()).get()
    clock.advance(seconds=60)
    csr_says(engine, case, "#note Called her\n")
    clock.advance(seconds=60)
    csr_says(engine, case, "#consult legal\nIs this allowed?\n")
    clock.advance(seconds=60)
    customer_says(engine, case, "Thanks!\n", sender="ann@customer.test")
    clock.advance(seconds=60)
    csr_says(engine, case, "#close\n\nDone.\n")
    run = _cli(tmp_path, store_url)
    shown = json.loads(run("case", "show", case.number, "--json").output)
    assert {"messages", "events", "notes", "history", "files"} <= set(shown)  # the old keys stay
    items = shown["timeline"]
    assert [i["at"] for i in items] == sorted(i["at"] for i in items)
    types = [i["type"] for i in items]
    assert types[0] == "message" and items[0]["direction"] == "in"
    for kind in ("note", "status", "assignment", "consultation"):
        assert kind in types, kind
    directions = [i["direction"] for i in items if i["type"] == "message"]
    assert "in" in directions and "out" in directions
    assert items.index(next(i for i in items if i["type"] == "note")) < \
        items.index(next(i for i in items if "-> closed" in i.get("detail", "")))
    text = run("case", "show", case.number).output
    assert "internal note by jane@example.com" in text and "consultation: consulted" in text
    assert text.index("Called her") < text.index("Thanks!") < text.index("-> closed")


def test_timeline_shows_follow_up_links(engine: Engine, clock: Clock, store_url: str,
                                        tmp_path: Path) -> None:
    store = engine.store
    store.set_pool("default", closed_policy="new_linked")
    deliver(engine, make(from_="ann@customer.test", subject="test_search first"))
    case = Case.select().order_by(Case.id.desc()).get()
    csr_says(engine, case, "#close\n\nDone.\n")
    clock.advance(seconds=3600)
    customer_says(engine, case, "It broke again.\n", sender="ann@customer.test")
    follow = Case.select().order_by(Case.id.desc()).get()
    assert follow.id != case.id
    run = _cli(tmp_path, store_url)
    items = json.loads(run("case", "show", case.number, "--json").output)["timeline"]
    links = [i for i in items if i["type"] == "link"]
    assert links and follow.number in json.dumps(links)


# -- the CLI ---------------------------------------------------------------------------


def _cli(tmp_path: Path, store_url: str):
    runner = CliRunner()
    config = tmp_path / "casegate.toml"
    base = ["--config", str(config), "--store", store_url]
    if not config.exists():
        runner.invoke(cli.main, [*base, "init"], catch_exceptions=False)

    def invoke(*args: str):
        return runner.invoke(cli.main, [*base, *args], catch_exceptions=False)

    return invoke


def test_cli_search_and_list(engine: Engine, cases: list[str], store_url: str, tmp_path: Path) -> None:
    run = _cli(tmp_path, store_url)
    found = run("case", "search", "García", "--json")
    assert found.exit_code == 0 and [r["number"] for r in json.loads(found.output)] == [cases[0]]
    text = run("case", "search", "charged twice", "--body")
    assert text.exit_code == 0 and cases[1] in text.output and "Zoë Müller" in text.output
    none = run("case", "search", "zzzzzz")
    assert none.exit_code == 1 and "no case matches" in none.output
    empty = run("case", "search", "!!")
    assert empty.exit_code == 1 and "nothing to search for" in empty.output
    listed = run("case", "list", "--sort", "subject", "--limit", "2", "--json")
    assert [r["number"] for r in json.loads(listed.output)] == [cases[1], cases[3]]
    unknown = run("case", "list", "--csr", "eve@example.com")
    assert unknown.exit_code == 1 and "no CSR eve@example.com" in unknown.output
    bad = run("case", "list", "--since", "yesterday")
    assert bad.exit_code == 2 and "is not a date" in bad.output
    since = run("case", "list", "--since", "2000-01-01", "--json")
    assert len(json.loads(since.output)) == len(cases)


def test_the_query_folds_letters_as_the_sqlite_index_does() -> None:
    import importlib

    from casestore import search as search_module

    migration = importlib.import_module("casestore.migrations.0011_search")
    assert search_module.FOLD == migration.FOLD


def test_the_migration_indexes_cases_stored_before_it(empty_store_url: str) -> None:
    from playhouse.migrations import Runner

    from casestore.store import HISTORY_TABLE, MIGRATIONS

    store = Store(empty_store_url)
    store.migrate()  # creates the file; then start again from an older schema on a fresh one
    store.close()
    if store.is_sqlite:
        Path(store.path).unlink()
        for extra in ("-wal", "-shm"):
            Path(str(store.path) + extra).unlink(missing_ok=True)
    else:
        store.db.execute_sql("DROP SCHEMA public CASCADE")
        store.db.execute_sql("CREATE SCHEMA public")
        store.close()
    store = Store(empty_store_url)
    if store.is_sqlite:
        from casestore.store import _create_file

        _create_file(store.path, folder=True)
    Runner(store.db, str(MIGRATIONS), table_name=HISTORY_TABLE).up(target="0010_approval")
    # rows as a store of that age holds them (plain SQL: the models have moved on since)
    p = store.db.param
    now = "2026-11-02 09:00:00"
    for sql, values in [
        (f"INSERT INTO pool (id, name, rule, created, closed_policy, close_on_reply, unassigned_notify, "
         f"escalation_notice) VALUES (1, 'default', 'least_load', {p}, 'reopen', {p}, '', {p})",
         (now, False, False)),
        (f"INSERT INTO mailbox (id, address, pool_id, display_name, created) "
         f"VALUES (1, 'support@example.com', 1, '', {p})", (now,)),
        (f"INSERT INTO support_case (id, number, mailbox_id, customer_address, customer_name, subject, "
         f"status, created, updated, rating_comment, answers) VALUES (1, 'CS0000001', 1, "
         f"'old@customer.test', 'Ólafur Łęcki', 'Stored before search existed', 'received', {p}, {p}, "
         f"'', '')", (now, now)),
        (f"INSERT INTO message (id, case_id, direction, kind, sender, recipients, message_id, "
         f"in_reply_to, subject, text, raw, queue_id, client_addr, authenticated, automatic, dkim, "
         f"created, rcpt_key, rcpt_domain) VALUES (1, 1, 'in', 'customer', 'old@customer.test', '', "
         f"'', '', '', 'An ancient gramophone problem.', {p}, '', '', '', '', '', {p}, '', '')",
         (b"x", now)),
    ]:
        store.db.execute_sql(sql, values)
    if not store.is_sqlite:
        store.db.execute_sql("SELECT setval(pg_get_serial_sequence('support_case', 'id'), 1)")
    case = Case(number="CS0000001")
    assert store.migrate() == [p.stem for p in sorted(MIGRATIONS.glob("0*.py"))
                               if p.stem > "0010_approval"]
    assert _found(store, "olafur lecki") == [case.number]
    assert _found(store, "gramophone", body=True) == [case.number]
    store.close()


def test_the_migration_takes_notifications_out_of_the_index(empty_store_url: str) -> None:
    """0021 on a store whose notifications were indexed (0011-0020): they
    leave the index, the other messages stay found, and deleting either kind
    afterwards keeps the index whole; ``case reindex`` leaves them out too."""
    from playhouse.migrations import Runner

    from casestore.models import Message
    from casestore.store import HISTORY_TABLE, MIGRATIONS

    store = Store(empty_store_url)
    Runner(store.db, str(MIGRATIONS), table_name=HISTORY_TABLE).up(target="0020_csr_open_cases")
    from casestore.search import _migration

    if store.is_sqlite:  # the triggers as casegate init before 0021 repaired them (0011's)
        for sql in _migration().SQLITE[:-2]:
            store.db.execute_sql(sql)
    # 0021 adds no column: the models write rows as a store at 0020 holds them
    store.add_mailbox("support@example.com", "default")
    now = store.now()
    case = Case.create(number="CS0000001", mailbox=store.mailbox("support@example.com"),
                       customer_address="c@customer.test", subject="Old", created=now, updated=now)
    for id_, kind, direction, text in ((1, "customer", "in", "Gramophone crackles"),
                                       (2, "notify", "out", "Templateword gramophone crackles"),
                                       (3, "ack", "out", "Acknowledgementword")):
        Message.create(id=id_, case=case, direction=direction, kind=kind, text=text, raw=b"x", created=now)
    assert _found(store, "templateword", body=True) == ["CS0000001"]  # indexed before 0021
    assert store.migrate()[0] == "0021_lighter_writes"
    from rules.vocab import MessageKind

    assert _migration("0021_lighter_writes").NOT_INDEXED == MessageKind.NOTIFY
    assert _found(store, "templateword", body=True) == []
    assert _found(store, "gramophone", body=True) == ["CS0000001"]
    assert _found(store, "acknowledgementword", body=True) == ["CS0000001"]
    from casestore.search import reindex

    reindex(store)
    assert _found(store, "templateword", body=True) == []
    assert _found(store, "gramophone", body=True) == ["CS0000001"]
    store.db.execute_sql("DELETE FROM message WHERE id IN (2, 3)")
    assert _found(store, "acknowledgementword", body=True) == []
    if store.is_sqlite:  # a 'delete' with other values than indexed would corrupt it
        store.db.execute_sql("INSERT INTO message_fts(message_fts) VALUES ('integrity-check')")
    store.db.execute_sql("DELETE FROM message WHERE id = 1")
    assert _found(store, "gramophone", body=True) == []
    store.close()


def test_a_lost_trigger_is_named_and_reindex_repairs(engine: Engine, cases: list[str], store_url: str,
                                                     tmp_path: Path) -> None:
    store = engine.store
    if store.is_sqlite:  # what peewee's SQLite migrator does when it rebuilds a table
        store.db.execute_sql("DROP TRIGGER case_fts_insert")
        with pytest.raises(SearchError, match=r"case_fts_insert missing.*casegate case reindex"):
            search(store, "garcia")
    deliver(engine, make(from_="Nadia <nadia@customer.test>", subject="test_search written meanwhile"))
    run = _cli(tmp_path, store_url)
    done = run("case", "reindex")
    assert done.exit_code == 0 and f"{len(cases) + 1} cases" in done.output
    from casestore.models import MODELS

    store.db.bind(MODELS)
    assert _found(store, "meanwhile") and _found(store, "garcia") == [cases[0]]
    assert _found(store, "charged twice", body=True) == [cases[1]]


def test_a_huge_crafted_text_still_stores(engine: Engine, store_url: str) -> None:
    """Distinct 4-byte words make the biggest vectors; PostgreSQL refuses one
    over 1 MB, which must never stop a message from being stored."""
    import random

    rnd = random.Random(1)
    text = " ".join("".join(chr(0x20000 + rnd.randrange(40000)) for _ in range(3)) for _ in range(120_000))
    store = engine.store
    mailbox = store.mailbox("support@example.com")
    with store.atomic():
        case = store.new_case(mailbox=mailbox, prefix="CS", customer_address="big@customer.test",
                              customer_name="Big " + text[:50_000], subject=text)
        store.add_message(case=case, direction="in", kind="customer", text=text + " needleword",
                          raw=text.encode())
    assert _found(store, text[:3] + " big", body=False) == [case.number]
