"""rules.commands as tables of cases: CSR's text -> commands, commands +
facts -> errors, commands + facts -> the decision's actions in order."""

from __future__ import annotations

import datetime as dt

import pytest

from rules.commands import (
    Actor,
    CommandFacts,
    Given,
    Parsed,
    check,
    csr_reply,
    decide,
    no_case,
    parse,
)
from rules.decision import (
    AddNote,
    AnswerCustomer,
    Assign,
    Blacklist,
    Cancel,
    CaseState,
    CsrInfo,
    Directory,
    Hit,
    MailboxInfo,
    Notify,
    OpenCase,
    PoolInfo,
    Record,
    Schedule,
    SendCustomer,
    SetStatus,
    StoreMessage,
    TellCsr,
)
from rules.vocab import EventKind, MessageKind, Outcome, Status, TimerKind

DAY = 86400
NOW = dt.datetime(2026, 11, 2, 9, 0, tzinfo=dt.UTC)
JANE, BOB = "jane@example.com", "bob@example.com"
JOHN = "john@customer.test"
SUPPORT = "support@example.com"
NUMBER = "CS0000001"
RAW = "#raw text of the CSR's message"

POOL = PoolInfo("default", remind_after=3 * DAY, autoclose_after=14 * DAY)
DIRECTORY = Directory(
    csrs={JANE: CsrInfo(JANE, "Jane Doe", pools=frozenset({"default"})),
          BOB: CsrInfo(BOB, "Bob Roe", pools=frozenset({"default"}))},
    mailboxes={SUPPORT: MailboxInfo(SUPPORT, "Example Support", POOL)})

RECEIVED, IN_PROGRESS, CLOSED = Status.RECEIVED, Status.IN_PROGRESS, Status.CLOSED
REOPENED, SOLUTION_PROPOSED = Status.REOPENED, Status.SOLUTION_PROPOSED

# What every answer that waits for the customer schedules (POOL: 3d, 14d).
TIMERS = [Cancel((TimerKind.REMIND, TimerKind.AUTOCLOSE)),
          Schedule(TimerKind.REMIND, 3 * DAY), Schedule(TimerKind.AUTOCLOSE, 14 * DAY)]


def closed_by(who: str) -> list:
    return [SetStatus(CLOSED, f"closed by {who}"),
            Cancel((TimerKind.REMIND, TimerKind.AUTOCLOSE, TimerKind.ASSIGN_RETRY)),
            SendCustomer(MessageKind.CLOSED), SendCustomer(MessageKind.SURVEY)]


# -- fact builders -------------------------------------------------------------


def case(status: Status = RECEIVED, *, assignee: str | None = JANE, customer: str = JOHN,
         subject: str = "Printer on fire") -> CaseState:
    return CaseState(number=NUMBER, status=status, mailbox=SUPPORT, customer_address=customer,
                     customer_name="John Smith", subject=subject, assignee=assignee,
                     created=NOW - dt.timedelta(days=1),
                     closed=NOW if status is CLOSED else None)


def facts(status: Status = RECEIVED, *, actor: str | None = JANE, no_case: bool = False,
          assignee: str | None = JANE, customer: str = JOHN, subject: str = "Printer on fire",
          pool: PoolInfo | None = POOL, by_mail: bool = True, has_files: bool = False,
          mail_subject: str = "") -> CommandFacts:
    """Facts for a command; ``actor=None`` is an admin at the shell without --csr."""
    who = Actor(actor, DIRECTORY.csr(actor)) if actor else Actor("", None)
    state = None if no_case else case(status, assignee=assignee, customer=customer, subject=subject)
    return CommandFacts(actor=who, case=state, pool=pool, directory=DIRECTORY,
                        subject=mail_subject, has_files=has_files, by_mail=by_mail)


def cmds(*lines: str) -> list[Given]:
    """``cmds("close", "assign bob@example.com")``: commands as a shell gives them."""
    out = []
    for line in lines:
        name, _, arg = line.partition(" ")
        out.append(Given(name, arg))
    return out


STORE = StoreMessage(MessageKind.COMMAND, RAW)


