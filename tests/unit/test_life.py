"""rules.life as tables of cases: a customer's message, automatic mail, a
bounce or a due timer, with the case's state -> the decision."""

from __future__ import annotations

import datetime as dt

import pytest

from rules.decision import (
    Acknowledge,
    Assign,
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
    SendCustomer,
    SetRating,
    SetStatus,
    StoreMessage,
)
from rules.life import (
    AutomaticFacts,
    CustomerFacts,
    on_automatic,
    on_bounce,
    on_customer,
    on_timer,
    rating_of,
)
from rules.match import Match
from rules.vocab import ClosedPolicy, EventKind, MessageKind, Outcome, Status, TimerKind

DAY = 86400
NOW = dt.datetime(2026, 11, 2, 9, 0, tzinfo=dt.UTC)
JANE, BOB, AWAY = "jane@example.com", "bob@example.com", "away@example.com"
JOHN = "john@customer.test"
SUPPORT = "support@example.com"
NUMBER = "CS0000001"
TEXT = "My printer is on fire.\n"

RECEIVED, IN_PROGRESS, CLOSED = Status.RECEIVED, Status.IN_PROGRESS, Status.CLOSED
REOPENED, SOLUTION_PROPOSED = Status.REOPENED, Status.SOLUTION_PROPOSED
UNDER_CONSULTATION = Status.UNDER_CONSULTATION

NEW = Match(None, "new_case", "no case referenced")
JOINED = Match(NUMBER, "plus_address", "plus address CS0000001, sender takes part")


def pool(policy: str = "reopen", **kw) -> PoolInfo:
    return PoolInfo("default", rule="least_load", closed_policy=ClosedPolicy.parse(policy), **kw)


DIRECTORY = Directory(
    csrs={JANE: CsrInfo(JANE, "Jane Doe", pools=frozenset({"default"})),
          BOB: CsrInfo(BOB, "Bob Roe", pools=frozenset({"default"})),
          AWAY: CsrInfo(AWAY, "Al Way", available=False, pools=frozenset({"default"}))},
    mailboxes={SUPPORT: MailboxInfo(SUPPORT, "Example Support", pool())})


def case(status: Status = IN_PROGRESS, *, assignee: str | None = JANE, closed_days_ago: float | None = None,
         survey_sent: bool = False) -> CaseState:
    closed = NOW - dt.timedelta(days=closed_days_ago) if closed_days_ago is not None else None
    return CaseState(number=NUMBER, status=status, mailbox=SUPPORT, customer_address=JOHN,
                     customer_name="John Smith", subject="Printer on fire", assignee=assignee,
                     created=NOW - dt.timedelta(days=30), closed=closed, survey_sent=survey_sent)


def customer(state: CaseState | None = None, *, text: str = TEXT, reply_text: str | None = None,
             sender: str = JOHN, cc: tuple[str, ...] = (), no_ack: str | None = None,
             policy: str = "reopen", match: Match | None = None,
             answers_survey: bool = True) -> CustomerFacts:
    box = MailboxInfo(SUPPORT, "Example Support", pool(policy))
    return CustomerFacts(mailbox=box, directory=DIRECTORY, case=state,
                         match=match or (NEW if state is None else JOINED), sender=sender,
                         sender_name="John Smith", subject="Printer on fire", cc=cc, text=text,
                         reply_text=text if reply_text is None else reply_text, no_ack_reason=no_ack, now=NOW,
                         answers_survey=answers_survey)


CLOSING_ACTIONS = [Cancel((TimerKind.REMIND, TimerKind.AUTOCLOSE, TimerKind.ASSIGN_RETRY)),
                   SendCustomer(MessageKind.CLOSED), SendCustomer(MessageKind.SURVEY)]
WAITING = Cancel((TimerKind.REMIND, TimerKind.AUTOCLOSE))
BY_RULE = Assign(None, "least_load")


def stored(kind: MessageKind = MessageKind.CUSTOMER, text: str = TEXT) -> list:
    out: list = [StoreMessage(kind, text)]
    if kind is MessageKind.CUSTOMER:
        out.append(Record(EventKind.CUSTOMER_REPLIED, JOINED.rule, JOHN))
    return out