# -- parse ------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "commands", "body"), [
    pytest.param("#close\n\nAll fixed, goodbye.\n", [Given("close")], "All fixed, goodbye.",
                 id="command-then-text"),
    pytest.param("#take\n#close\nbye", [Given("take"), Given("close")], "bye", id="two-lines"),
    pytest.param("\n\n#take\n\n\n#close\n\nbye\n", [Given("take"), Given("close")], "bye",
                 id="blank-lines-before-and-between"),
    pytest.param("  #close  \nbye", [Given("close")], "bye", id="indented-command"),
    pytest.param("#Close\n", [Given("close")], "", id="name-lower-cased"),
    pytest.param("#assign bob@example.com\nBob, you know this model.\n",
                 [Given("assign", BOB)], "Bob, you know this model.", id="argument"),
    pytest.param("#assign\tbob@example.com", [Given("assign", BOB)], "", id="argument-after-tab"),
    pytest.param("#new Mary Major <mary@customer.test>\nHello",
                 [Given("new", "Mary Major <mary@customer.test>")], "Hello", id="argument-with-spaces"),
    pytest.param("#status in_progress\n#blacklist-subject\n",
                 [Given("status", "in_progress"), Given("blacklist-subject")], "", id="hyphenated-name"),
    pytest.param("#note call back Monday\n", [Given("note")], "call back Monday",
                 id="inline-text-after-argless-command"),
    pytest.param("#note call back Monday\nHe is out until then.\n", [Given("note")],
                 "call back Monday\nHe is out until then.", id="inline-text-leads-the-body"),
    # Inline text ends the command lines: a later #line is part of the text.
    pytest.param("#note call back\n#close\n", [Given("note")], "call back\n#close",
                 id="inline-text-ends-the-commands"),
    pytest.param("#close now please", [Given("close")], "now please", id="inline-text-after-close"),
    pytest.param("#clsoe x\nThanks!", [Given("clsoe", "x")], "Thanks!", id="unknown-keeps-its-argument"),
    pytest.param("#1 priority\nPlease hurry.", [], "#1 priority\nPlease hurry.", id="hash-digit-is-text"),
    pytest.param("# close\n", [], "# close", id="hash-space-is-text"),
    pytest.param("#close\r\n\r\nBye.\r\nJane\r\n", [Given("close")], "Bye.\nJane", id="crlf"),
    pytest.param("Hello,\n#close\n", [], "Hello,\n#close", id="command-below-text-is-text"),
    pytest.param("  Just an answer.  \n", [], "Just an answer.", id="no-commands"),
    pytest.param("", [], "", id="empty"),
    pytest.param("#note\n", [Given("note")], "", id="command-only"),
])
def test_parse(text: str, commands: list[Given], body: str) -> None:
    assert parse(text) == Parsed(tuple(commands), body)


def test_parse_none_is_empty() -> None:
    assert parse(None) == Parsed((), "")  # type: ignore[arg-type]


def test_given_shows_as_written() -> None:
    assert [str(g) for g in cmds("close", "assign bob@example.com")] == ["#close", "#assign bob@example.com"]


# -- check: one reason per branch -----------------------------------------------------


HELP_ASSIGN = "#assign ADDRESS: give the case to another CSR (text below: a note for them)"
HELP_STATUS = "#status STATUS: set the status (received, in_progress, solution_proposed, reopened)"
CSR_TEXT = "text for the customer needs a CSR to sign it (at the shell: --csr ADDRESS)"


@pytest.mark.parametrize(("commands", "text", "kw", "errors"), [
    # generic checks, before each command's own
    pytest.param(cmds("frobnicate"), "", {}, ["#frobnicate: unknown command"], id="unknown"),
    pytest.param([Given("clsoe", "now")], "", {}, ["#clsoe now: unknown command"], id="unknown-with-arg"),
    pytest.param(cmds("close", "close"), "", {}, ["#close is given twice"], id="twice"),
    pytest.param(cmds("assign"), "", {}, [f"#assign needs an argument: {HELP_ASSIGN}"], id="assign-no-arg"),
    pytest.param(cmds("status"), "", {}, [f"#status needs an argument: {HELP_STATUS}"], id="status-no-arg"),
    pytest.param([Given("close", "now")], "", {}, ["#close now: #close takes only NAME=VALUE answers on its line"],
                 id="extra-arg"),
    pytest.param([Given("take", "now")], "", {"actor": BOB}, ["#take now: #take takes no argument"],
                 id="extra-arg-take"),
    pytest.param(cmds("close"), "", {"no_case": True},
                 ["#close needs a case: reply to the case's notification"], id="needs-a-case"),
    pytest.param(cmds("take"), "", {"actor": None},
                 ["#take is for a CSR (at the shell: --csr ADDRESS)"], id="take-needs-a-csr"),
    pytest.param(cmds("solution"), "Do this.", {"actor": None},
                 ["#solution is for a CSR (at the shell: --csr ADDRESS)"], id="solution-needs-a-csr"),
    pytest.param(cmds("new mary@customer.test"), "Hello", {"actor": None, "no_case": True},
                 ["#new is for a CSR (at the shell: --csr ADDRESS)"], id="new-needs-a-csr"),
    pytest.param(cmds("frobnicate", "reopen"), "", {},
                 ["#frobnicate: unknown command", "#reopen applies to closed cases; CS0000001 is received"],
                 id="every-error-in-order"),
    # close / reopen
    pytest.param(cmds("close"), "", {}, [], id="close-ok"),
    pytest.param(cmds("close"), "", {"status": CLOSED}, ["CS0000001 is already closed"], id="close-closed"),
    pytest.param(cmds("reopen"), "", {"status": IN_PROGRESS},
                 ["#reopen applies to closed cases; CS0000001 is in_progress"], id="reopen-open"),
    pytest.param(cmds("reopen"), "", {"status": CLOSED}, [], id="reopen-ok"),
    # note
    pytest.param(cmds("note"), "", {}, ["#note needs the note's text below it (or on its line)"],
                 id="note-empty"),
    pytest.param(cmds("note"), " \n\t", {}, ["#note needs the note's text below it (or on its line)"],
                 id="note-blank"),
    pytest.param(cmds("note"), "He called.", {}, [], id="note-ok"),
    pytest.param(cmds("note"), "He called.", {"actor": None}, [], id="note-by-admin-ok"),
    # assign
    pytest.param([Given("assign", "<>")], "", {},
                 ["#assign needs a CSR's address, e.g. #assign bob@example.com"], id="assign-no-address"),
    pytest.param(cmds("assign nobody@example.com"), "", {},
                 ["nobody@example.com is not a CSR (the pool's CSRs: bob@example.com, jane@example.com)"],
                 id="assign-not-a-csr"),
    pytest.param(cmds("assign nobody@example.com"), "", {"pool": None},
                 ["nobody@example.com is not a CSR"], id="assign-not-a-csr-no-pool"),
    # Words after the address: refused, saying where a note for them goes.
    pytest.param(cmds("assign bob@example.com please"), "", {},
                 ["#assign takes one address ('bob@example.com please'): put your note for them "
                  "below the line"], id="assign-trailing-words"),
    pytest.param(cmds("assign jane@example.com"), "", {},
                 ["CS0000001 is already assigned to jane@example.com"], id="assign-already"),
    pytest.param([Given("assign", "Jane Doe <JANE@Example.com>")], "", {},
                 ["CS0000001 is already assigned to jane@example.com"], id="assign-already-display-form"),
    pytest.param(cmds("assign bob@example.com"), "", {"status": CLOSED},
                 ["CS0000001 is closed: #reopen it first"], id="assign-closed"),
    pytest.param(cmds("assign bob@example.com"), "", {}, [], id="assign-ok"),
    pytest.param([Given("assign", "Bob Roe <BOB@example.com>")], "", {}, [], id="assign-display-form-ok"),
    # take
    pytest.param(cmds("take"), "", {}, ["CS0000001 is already yours"], id="take-already-yours"),
    pytest.param(cmds("take"), "", {"actor": BOB, "status": CLOSED},
                 ["CS0000001 is closed: #reopen it first"], id="take-closed"),
    pytest.param(cmds("take"), "", {"actor": BOB}, [], id="take-ok"),
    pytest.param(cmds("take"), "", {"actor": BOB, "assignee": None}, [], id="take-unassigned-ok"),
    # solution
    pytest.param(cmds("solution"), "Do this.", {"status": CLOSED},
                 ["CS0000001 is closed: #reopen it first"], id="solution-closed"),
    pytest.param(cmds("solution"), "  \n", {}, ["#solution needs the solution's text below it"],
                 id="solution-no-text"),
    pytest.param(cmds("solution"), "Do this.", {"customer": ""},
                 ["CS0000001 has no customer address to send a solution to"], id="solution-no-customer"),
    pytest.param(cmds("solution"), "Do this.", {}, [], id="solution-ok"),
    # status
    pytest.param(cmds("status bogus"), "", {},
                 ["'bogus' is not a status: use received, in_progress, solution_proposed, "
                  "under_consultation, closed, reopened"], id="status-unknown"),
    pytest.param(cmds("status closed"), "", {}, ["use #close to close a case (the customer is told)"],
                 id="status-closed"),
    pytest.param(cmds("status in_progress"), "", {"status": CLOSED},
                 ["CS0000001 is closed: #reopen it first"], id="status-of-closed-case"),
    pytest.param(cmds("status in_progress"), "", {"status": IN_PROGRESS},
                 ["CS0000001 is already in_progress"], id="status-same"),
    pytest.param(cmds("status IN_PROGRESS"), "", {}, [], id="status-ok-any-case"),
    # blacklist, blacklist-subject
    pytest.param(cmds("blacklist"), "", {"customer": ""},
                 ["no address is not a full address: a command never blacklists a domain"],
                 id="blacklist-no-address"),
    pytest.param(cmds("blacklist"), "", {"customer": "customer.test"},
                 ["customer.test is not a full address: a command never blacklists a domain"],
                 id="blacklist-domain"),
    pytest.param(cmds("blacklist-subject"), "", {"customer": "@customer.test"},
                 ["@customer.test is not a full address: a command never blacklists a domain"],
                 id="blacklist-subject-no-local-part"),
    pytest.param(cmds("blacklist"), "", {"customer": "john@"},
                 ["john@ is not a full address: a command never blacklists a domain"],
                 id="blacklist-no-domain"),
    pytest.param(cmds("blacklist"), "", {"customer": BOB},
                 ["bob@example.com is one of our own addresses (a CSR or a supervised address)"],
                 id="blacklist-a-csr"),
    pytest.param(cmds("blacklist"), "", {"customer": "support+CS0000001@example.com"},
                 ["support+CS0000001@example.com is one of our own addresses (a CSR or a supervised address)"],
                 id="blacklist-a-mailbox-tag"),
    pytest.param(cmds("blacklist-subject"), "", {"customer": "pat@example.com"},
                 ["pat@example.com is in the staff domain example.com: blacklist it from the shell if you must"],
                 id="blacklist-staff-domain"),
    pytest.param(cmds("blacklist"), "", {"customer": "pat@example.com", "actor": None}, [],
                 id="blacklist-staff-domain-from-shell-ok"),
    pytest.param(cmds("blacklist"), "", {}, [], id="blacklist-ok"),
    # new
    pytest.param(cmds("new mary@customer.test"), "Hello", {},
                 ["#new opens a case: write it to the support address, not to CS0000001"], id="new-on-a-case"),
    pytest.param(cmds("new mary"), "Hello", {"no_case": True},
                 ["#new needs the customer's address, e.g. #new customer@example.org"], id="new-no-at"),
    pytest.param(cmds("new @customer.test"), "Hello", {"no_case": True},
                 ["#new needs the customer's address, e.g. #new customer@example.org"], id="new-no-local-part"),
    pytest.param(cmds("new mary@"), "Hello", {"no_case": True},
                 ["#new needs the customer's address, e.g. #new customer@example.org"], id="new-no-domain"),
    pytest.param([Given("new", "Jane <JANE@example.com>")], "Hello", {"no_case": True},
                 ["jane@example.com is one of our own addresses: a CSR is never a case's customer"],
                 id="new-a-csr"),
    pytest.param(cmds("new Support+x@Example.com"), "Hello", {"no_case": True},
                 ["support+x@example.com is one of our own addresses: a CSR is never a case's customer"],
                 id="new-a-mailbox"),
    pytest.param(cmds("new mary@customer.test"), " \n", {"no_case": True},
                 ["#new needs your first message to the customer below it"], id="new-no-text"),
    pytest.param(cmds("new mary@customer.test"), "", {"no_case": True, "has_files": True}, [],
                 id="new-files-only-ok"),
    pytest.param([Given("new", "Mary Major <mary@customer.test>")], "Hello", {"no_case": True}, [],
                 id="new-ok"),
    # text for the customer
    pytest.param(cmds("close"), "Bye.", {"actor": None}, [CSR_TEXT], id="admin-text-for-customer"),
    pytest.param(cmds("status in_progress"), "Hello", {"actor": None}, [CSR_TEXT],
                 id="admin-text-under-status"),
    pytest.param(cmds("close"), "", {"actor": None}, [], id="admin-close-without-text-ok"),
    pytest.param(cmds("assign bob@example.com"), "a note", {"actor": None}, [],
                 id="admin-note-text-ok"),
    pytest.param(cmds("close"), "Bye.", {"actor": None, "no_case": True},
                 ["#close needs a case: reply to the case's notification"], id="no-case-error-only"),
    pytest.param(cmds("frobnicate"), "Bye.", {"actor": None}, ["#frobnicate: unknown command"],
                 id="other-errors-first"),
    # combinations that are fine
    pytest.param(cmds("take", "close"), "Bye.", {"actor": BOB}, [], id="take-and-close-ok"),
    pytest.param(cmds("take", "solution"), "Do this.", {"actor": BOB}, [], id="take-and-solution-ok"),
    pytest.param(cmds("assign bob@example.com", "note"), "see this", {}, [], id="assign-and-note-ok"),
    # #reopen acts first (_ORDER): the others are checked against the reopened case.
    pytest.param(cmds("reopen", "take"), "", {"actor": BOB, "status": CLOSED}, [], id="reopen-and-take"),
    pytest.param(cmds("reopen", "assign bob@example.com"), "", {"status": CLOSED}, [], id="reopen-and-assign"),
    pytest.param(cmds("reopen", "solution"), "Try this.", {"status": CLOSED}, [], id="reopen-and-solution"),
    pytest.param(cmds("reopen", "take"), "", {"status": CLOSED}, ["CS0000001 is already yours"],
                 id="reopen-and-take-still-checked"),
])
def test_check(commands: list[Given], text: str, kw: dict, errors: list[str]) -> None:
    assert check(commands, text, facts(**kw)) == errors