# -- on_customer: a new case ---------------------------------------------------------


def new_case_actions(*, participants: tuple[str, ...] = (), mentions: tuple[str, ...] = (),
                     reason: str = NEW.reason, ack: object = None, follow_up_of: str | None = None,
                     sender: str = JOHN) -> list:
    return [OpenCase(sender, "John Smith", "Printer on fire", participants=participants,
                     follow_up_of=follow_up_of, mentions=mentions, reason=reason),
            StoreMessage(MessageKind.CUSTOMER, TEXT), BY_RULE, ack or Acknowledge(),
            Notify(f"New case (follow-up of {follow_up_of})" if follow_up_of else "New case")]


@pytest.mark.parametrize(("cc", "participants"), [
    pytest.param((), (), id="no-cc"),
    pytest.param(("amy@customer.test",), ("amy@customer.test",), id="one-cc"),
    pytest.param(("amy@customer.test", JOHN, "amy@customer.test", "bill@customer.test"),
                 ("amy@customer.test", "bill@customer.test"), id="minus-sender-and-duplicates"),
    pytest.param((SUPPORT, "support+CS0000009@example.com", JANE, "Support@Example.com", "amy@customer.test"),
                 ("amy@customer.test",), id="minus-our-own"),
    pytest.param((JANE, BOB), (), id="only-our-own"),
])
def test_new_case_participants(cc: tuple[str, ...], participants: tuple[str, ...]) -> None:
    got = on_customer(customer(cc=cc))
    assert got.outcome is Outcome.NEW_CASE
    assert list(got.actions) == new_case_actions(participants=participants)
    assert got.hits == (Hit("new_case", "no case referenced"),)


def test_new_case_notes_the_numbers_it_mentions() -> None:
    match = Match(None, "new_case_foreign_tag", "mentions CS0000009 but the sender takes no part: new case",
                  ("CS0000009",))
    got = on_customer(customer(match=match))
    assert got.outcome is Outcome.NEW_CASE
    assert list(got.actions) == new_case_actions(mentions=("CS0000009",), reason=match.reason)
    assert got.hits[0] == Hit("new_case_foreign_tag", match.reason)


@pytest.mark.parametrize(("sender", "no_ack", "reason"), [
    pytest.param("noreply@shop.test", None, "noreply is a role address that never gets an automatic answer",
                 id="noreply"),
    pytest.param("postmaster@customer.test", None,
                 "postmaster is a role address that never gets an automatic answer", id="postmaster"),
    pytest.param("Mailer-Daemon@customer.test", None,
                 "Mailer-Daemon is a role address that never gets an automatic answer", id="mailer-daemon"),
    pytest.param(JANE, None, "never to our own addresses", id="a-csr"),
    pytest.param("support+x@example.com", None, "never to our own addresses", id="our-mailbox"),
    pytest.param("", None, "no address to answer", id="no-address"),
    pytest.param(JOHN, "Auto-Submitted: auto-generated", "Auto-Submitted: auto-generated", id="suppressed"),
    pytest.param("noreply@shop.test", "Precedence: bulk",
                 "noreply is a role address that never gets an automatic answer", id="role-reason-first"),
])
def test_new_case_without_acknowledgement(sender: str, no_ack: str | None, reason: str) -> None:
    got = on_customer(customer(sender=sender, no_ack=no_ack))
    assert got.outcome is Outcome.NEW_CASE
    assert list(got.actions) == new_case_actions(sender=sender, ack=Record(EventKind.NO_ACK, reason))
    assert Hit("no_ack", reason) in got.hits


@pytest.mark.parametrize(("acknowledge", "sender", "ack"), [
    pytest.param(True, JOHN, Acknowledge(), id="on"),
    pytest.param(False, JOHN, Record(EventKind.NO_ACK, "pool default: acknowledgements off"), id="off"),
    pytest.param(False, "noreply@shop.test",
                 Record(EventKind.NO_ACK, "noreply is a role address that never gets an automatic answer"),
                 id="off-role-reason-first"),
])
def test_new_case_acknowledgement_per_pool(acknowledge: bool, sender: str, ack: object) -> None:
    from dataclasses import replace

    facts = replace(customer(sender=sender),
                    mailbox=MailboxInfo(SUPPORT, "Example Support", pool(acknowledge=acknowledge)))
    got = on_customer(facts)
    assert got.outcome is Outcome.NEW_CASE
    assert list(got.actions) == new_case_actions(sender=sender, ack=ack)