_ARGS = {"new": "new mary@customer.test", "status": "status in_progress", "assign": "assign bob@example.com"}


@pytest.mark.parametrize(("a", "b", "message"), [
    ("close", "reopen", "#close and #reopen cannot be given together"),
    ("assign", "take", "#assign and #take cannot be given together"),
    ("close", "solution", "#close and #solution cannot be given together"),
    ("status", "close", "#close and #status cannot be given together"),
    ("status", "solution", "#solution and #status cannot be given together"),
    ("status", "reopen", "#reopen and #status cannot be given together"),
    ("note", "solution", "#note and #solution cannot be given together"),
    ("new", "close", "#close and #new cannot be given together"),
    ("new", "solution", "#new and #solution cannot be given together"),
])
def test_check_exclusive_pairs(a: str, b: str, message: str) -> None:
    for first, second in ((a, b), (b, a)):
        errors = check(cmds(_ARGS.get(first, first), _ARGS.get(second, second)), "Some text.",
                       facts(actor=BOB))
        assert errors.count(message) == 1, (first, second, errors)


# -- decide ------------------------------------------------------------------------------------


def answer(text: str, who: str = JANE, kind: MessageKind = MessageKind.REPLY) -> list:
    return [AnswerCustomer(who, text, kind)] + ([Record(EventKind.REPLIED, actor=who)]
                                                if kind is MessageKind.REPLY else [])


def command_record(line: str, who: str = JANE) -> Record:
    return Record(EventKind.COMMAND, line, who)


NOTE = "Bob, you know this model."
LONG_SUBJECT = "x" * 250


@pytest.mark.parametrize(("commands", "text", "kw", "actions"), [
    pytest.param(cmds("close"), "All fixed, goodbye.\n", {}, [
        StoreMessage(MessageKind.CSR, "All fixed, goodbye."), command_record("#close"),
        *answer("All fixed, goodbye."), *closed_by(JANE)], id="close-with-text-answer-then-closing"),
    pytest.param(cmds("close"), "", {}, [
        STORE, command_record("#close"), *closed_by(JANE)], id="close-commands-only"),
    pytest.param(cmds("take"), "", {"actor": BOB}, [
        STORE, command_record("#take", BOB), Assign(BOB, "took it"),
        SetStatus(IN_PROGRESS, "taken by bob@example.com")], id="take-received"),
    pytest.param(cmds("take"), "", {"actor": BOB, "status": REOPENED}, [
        STORE, command_record("#take", BOB), Assign(BOB, "took it"),
        SetStatus(IN_PROGRESS, "taken by bob@example.com")], id="take-reopened"),
    pytest.param(cmds("take"), "", {"actor": BOB, "status": SOLUTION_PROPOSED}, [
        STORE, command_record("#take", BOB), Assign(BOB, "took it")], id="take-keeps-other-status"),
    pytest.param(cmds("take"), "On it.", {"actor": BOB}, [
        StoreMessage(MessageKind.CSR, "On it."), command_record("#take", BOB), Assign(BOB, "took it"),
        SetStatus(IN_PROGRESS, "taken by bob@example.com"), *answer("On it.", BOB), *TIMERS],
                 id="take-with-text-answers-and-waits"),
    pytest.param(cmds("close", "take"), "Bye.", {"actor": BOB}, [
        StoreMessage(MessageKind.CSR, "Bye."), command_record("#close #take", BOB),
        Assign(BOB, "took it"), SetStatus(IN_PROGRESS, "taken by bob@example.com"),
        *answer("Bye.", BOB), *closed_by(BOB)], id="take-then-close-whatever-the-order"),
    pytest.param(cmds("note"), "He called.\n", {}, [
        STORE, command_record("#note"), AddNote(JANE, "He called.")], id="note-never-answers"),
    pytest.param(cmds("assign bob@example.com"), NOTE, {}, [
        STORE, command_record("#assign bob@example.com"),
        Assign(BOB, "assigned by jane@example.com", note=NOTE), AddNote(JANE, NOTE),
        Notify("Assigned to you by jane@example.com", note=NOTE)], id="assign-text-is-a-note"),
    pytest.param([Given("assign", "Bob Roe <BOB@Example.com>")], "", {}, [
        STORE, command_record("#assign Bob Roe <BOB@Example.com>"),
        Assign(BOB, "assigned by jane@example.com"),
        Notify("Assigned to you by jane@example.com")], id="assign-without-text"),
    pytest.param(cmds("assign bob@example.com", "close"), "Bye.", {}, [
        STORE, command_record("#assign bob@example.com #close"),
        Assign(BOB, "assigned by jane@example.com", note="Bye."), AddNote(JANE, "Bye."),
        Notify("Assigned to you by jane@example.com", note="Bye."), *closed_by(JANE)],
                 id="a-note-command-makes-the-text-a-note-never-an-answer"),
    pytest.param(cmds("solution"), "Turn it off and on again.\n", {}, [
        StoreMessage(MessageKind.CSR, "Turn it off and on again."), command_record("#solution"),
        *answer("Turn it off and on again.", kind=MessageKind.SOLUTION),
        SetStatus(SOLUTION_PROPOSED, "solution proposed by jane@example.com"), *TIMERS],
                 id="solution-answer-status-timers"),
    pytest.param(cmds("solution", "take"), "Do this.", {"actor": BOB}, [
        StoreMessage(MessageKind.CSR, "Do this."), command_record("#solution #take", BOB),
        Assign(BOB, "took it"), SetStatus(IN_PROGRESS, "taken by bob@example.com"),
        *answer("Do this.", BOB, MessageKind.SOLUTION),
        SetStatus(SOLUTION_PROPOSED, "solution proposed by bob@example.com"), *TIMERS],
                 id="take-then-solution"),
    # Reopened and answered: in progress again, waiting for the customer.
    pytest.param(cmds("reopen"), "We look again.", {"status": CLOSED}, [
        StoreMessage(MessageKind.CSR, "We look again."), command_record("#reopen"),
        SetStatus(REOPENED, "reopened by jane@example.com"), *answer("We look again."),
        SetStatus(IN_PROGRESS, "answered by jane@example.com"), *TIMERS],
                 id="reopen-with-text"),
    pytest.param(cmds("status in_progress"), "", {}, [
        STORE, command_record("#status in_progress"),
        SetStatus(IN_PROGRESS, "set by jane@example.com")], id="status"),
    pytest.param(cmds("status in_progress"), "Hello.", {}, [
        StoreMessage(MessageKind.CSR, "Hello."), command_record("#status in_progress"),
        SetStatus(IN_PROGRESS, "set by jane@example.com"), *answer("Hello."), *TIMERS],
                 id="status-with-text-answers"),
    pytest.param(cmds("blacklist"), "Spam.", {}, [
        STORE, command_record("#blacklist"), Blacklist(JOHN, None, JANE), AddNote(JANE, "Spam.")],
                 id="blacklist-text-is-a-note"),
    pytest.param(cmds("blacklist-subject"), "", {"subject": "Win (big) $$$"}, [
        STORE, command_record("#blacklist-subject"), Blacklist(JOHN, r"^Win\ \(big\)\ \$\$\$$", JANE)],
                 id="blacklist-subject-anchored"),
    pytest.param(cmds("blacklist-subject"), "", {"subject": LONG_SUBJECT}, [
        STORE, command_record("#blacklist-subject"), Blacklist(JOHN, "^" + "x" * 200, JANE)],
                 id="blacklist-long-subject-by-its-start"),
    pytest.param(cmds("blacklist-subject"), "", {"subject": ""}, [
        STORE, command_record("#blacklist-subject"), Blacklist(JOHN, None, JANE)],
                 id="blacklist-subject-without-subject"),
])
def test_decide_by_mail(commands: list[Given], text: str, kw: dict, actions: list) -> None:
    got = decide(commands, text, facts(**kw), store=STORE)
    assert (got.outcome, got.errors) == (Outcome.CSR_COMMAND, ())
    assert list(got.actions) == actions
    assert got.hits[0] == Hit("commands", " ".join(str(g) for g in commands)
                              + f" by {kw.get('actor', JANE)}")
    assert not any(isinstance(a, TellCsr) for a in got.actions)