@pytest.mark.parametrize(("pool_ack", "mailbox_ack", "ack"), [
    pytest.param(True, None, Acknowledge(), id="inherit-on"),
    pytest.param(False, None, Record(EventKind.NO_ACK, "pool default: acknowledgements off"),
                 id="inherit-off"),
    pytest.param(False, True, Acknowledge(), id="mailbox-on-beats-pool-off"),
    pytest.param(True, False, Record(EventKind.NO_ACK, f"mailbox {SUPPORT}: acknowledgements off"),
                 id="mailbox-off-beats-pool-on"),
])
def test_new_case_acknowledgement_per_mailbox(pool_ack: bool, mailbox_ack: bool | None,
                                              ack: object) -> None:
    from dataclasses import replace

    info = MailboxInfo(SUPPORT, "Example Support", pool(acknowledge=pool_ack), acknowledge=mailbox_ack)
    assert info.acknowledges is (pool_ack if mailbox_ack is None else mailbox_ack)
    got = on_customer(replace(customer(sender=JOHN), mailbox=info))
    assert got.outcome is Outcome.NEW_CASE
    assert list(got.actions) == new_case_actions(sender=JOHN, ack=ack)

# -- on_customer: a closed case -------------------------------------------------------


@pytest.mark.parametrize(("survey_sent", "reply", "outcome", "rating"), [
    pytest.param(True, "4 - quick and kind\n", Outcome.RATING, (4, "quick and kind"), id="rated"),
    pytest.param(True, "5/5", Outcome.RATING, (5, ""), id="rated-out-of-5"),
    pytest.param(False, "4 - quick and kind\n", Outcome.REOPENED, None, id="no-survey-no-rating"),
    pytest.param(True, "It broke again.", Outcome.REOPENED, None, id="survey-but-no-rating"),
    pytest.param(True, "10 times I tried", Outcome.REOPENED, None, id="not-a-grade"),
])
def test_closed_case_rating(survey_sent: bool, reply: str, outcome: Outcome,
                            rating: tuple[int, str] | None) -> None:
    got = on_customer(customer(case(CLOSED, closed_days_ago=1, survey_sent=survey_sent), text=reply))
    assert got.outcome is outcome
    if rating is None:
        assert not any(isinstance(a, SetRating) for a in got.actions)
        return
    assert list(got.actions) == [StoreMessage(MessageKind.RATING, reply), SetRating(*rating),
                                 Record(EventKind.RATED, f"{rating[0]}/5", JOHN),
                                 SendCustomer(MessageKind.THANKS)]
    assert got.hits[-1] == Hit("survey_rating", f"first line rates {rating[0]} of 5")


@pytest.mark.parametrize(("reply", "outcome"), [
    ("5", Outcome.RATING), ("4/5", Outcome.RATING), ("3 stars", Outcome.RATING),
    ("2 more questions about my invoice", Outcome.REOPENED),
    ("3 printers are broken again", Outcome.REOPENED),
    ("1) it broke again", Outcome.REOPENED),
])
def test_rating_outside_a_reply_to_the_survey_is_the_grade_alone(reply: str, outcome: Outcome) -> None:
    """A new question to a closed case is no rating (found writing docs/cases.md)."""
    got = on_customer(customer(case(CLOSED, closed_days_ago=1, survey_sent=True), text=reply,
                               answers_survey=False))
    assert got.outcome is outcome


def test_rating_reads_the_reply_not_the_quoted_survey() -> None:
    state = case(CLOSED, closed_days_ago=1, survey_sent=True)
    got = on_customer(customer(state, text="Still broken.\n> Rate us: 5", reply_text="Still broken."))
    assert got.outcome is Outcome.REOPENED


def reopened(*, assign: bool = False) -> list:
    return [*stored(), SetStatus(REOPENED, "the customer wrote to the closed case"),
            *([BY_RULE] if assign else []), Notify("The customer wrote to a closed case: it is reopened")]


@pytest.mark.parametrize(("policy", "days_ago", "outcome", "hit"), [
    pytest.param("reopen", 400, Outcome.REOPENED, "pool default: reopen; closed 400d ago", id="reopen"),
    pytest.param("new_linked", 0, Outcome.FOLLOW_UP, "pool default: new_linked; closed 0s ago",
                 id="new-linked-at-once"),
    pytest.param("new_linked", 3, Outcome.FOLLOW_UP, "pool default: new_linked; closed 3d ago", id="new-linked"),
    pytest.param("new_linked_after:7", 2, Outcome.REOPENED, "pool default: new_linked_after:7; closed 2d ago",
                 id="after-within"),
    pytest.param("new_linked_after:7", 7, Outcome.REOPENED, "pool default: new_linked_after:7; closed 1w ago",
                 id="after-exactly-at-the-boundary-reopens"),
    pytest.param("new_linked_after:7", 7 + 1 / DAY, Outcome.FOLLOW_UP,
                 "pool default: new_linked_after:7; closed 604801s ago", id="after-one-second-past"),
    pytest.param("new_linked_after:7", None, Outcome.REOPENED,
                 "pool default: new_linked_after:7; closed 0s ago", id="after-no-closing-date"),
])
def test_closed_policy(policy: str, days_ago: float | None, outcome: Outcome, hit: str) -> None:
    got = on_customer(customer(case(CLOSED, closed_days_ago=days_ago), policy=policy))
    assert got.outcome is outcome
    assert Hit("closed_policy", hit) in got.hits
    if outcome is Outcome.REOPENED:
        assert list(got.actions) == reopened()
    else:
        assert list(got.actions) == new_case_actions(follow_up_of=NUMBER, reason=JOINED.reason)


@pytest.mark.parametrize("assignee", [pytest.param(AWAY, id="away"), pytest.param(None, id="unassigned"),
                                      pytest.param("gone@example.com", id="no-longer-a-csr")])
def test_reopened_finds_someone_present(assignee: str | None) -> None:
    got = on_customer(customer(case(CLOSED, assignee=assignee, closed_days_ago=1)))
    assert list(got.actions) == reopened(assign=True)


# -- on_customer: an open case, a proposed solution -----------------------------------------


def accepted() -> list:
    return [*stored(text="x"), Record(EventKind.SOLUTION_ACCEPTED, actor=JOHN),
            SetStatus(CLOSED, "the customer accepted the solution"), *CLOSING_ACTIONS,
            Notify("The customer accepted your solution: the case is closed")]


def rejected(*, assign: bool = False) -> list:
    return [*stored(text="x"), Record(EventKind.SOLUTION_REJECTED, actor=JOHN), WAITING,
            SetStatus(REOPENED, "the customer rejected the solution"), *([BY_RULE] if assign else []),
            Notify("The customer rejected your solution")]


def answered(*, assign: bool = False) -> list:
    return [*stored(text="x"), SetStatus(IN_PROGRESS, "the customer answered the solution"), WAITING,
            *([BY_RULE] if assign else []), Notify("The customer wrote again")]