@pytest.mark.parametrize(("commands", "text", "actor", "actions"), [
    pytest.param(cmds("close"), "", None, [command_record("#close", "admin"), *closed_by("admin")],
                 id="admin-close"),
    pytest.param(cmds("note"), "Checked stock.", None, [
        command_record("#note", "admin"), AddNote("admin", "Checked stock.")], id="admin-note"),
    pytest.param(cmds("assign bob@example.com"), NOTE, None, [
        command_record("#assign bob@example.com", "admin"), Assign(BOB, "assigned by admin", note=NOTE),
        AddNote("admin", NOTE), Notify("Assigned to you by admin", note=NOTE)], id="admin-assign-with-note"),
    pytest.param(cmds("close"), "Bye.", BOB, [
        StoreMessage(MessageKind.CSR, "Bye."), command_record("#close", BOB), *answer("Bye.", BOB),
        *closed_by(BOB)], id="csr-close-with-text-keeps-the-answer"),
    pytest.param(cmds("solution"), "Do this.", BOB, [
        StoreMessage(MessageKind.CSR, "Do this."), command_record("#solution", BOB),
        *answer("Do this.", BOB, MessageKind.SOLUTION),
        SetStatus(SOLUTION_PROPOSED, "solution proposed by bob@example.com"), *TIMERS],
                 id="csr-solution-keeps-the-answer"),
])
def test_decide_from_the_shell(commands: list[Given], text: str, actor: str | None, actions: list) -> None:
    """As the shell calls it: a store action only when there is text, kept only when it is an answer."""
    store = StoreMessage(MessageKind.COMMAND, text) if text.strip() else None
    got = decide(commands, text, facts(actor=actor, by_mail=False), store=store)
    assert got.outcome is Outcome.CSR_COMMAND
    assert list(got.actions) == actions


def test_decide_note_on_the_command_line() -> None:
    parsed = parse("#note call back Monday\n")
    got = decide(parsed.commands, parsed.text, facts(), store=STORE)
    assert list(got.actions) == [STORE, command_record("#note"), AddNote(JANE, "call back Monday")]


@pytest.mark.parametrize(("commands", "text", "notes"), [
    pytest.param(cmds("assign bob@example.com", "note"), NOTE, 1, id="assign-and-note"),
    pytest.param(cmds("blacklist", "note"), "Spam.", 1, id="blacklist-and-note"),
    pytest.param(cmds("assign bob@example.com", "blacklist", "note"), "Spam.", 1, id="assign-blacklist-and-note"),
    pytest.param(cmds("note"), NOTE, 1, id="note-alone"),
    pytest.param(cmds("assign bob@example.com"), NOTE, 1, id="assign-alone"),
])
def test_decide_one_text_is_one_note(commands: list[Given], text: str, notes: int) -> None:
    got = decide(commands, text, facts(), store=STORE)
    assert got.outcome is Outcome.CSR_COMMAND
    assert [a for a in got.actions if isinstance(a, AddNote)] == [AddNote(JANE, text)] * notes


@pytest.mark.parametrize(("arg", "mail_subject", "customer", "name", "subject"), [
    ("Mary Major <Mary@Customer.test>", "Your order 42", "mary@customer.test", "Mary Major", "Your order 42"),
    ("mary@customer.test", "", "mary@customer.test", "", "(no subject)"),
])
def test_decide_new_opens_the_case_first(arg: str, mail_subject: str, customer: str, name: str,
                                         subject: str) -> None:
    text = "Your order has shipped.\n"
    got = decide([Given("new", arg)], text, facts(no_case=True, mail_subject=mail_subject), store=STORE)
    assert got.outcome is Outcome.PROACTIVE_CASE
    assert list(got.actions) == [
        OpenCase(customer, name, subject, status=IN_PROGRESS, reason="opened by jane@example.com"),
        StoreMessage(MessageKind.CSR, text), Assign(JANE, "opened it"),
        *answer("Your order has shipped."), *TIMERS]


@pytest.mark.parametrize(("commands", "text", "kw", "errors"), [
    pytest.param(cmds("clsoe"), "Thanks!", {}, ["#clsoe: unknown command"], id="unknown"),
    pytest.param(cmds("take", "close", "frobnicate"), "bye", {"actor": BOB},
                 ["#frobnicate: unknown command"], id="one-bad-line-nothing-done"),
    pytest.param(cmds("reopen", "take"), "", {},
                 ["#reopen applies to closed cases; CS0000001 is received", "CS0000001 is already yours"],
                 id="two-errors"),
])
def test_decide_refused_by_mail(commands: list[Given], text: str, kw: dict, errors: list[str]) -> None:
    f = facts(**kw)
    who = f.actor.address
    got = decide(commands, text, f, store=STORE)
    assert (got.outcome, got.errors) == (Outcome.CSR_COMMAND_REFUSED, tuple(errors))
    store, record, tell = got.actions  # nothing else: no status, no answer, no note
    assert store == STORE
    assert record == Record(EventKind.COMMAND_REFUSED, "; ".join(errors), who)
    assert (tell.to, tell.subject) == (who, "Not done: " + ", ".join(str(g) for g in commands))
    assert tell.text.startswith("Nothing was done with your message:\n\n")
    for error in errors:
        assert f"  - {error}\n" in tell.text
    assert "#close [NAME=VALUE …]: close the case" in tell.text and "nothing was sent to the customer" in tell.text
    assert got.hits[-1] == Hit("command_refused", "; ".join(errors))


def test_decide_refused_without_a_case_tells_the_csr_only() -> None:
    got = decide(cmds("close"), "", facts(no_case=True), store=STORE)
    assert got.outcome is Outcome.CSR_COMMAND_REFUSED
    assert [type(a) for a in got.actions] == [StoreMessage, TellCsr]
    assert got.actions[1].to == JANE


@pytest.mark.parametrize(("actor", "label"), [(None, "admin"), (BOB, BOB)])
def test_decide_refused_at_the_shell_sends_no_mail(actor: str | None, label: str) -> None:
    got = decide(cmds("reopen"), "", facts(actor=actor, by_mail=False))
    assert got.outcome is Outcome.CSR_COMMAND_REFUSED
    assert got.errors == ("#reopen applies to closed cases; CS0000001 is received",)
    assert list(got.actions) == [Record(EventKind.COMMAND_REFUSED, got.errors[0], label)]


# -- csr_reply, no_case ------------------------------------------------------------------------


CSR_STORE = StoreMessage(MessageKind.CSR, "We are on it.")
CLOSE_ON_REPLY = PoolInfo("default", close_on_reply=True, remind_after=3 * DAY, autoclose_after=14 * DAY)
NO_TIMERS = PoolInfo("default")
EMPTY = Record(EventKind.EMPTY_REPLY, "nothing above the quoted text: nothing sent to the customer", JANE)
IN_PROGRESS_BY_JANE = SetStatus(IN_PROGRESS, "answered by jane@example.com")
CLOSED_ON_REPLY = [SetStatus(CLOSED, "pool default: close on reply"),
                   Cancel((TimerKind.REMIND, TimerKind.AUTOCLOSE, TimerKind.ASSIGN_RETRY)),
                   SendCustomer(MessageKind.CLOSED), SendCustomer(MessageKind.SURVEY)]