@pytest.mark.parametrize(("reply", "outcome"), [
    pytest.param("Accept\n\nThanks, it works.", Outcome.SOLUTION_ACCEPTED, id="accept"),
    pytest.param("accepted", Outcome.SOLUTION_ACCEPTED, id="accepted"),
    pytest.param("  ACCEPT - thanks", Outcome.SOLUTION_ACCEPTED, id="accept-upper"),
    pytest.param("Yes, accept", Outcome.SOLUTION_ACCEPTED, id="yes-accept"),
    pytest.param("yes accept", Outcome.SOLUTION_ACCEPTED, id="yes-accept-no-comma"),
    pytest.param("\n\nAccept", Outcome.SOLUTION_ACCEPTED, id="accept-after-blank-lines"),
    pytest.param("Reject\nStill on fire.", Outcome.SOLUTION_REJECTED, id="reject"),
    pytest.param("rejected.", Outcome.SOLUTION_REJECTED, id="rejected"),
    pytest.param("No, reject", Outcome.SOLUTION_REJECTED, id="no-reject"),
    pytest.param("Which button is off?", Outcome.APPENDED, id="question"),
    pytest.param("Acceptable, but slow.", Outcome.APPENDED, id="acceptable-is-not-accept"),
    pytest.param("I accept", Outcome.APPENDED, id="accept-not-first"),
    pytest.param("Not accepted", Outcome.APPENDED, id="not-accepted"),
    pytest.param("Rejection letter attached", Outcome.APPENDED, id="rejection-is-not-reject"),
    pytest.param("Thanks\nAccept", Outcome.APPENDED, id="accept-on-second-line"),
    pytest.param("", Outcome.APPENDED, id="empty"),
])
def test_answer_to_a_solution(reply: str, outcome: Outcome) -> None:
    got = on_customer(customer(case(SOLUTION_PROPOSED), text="x", reply_text=reply))
    assert got.outcome is outcome
    expected = {Outcome.SOLUTION_ACCEPTED: accepted, Outcome.SOLUTION_REJECTED: rejected,
                Outcome.APPENDED: answered}[outcome]()
    assert list(got.actions) == expected


@pytest.mark.parametrize(("reply", "expected"), [
    pytest.param("Reject", rejected(assign=True), id="rejected"),
    pytest.param("Which one?", answered(assign=True), id="answered"),
])
def test_answer_to_a_solution_when_the_csr_is_away(reply: str, expected: list) -> None:
    got = on_customer(customer(case(SOLUTION_PROPOSED, assignee=AWAY), text="x", reply_text=reply))
    assert list(got.actions) == expected


@pytest.mark.parametrize(("status", "assignee", "reply", "assign"), [
    pytest.param(RECEIVED, JANE, "Any news?", False, id="received"),
    pytest.param(IN_PROGRESS, JANE, "Any news?", False, id="in-progress"),
    pytest.param(REOPENED, BOB, "Any news?", False, id="reopened"),
    pytest.param(UNDER_CONSULTATION, JANE, "Any news?", False, id="under-consultation"),
    pytest.param(IN_PROGRESS, JANE, "Accept", False, id="accept-without-a-solution-is-text"),
    pytest.param(IN_PROGRESS, JANE, "4", False, id="a-digit-on-an-open-case-is-text"),
    pytest.param(IN_PROGRESS, AWAY, "Any news?", True, id="assignee-away"),
    pytest.param(RECEIVED, None, "Any news?", True, id="unassigned"),
    pytest.param(IN_PROGRESS, "gone@example.com", "Any news?", True, id="assignee-no-longer-a-csr"),
])
def test_open_case_appended(status: Status, assignee: str | None, reply: str, assign: bool) -> None:
    got = on_customer(customer(case(status, assignee=assignee), reply_text=reply))
    assert got.outcome is Outcome.APPENDED
    assert list(got.actions) == [*stored(), WAITING, *([BY_RULE] if assign else []),
                                 Notify("The customer wrote again")]
    assert got.hits == (Hit(JOINED.rule, JOINED.reason),)


# -- rating_of --------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "rating"), [
    ("4", (4, "")),
    ("1", (1, "")),
    ("4 - great", (4, "great")),
    ("4 – quick and kind", (4, "quick and kind")),
    ("4: fine", (4, "fine")),
    ("2) slow", (2, "slow")),
    ("5!", (5, "")),
    ("5/5", (5, "")),
    ("3 / 5", (3, "")),
    ("3 stars", (3, "")),
    ("1 star", (1, "")),
    ("4 Stars - good", (4, "good")),
    ("  4  \n", (4, "")),
    ("\n\n4 - great\nThe second line\nand a third", (4, "great\nThe second line\nand a third")),
    # Decided: a first line that starts with a lone grade is a rating, whatever
    # follows ("5 great service" and "5 more problems" read the same). The
    # customer's words stay as the comment, and only where a survey was sent.
    ("5 more problems", (5, "more problems")),
    ("10", None),
    ("0", None),
    ("6", None),
    ("4.5", None),
    ("4,5", None),
    ("4/10", None),
    ("1st floor printer", None),
    ("four", None),
    ("", None),
    ("  \n \n", None),
    ("> 5", None),
    ("> 4 - great\n4", None),
    ("Thanks!\n5", None),
])
def test_rating_of(text: str, rating: tuple[int, str] | None) -> None:
    assert rating_of(text) == rating


def test_rating_comment_is_capped() -> None:
    got = rating_of("5 - " + "x" * 3000)
    assert got is not None and got[0] == 5 and len(got[1]) == 2000


# -- on_automatic, on_bounce ----------------------------------------------------------------------


def automatic(rule: str = "auto_submitted", *, state: CaseState | None = None, bounce: bool = False
              ) -> AutomaticFacts:
    return AutomaticFacts(mailbox=MailboxInfo(SUPPORT, "Example Support", pool()), case=state, rule=rule,
                          reason="Auto-Submitted: auto-generated", is_bounce=bounce,
                          sender="alerts@monitor.test", sender_name="Monitor",
                          subject="Disk full", text="Disk /var is 99% full.")


DETAIL = "Auto-Submitted: auto-generated"
AUTO_TEXT = "Disk /var is 99% full."
SENDER = "alerts@monitor.test"


@pytest.mark.parametrize(("rule", "known", "bounce", "outcome", "actions"), [
    pytest.param("own_loop_header", False, False, Outcome.OWN_MAIL, [
        StoreMessage(MessageKind.AUTOMATIC, AUTO_TEXT, attach=False),
        Record(EventKind.OWN_MAIL, f"own_loop_header: {DETAIL}", SENDER)], id="own-loop-header"),
    pytest.param("own_message_id", True, False, Outcome.OWN_MAIL, [
        StoreMessage(MessageKind.AUTOMATIC, AUTO_TEXT, attach=True),
        Record(EventKind.OWN_MAIL, f"own_message_id: {DETAIL}", SENDER)], id="own-message-id-on-a-case"),
    pytest.param("hop_limit", False, True, Outcome.OWN_MAIL, [
        StoreMessage(MessageKind.AUTOMATIC, AUTO_TEXT, attach=False),
        Record(EventKind.OWN_MAIL, f"hop_limit: {DETAIL}", SENDER)], id="hop-limit-bounce-is-own-mail"),
    pytest.param("dsn", False, True, Outcome.BOUNCE_UNMATCHED, [
        StoreMessage(MessageKind.BOUNCE, AUTO_TEXT, attach=False),
        Record(EventKind.BOUNCE_UNMATCHED, f"dsn: {DETAIL}", SENDER)], id="unmatched-bounce"),
    pytest.param("dsn", True, True, Outcome.AUTOMATIC_APPENDED, [
        StoreMessage(MessageKind.BOUNCE, AUTO_TEXT),
        Record(EventKind.AUTOMATIC, f"dsn: {DETAIL}", SENDER)], id="bounce-on-a-case"),
    pytest.param("auto_submitted", True, False, Outcome.AUTOMATIC_APPENDED, [
        StoreMessage(MessageKind.AUTOMATIC, AUTO_TEXT),
        Record(EventKind.AUTOMATIC, f"auto_submitted: {DETAIL}", SENDER)], id="appended"),
    pytest.param("auto_submitted", False, False, Outcome.NEW_CASE_AUTOMATIC, [
        OpenCase(SENDER, "Monitor", "Disk full", reason="automatic mail"),
        StoreMessage(MessageKind.AUTOMATIC, AUTO_TEXT),
        Record(EventKind.AUTOMATIC, f"auto_submitted: {DETAIL}", SENDER),
        BY_RULE, Notify("New case (automatic mail)")], id="new-automatic-case-never-acknowledged"),
])
def test_on_automatic(rule: str, known: bool, bounce: bool, outcome: Outcome, actions: list) -> None:
    got = on_automatic(automatic(rule, state=case() if known else None, bounce=bounce))
    assert got.outcome is outcome
    assert list(got.actions) == actions
    assert got.hits == (Hit(rule, DETAIL),)