@pytest.mark.parametrize(("text", "files", "kw", "outcome", "actions"), [
    pytest.param("We are on it.\n", False, {"assignee": None}, Outcome.CSR_REPLY, [
        CSR_STORE, Assign(JANE, "jane@example.com answered"), *answer("We are on it."),
        IN_PROGRESS_BY_JANE, *TIMERS], id="unassigned-is-assigned-to-who-answers"),
    pytest.param("We are on it.", False, {}, Outcome.CSR_REPLY, [
        CSR_STORE, *answer("We are on it."), IN_PROGRESS_BY_JANE, *TIMERS], id="received"),
    pytest.param("We are on it.", False, {"status": REOPENED}, Outcome.CSR_REPLY, [
        CSR_STORE, *answer("We are on it."), IN_PROGRESS_BY_JANE, *TIMERS], id="reopened"),
    pytest.param("We are on it.", False, {"status": SOLUTION_PROPOSED}, Outcome.CSR_REPLY, [
        CSR_STORE, *answer("We are on it."), IN_PROGRESS_BY_JANE, *TIMERS], id="solution-proposed"),
    pytest.param("We are on it.", False, {"status": IN_PROGRESS}, Outcome.CSR_REPLY, [
        CSR_STORE, *answer("We are on it."), *TIMERS], id="in-progress-keeps-status"),
    pytest.param("We are on it.", False, {"actor": BOB}, Outcome.CSR_REPLY, [
        CSR_STORE, *answer("We are on it.", BOB), SetStatus(IN_PROGRESS, "answered by bob@example.com"),
        *TIMERS], id="not-the-assignee-no-reassign"),
    pytest.param("", False, {}, Outcome.CSR_EMPTY_REPLY, [CSR_STORE, EMPTY], id="empty"),
    pytest.param(" \n\n", False, {}, Outcome.CSR_EMPTY_REPLY, [CSR_STORE, EMPTY], id="blank"),
    pytest.param("", False, {"assignee": None}, Outcome.CSR_EMPTY_REPLY, [
        CSR_STORE, Assign(JANE, "jane@example.com answered"), EMPTY], id="empty-unassigned"),
    pytest.param("", True, {}, Outcome.CSR_REPLY, [
        CSR_STORE, *answer(""), IN_PROGRESS_BY_JANE, *TIMERS], id="files-only-is-an-answer"),
    pytest.param("Done.", False, {"pool": CLOSE_ON_REPLY}, Outcome.CSR_REPLY, [
        CSR_STORE, *answer("Done."), IN_PROGRESS_BY_JANE, *CLOSED_ON_REPLY], id="close-on-reply"),
    pytest.param("Done.", False, {"pool": NO_TIMERS, "status": IN_PROGRESS}, Outcome.CSR_REPLY, [
        CSR_STORE, *answer("Done."), Cancel((TimerKind.REMIND, TimerKind.AUTOCLOSE))], id="timers-off"),
    pytest.param("One more thing.", False, {"status": CLOSED}, Outcome.CSR_REPLY, [
        CSR_STORE, *answer("One more thing.")], id="closed-stays-closed"),
    pytest.param("One more thing.", False, {"status": CLOSED, "pool": CLOSE_ON_REPLY}, Outcome.CSR_REPLY, [
        CSR_STORE, *answer("One more thing.")], id="closed-stays-closed-no-second-closing"),
])
def test_csr_reply(text: str, files: bool, kw: dict, outcome: Outcome, actions: list) -> None:
    got = csr_reply(text, files, facts(**kw), store=CSR_STORE)
    assert got.outcome is outcome
    assert list(got.actions) == actions
    rules = [h.rule for h in got.hits]
    assert rules[0] == "csr_reply"
    assert ("close_on_reply" in rules) == (kw.get("pool") is CLOSE_ON_REPLY and kw.get("status") is not CLOSED)
    assert ("closed_case" in rules) == (kw.get("status") is CLOSED and outcome is Outcome.CSR_REPLY)


def test_no_case() -> None:
    store = StoreMessage(MessageKind.CSR, "Please call Mary.")
    got = no_case(facts(no_case=True), store=store)
    assert got.outcome is Outcome.CSR_NO_CASE
    assert got.hits == (Hit("csr_no_case", "a CSR is never the customer of a case"),)
    first, tell = got.actions
    assert first == store
    assert (tell.to, tell.subject) == (JANE, "Not sent: no case")
    assert "#new customer@example.org" in tell.text and "reply to its notification" in tell.text