@pytest.mark.parametrize("known", [True, False])
def test_on_bounce(known: bool) -> None:
    got = on_bounce(known, "550 5.1.1 no such user", "MAILER-DAEMON@customer.test", "bounce text")
    assert got.outcome is Outcome.BOUNCE_MATCHED
    assert list(got.actions) == [
        StoreMessage(MessageKind.BOUNCE, "bounce text", attach=known),
        Record(EventKind.DELIVERY_FAILED, "550 5.1.1 no such user", "MAILER-DAEMON@customer.test")]
    assert got.hits == (Hit("verp_bounce", "bounce to our VERP address"),)


# -- on_timer -----------------------------------------------------------------------------------------


TIMER_POOL = pool(remind_after=3 * DAY, autoclose_after=14 * DAY)
REMIND, AUTOCLOSE, ASSIGN_RETRY = TimerKind.REMIND, TimerKind.AUTOCLOSE, TimerKind.ASSIGN_RETRY
FIRED = {
    REMIND: [SendCustomer(MessageKind.REMINDER),
             Record(EventKind.REMINDED, "no answer from the customer for 3d")],
    AUTOCLOSE: [Record(EventKind.AUTOCLOSED, "no answer from the customer for 2w"),
                SetStatus(CLOSED, "no answer from the customer for 2w"), *CLOSING_ACTIONS],
    ASSIGN_RETRY: [BY_RULE, Notify("New case (assigned on retry)")],
}


@pytest.mark.parametrize(("kind", "status", "assignee", "fires"), [
    (REMIND, RECEIVED, JANE, False),
    (REMIND, IN_PROGRESS, JANE, True),
    (REMIND, SOLUTION_PROPOSED, JANE, True),
    (REMIND, UNDER_CONSULTATION, JANE, False),
    (REMIND, REOPENED, JANE, False),
    (REMIND, CLOSED, JANE, False),
    (AUTOCLOSE, RECEIVED, JANE, False),
    (AUTOCLOSE, IN_PROGRESS, JANE, True),
    (AUTOCLOSE, SOLUTION_PROPOSED, JANE, True),
    (AUTOCLOSE, UNDER_CONSULTATION, JANE, False),
    (AUTOCLOSE, REOPENED, JANE, False),
    (AUTOCLOSE, CLOSED, JANE, False),
    (ASSIGN_RETRY, RECEIVED, None, True),
    (ASSIGN_RETRY, IN_PROGRESS, None, True),
    (ASSIGN_RETRY, REOPENED, None, True),
    (ASSIGN_RETRY, CLOSED, None, False),
    (ASSIGN_RETRY, RECEIVED, JANE, False),
    (ASSIGN_RETRY, REOPENED, AWAY, False),
])
def test_on_timer(kind: TimerKind, status: Status, assignee: str | None, fires: bool) -> None:
    got = on_timer(kind, case(status, assignee=assignee), TIMER_POOL)
    assert len(got.hits) == 1 and got.hits[0].rule == kind.value
    if fires:
        assert got.outcome is Outcome.TIMER_FIRED
        assert list(got.actions) == FIRED[kind]
    else:
        assert got.outcome is Outcome.TIMER_SKIPPED
        assert got.actions == ()
        assert got.hits[0].reason == (f"case is {status}" if kind is not ASSIGN_RETRY else "nothing to assign")


@pytest.mark.parametrize(("kind", "reason"), [
    (REMIND, "reminders are off in pool default"),
    (AUTOCLOSE, "auto-close is off in pool default"),
])
def test_on_timer_after_the_pool_turned_it_off(kind: TimerKind, reason: str) -> None:
    """A timer scheduled before the pool turned it off does nothing when due."""
    got = on_timer(kind, case(IN_PROGRESS), pool())
    assert (got.outcome, got.actions) == (Outcome.TIMER_SKIPPED, ())
    assert got.hits == (Hit(kind.value, reason),)


def test_on_timer_unknown_kind() -> None:
    with pytest.raises(ValueError, match="unknown timer"):
        on_timer("bogus", case(), TIMER_POOL)  # type: ignore[arg-type]
