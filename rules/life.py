"""A case's life: what a customer's message, automatic mail, a bounce or a
due timer does. Pure: facts in, a :class:`~rules.decision.Decision` out.

CSRs' commands and answers are in :mod:`rules.commands`.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

from rules.automatic import never_autoreply_to
from rules.decision import (
    CANCEL_WAITING,
    Acknowledge,
    Action,
    AddParticipants,
    Assign,
    CaseState,
    ConsultationAnswered,
    Decision,
    DepartmentInfo,
    Directory,
    Hit,
    MailboxInfo,
    MarkOverdue,
    Notify,
    OpenCase,
    PoolInfo,
    Record,
    RefuseIntake,
    SendCustomer,
    SetProduct,
    SetRating,
    SetStatus,
    StoreMessage,
    TellCsr,
    closing,
    decision,
)
from rules.durations import format_duration
from rules.match import Match
from rules.participants import joining
from rules.products import product_for
from rules.vocab import ClosedPolicyKind, EventKind, MessageKind, Outcome, Status, TimerKind

_RATING = re.compile(r"^\s*([1-5])(?![\d.,])\s*(?:/\s*5|stars?|[-–:.)!]|$|\s)", re.IGNORECASE)
# A grade alone on the line (what the survey's mailto links send).
_BARE_RATING = re.compile(r"^\s*([1-5])\s*(?:/\s*5|stars?)?\s*[!.]?\s*$", re.IGNORECASE)
_ACCEPT = re.compile(r"^\s*(?:accept(?:ed)?|yes,? accept)\b", re.IGNORECASE)
_REJECT = re.compile(r"^\s*(?:reject(?:ed)?|no,? reject)\b", re.IGNORECASE)


@dataclass(frozen=True)
class CustomerFacts:
    """A human's message to a supervised address (not a proven CSR's)."""

    mailbox: MailboxInfo
    directory: Directory
    case: CaseState | None
    match: Match
    sender: str
    sender_name: str
    subject: str
    cc: tuple[str, ...]
    text: str  # the whole readable text (stored)
    reply_text: str  # the new text, quotes stripped (first-line answers: Accept, 3 …)
    no_ack_reason: str | None  # the sender asked for no automatic replies
    now: dt.datetime
    answers_survey: bool = False  # In-Reply-To/References name the case's survey mail
    answers_our_mail: bool = False  # ... name mail we wrote, but the sender takes no part in its case
    known_customer: bool = True  # has written to this mailbox before (read when its policy is not open)


def first_line(text: str) -> str:
    for line in (text or "").splitlines():
        if line.strip():
            return line.strip()
    return ""


def rating_of(text: str, *, answers_survey: bool = True) -> tuple[int, str] | None:
    """``4`` / ``4 - quick and kind`` / ``5/5`` on the first line: (grade, comment).

    Only a reply to the survey mail itself may say more on the grade's line;
    otherwise ("3 printers broke again" to a closed case) the grade must stand
    alone on its line, as the survey's links send it."""
    line = first_line(text)
    m = (_RATING if answers_survey else _BARE_RATING).match(line)
    if m is None:
        return None
    rest = (line[m.end():].strip(" -–:.)!") + "\n" + "\n".join(
        (text or "").strip().splitlines()[1:])).strip()
    return int(m.group(1)), rest[:2000]


def on_customer(f: CustomerFacts) -> Decision:
    """A customer's (or participant's) message; its Cc's join an existing case
    (rules.participants) right after it is stored."""
    decided = _on_customer(f)
    if f.case is None or not f.cc or not any(isinstance(a, StoreMessage) for a in decided.actions) \
            or decided.outcome is Outcome.FOLLOW_UP:
        return decided
    joined = joining(f.cc, sender=f.sender, known=f.case.participants or {f.case.customer_address},
                     directory=f.directory, limit=f.mailbox.pool.max_participants)
    if not joined.added and not joined.refused:
        return decided
    actions = list(decided.actions)
    at = next(i for i, a in enumerate(actions) if isinstance(a, StoreMessage)) + 1
    actions.insert(at, AddParticipants(joined.added, joined.refused))
    hits = list(decided.hits)
    if joined.added:
        hits.append(Hit("cc_participants", f"{', '.join(joined.added)} join the case"))
    return decision(decided.outcome, actions, hits, decided.errors)


def _on_customer(f: CustomerFacts) -> Decision:
    hits = [Hit(f.match.rule, f.match.reason)]
    case, pool = f.case, f.mailbox.pool
    if case is None:
        return _new_case(f, hits)
    if case.status is Status.CLOSED:
        rated = rating_of(f.reply_text, answers_survey=f.answers_survey) if case.survey_sent else None
        if rated is not None:
            hits.append(Hit("survey_rating", f"first line rates {rated[0]} of 5"))
            return decision(Outcome.RATING, [
                StoreMessage(MessageKind.RATING, f.text), SetRating(*rated),
                Record(EventKind.RATED, f"{rated[0]}/5", f.sender),
                SendCustomer(MessageKind.THANKS)], hits)
        policy = pool.closed_policy
        closed_for = (f.now - case.closed) if case.closed else dt.timedelta(0)
        follow_up = policy.kind is ClosedPolicyKind.NEW_LINKED or (
            policy.kind is ClosedPolicyKind.NEW_LINKED_AFTER
            and closed_for > dt.timedelta(days=policy.days))
        hits.append(Hit("closed_policy", f"pool {pool.name}: {policy}; closed "
                        f"{format_duration(int(closed_for.total_seconds()))} ago"))
        if follow_up:
            return _new_case(f, hits, follow_up_of=case.number)
        return decision(Outcome.REOPENED, [
            StoreMessage(MessageKind.CUSTOMER, f.text),
            Record(EventKind.CUSTOMER_REPLIED, f.match.rule, f.sender),
            SetStatus(Status.REOPENED, "the customer wrote to the closed case"),
            *_tell(f, "The customer wrote to a closed case: it is reopened")], hits)
    actions: list[Action] = [StoreMessage(MessageKind.CUSTOMER, f.text),
                             Record(EventKind.CUSTOMER_REPLIED, f.match.rule, f.sender)]
    if case.status is Status.SOLUTION_PROPOSED:
        line = first_line(f.reply_text)
        if _ACCEPT.match(line):
            hits.append(Hit("solution_accepted", "first line: Accept"))
            return decision(Outcome.SOLUTION_ACCEPTED, [
                *actions, Record(EventKind.SOLUTION_ACCEPTED, actor=f.sender),
                *closing("the customer accepted the solution"),
                Notify("The customer accepted your solution: the case is closed")], hits)
        if _REJECT.match(line):
            hits.append(Hit("solution_rejected", "first line: Reject"))
            return decision(Outcome.SOLUTION_REJECTED, [
                *actions, Record(EventKind.SOLUTION_REJECTED, actor=f.sender), CANCEL_WAITING,
                SetStatus(Status.REOPENED, "the customer rejected the solution"),
                *_tell(f, "The customer rejected your solution")], hits)
        actions.append(SetStatus(Status.IN_PROGRESS, "the customer answered the solution"))
    actions += [CANCEL_WAITING, *_tell(f, "The customer wrote again")]
    return decision(Outcome.APPENDED, actions, hits)


def _tell(f: CustomerFacts, headline: str) -> list[Action]:
    """Tell the case's CSR. Nobody on the case, or its CSR gone or away: the
    away CSR's deputy is told (the case stays theirs), else the pool's rule
    picks a CSR, who is told."""
    assert f.case is not None
    pool = f.mailbox.pool.name
    who = f.directory.csr(f.case.assignee) if f.case.assignee else None
    if who is not None and not who.is_away(pool):
        return [Notify(headline)]
    deputy = who.deputy(pool) if who is not None else None
    if who is not None and deputy:
        return [Notify(f"{headline} (for {who.name}, who is away; the case stays theirs)", to=deputy)]
    return [Assign(None, f.mailbox.pool.rule), Notify(headline)]


def intake_refusal(f: CustomerFacts) -> tuple[str, str] | None:
    """(template, why) when the mailbox's intake policy opens no case for
    this new message: an unknown sender where unknown senders are rejected,
    then a subject without the mailbox's prefix. None: open a case."""
    box = f.mailbox
    if box.unknown_policy == "reject" and not f.known_customer:
        return "intake_rejected", f"{f.sender} is new to {box.address}, which takes known customers only"
    prefix = box.subject_prefix.strip()
    if prefix and not (f.subject or "").strip().lower().startswith(prefix.lower()):
        return "intake_prefix", f"the subject does not start with {prefix!r}"
    return None


def _new_case(f: CustomerFacts, hits: list[Hit], *, follow_up_of: str | None = None) -> Decision:
    refused = intake_refusal(f) if follow_up_of is None else None
    if refused is not None:
        template, why = refused
        hits.append(Hit("intake_policy", why))
        return decision(Outcome.INTAKE_REFUSED, [
            StoreMessage(MessageKind.CUSTOMER, f.text, attach=False),
            Record(EventKind.INTAKE_REFUSED, why, f.sender),
            RefuseIntake(f.sender, template, why)], hits)
    held = follow_up_of is None and f.mailbox.unknown_policy == "hold" and not f.known_customer
    joined = joining(f.cc, sender=f.sender, known={f.sender}, directory=f.directory,
                     limit=f.mailbox.pool.max_participants)
    actions: list[Action] = [
        OpenCase(f.sender, f.sender_name, f.subject, participants=joined.added,
                 follow_up_of=follow_up_of, mentions=f.match.mentioned, reason=f.match.reason,
                 status=Status.HELD if held else Status.RECEIVED),
        StoreMessage(MessageKind.CUSTOMER, f.text),
    ]
    product = product_for(f.mailbox.address, f.subject, f.directory.products)
    if product is not None:
        actions.append(SetProduct(*product))
        hits.append(Hit("product", f"{product[0]}: {product[1]}"))
    actions.append(Assign(None, f.mailbox.pool.rule))
    if held:
        why = f"{f.sender} is new to {f.mailbox.address}: held for a CSR"
        hits.append(Hit("intake_policy", why))
        actions += [Record(EventKind.HELD, why, f.sender),
                    Notify("New case, held: the sender is new to this mailbox. "
                           "#accept opens it (they get the acknowledgement); #reject refuses it "
                           "politely")]
        return decision(Outcome.HELD_CASE, actions, hits)
    no_ack = ack_refusal(f.sender, f.directory) or f.no_ack_reason or (
        # A responder answering from a new address each time would loop.
        "answers our own mail without taking part in its case: no acknowledgement"
        if f.answers_our_mail else None) or (
        None if f.mailbox.acknowledges else (
            f"mailbox {f.mailbox.address}: acknowledgements off" if f.mailbox.acknowledge is not None
            else f"pool {f.mailbox.pool.name}: acknowledgements off"))
    if no_ack:
        hits.append(Hit("no_ack", no_ack))
        actions.append(Record(EventKind.NO_ACK, no_ack))
    else:
        actions.append(Acknowledge())
    headline = f"New case (follow-up of {follow_up_of})" if follow_up_of else "New case"
    actions.append(Notify(headline))
    return decision(Outcome.FOLLOW_UP if follow_up_of else Outcome.NEW_CASE, actions, hits)


def ack_refusal(address: str, directory: Directory) -> str | None:
    """Why this address gets no automatic mail at all, or None."""
    if not address:
        return "no address to answer"
    if directory.is_ours(address):
        return "never to our own addresses"
    return never_autoreply_to(address)


# -- automatic mail and bounces -------------------------------------------------


OWN_MAIL_RULES = frozenset({"own_loop_header", "own_message_id", "hop_limit"})


@dataclass(frozen=True)
class AutomaticFacts:
    mailbox: MailboxInfo
    case: CaseState | None
    rule: str
    reason: str
    is_bounce: bool
    sender: str
    sender_name: str
    subject: str
    text: str


def on_automatic(f: AutomaticFacts) -> Decision:
    hits = [Hit(f.rule, f.reason)]
    kind = MessageKind.BOUNCE if f.is_bounce else MessageKind.AUTOMATIC
    detail = f"{f.rule}: {f.reason}"
    if f.rule in OWN_MAIL_RULES:
        # Our own mail came back (a forward, a forged sender, another
        # casegate): kept, but it never opens a case or tells anyone.
        return decision(Outcome.OWN_MAIL, [
            StoreMessage(MessageKind.AUTOMATIC, f.text, attach=f.case is not None),
            Record(EventKind.OWN_MAIL, detail, f.sender)], hits)
    if f.case is None and f.is_bounce:
        return decision(Outcome.BOUNCE_UNMATCHED, [
            StoreMessage(kind, f.text, attach=False),
            Record(EventKind.BOUNCE_UNMATCHED, detail, f.sender)], hits)
    if f.case is not None:
        return decision(Outcome.AUTOMATIC_APPENDED, [
            StoreMessage(kind, f.text), Record(EventKind.AUTOMATIC, detail, f.sender)], hits)
    box = f.mailbox
    prefix = box.subject_prefix.strip()
    if box.unknown_policy == "reject" or (
            prefix and not (f.subject or "").strip().lower().startswith(prefix.lower())):
        # The mailbox's intake policy: no case, and never an answer to automatic mail.
        why = (f"automatic mail to {box.address}, which takes known customers only"
               if box.unknown_policy == "reject" else f"the subject does not start with {prefix!r}")
        return decision(Outcome.INTAKE_REFUSED, [
            StoreMessage(kind, f.text, attach=False), Record(EventKind.INTAKE_REFUSED, why, f.sender)],
            [*hits, Hit("intake_policy", why)])
    # Automatic mail about no case still gets one (a real system's alert may
    # need a person), never an acknowledgement.
    return decision(Outcome.NEW_CASE_AUTOMATIC, [
        OpenCase(f.sender, f.sender_name, f.subject, reason="automatic mail"),
        StoreMessage(kind, f.text), Record(EventKind.AUTOMATIC, detail, f.sender),
        Assign(None, f.mailbox.pool.rule), Notify("New case (automatic mail)")], hits)


def on_bounce(case_known: bool, detail: str, sender: str, text: str) -> Decision:
    """A bounce to our VERP address: a delivery failure on its case, exactly."""
    return decision(Outcome.BOUNCE_MATCHED, [
        StoreMessage(MessageKind.BOUNCE, text, attach=case_known),
        Record(EventKind.DELIVERY_FAILED, detail, sender)],
        [Hit("verp_bounce", "bounce to our VERP address")])


# -- timers -----------------------------------------------------------------------


_WAITING = (Status.IN_PROGRESS, Status.SOLUTION_PROPOSED)


def on_timer(kind: TimerKind, case: CaseState, pool: PoolInfo) -> Decision:
    """What a due timer does; a timer whose reason has passed does nothing."""
    if kind is TimerKind.REMIND:
        if case.status not in _WAITING:
            return decision(Outcome.TIMER_SKIPPED, [], [Hit("remind", f"case is {case.status}")])
        if pool.remind_after is None:
            return decision(Outcome.TIMER_SKIPPED, [],
                            [Hit("remind", f"reminders are off in pool {pool.name}")])
        waited = format_duration(pool.remind_after)
        return decision(Outcome.TIMER_FIRED, [
            SendCustomer(MessageKind.REMINDER),
            Record(EventKind.REMINDED, f"no answer from the customer for {waited}")],
            [Hit("remind", f"no answer for {waited}")])
    if kind is TimerKind.AUTOCLOSE:
        if case.status not in _WAITING:
            return decision(Outcome.TIMER_SKIPPED, [], [Hit("autoclose", f"case is {case.status}")])
        if pool.autoclose_after is None:
            return decision(Outcome.TIMER_SKIPPED, [],
                            [Hit("autoclose", f"auto-close is off in pool {pool.name}")])
        waited = format_duration(pool.autoclose_after)
        return decision(Outcome.TIMER_FIRED, [
            Record(EventKind.AUTOCLOSED, f"no answer from the customer for {waited}"),
            *closing(f"no answer from the customer for {waited}")],
            [Hit("autoclose", f"no answer for {waited}")])
    if kind is TimerKind.CONSULT_DUE:
        return decision(Outcome.TIMER_FIRED, [MarkOverdue()],
                        [Hit("consult_due", "a department's deadline")])
    if kind is TimerKind.ASSIGN_RETRY:
        if case.status is Status.CLOSED or case.assignee is not None:
            return decision(Outcome.TIMER_SKIPPED, [], [Hit("assign_retry", "nothing to assign")])
        return decision(Outcome.TIMER_FIRED, [
            Assign(None, pool.rule), Notify("New case (assigned on retry)")],
            [Hit("assign_retry", "the case found nobody before")])
    raise ValueError(f"unknown timer {kind!r}")


# -- a consulted department's answer -------------------------------------------------


@dataclass(frozen=True)
class DepartmentFacts:
    department: DepartmentInfo
    case: CaseState | None
    text: str  # the new text, quotes stripped
    other_open: int  # unanswered consultations of other departments on the case


def on_department(f: DepartmentFacts) -> Decision:
    """Stored as internal, forwarded to the case's CSR, never to the customer."""
    hits = [Hit("department", f"{f.department.name} <{f.department.address}>")]
    if f.case is None:
        return decision(Outcome.DEPARTMENT_NO_CASE, [
            StoreMessage(MessageKind.DEPARTMENT, f.text, attach=False),
            TellCsr(f.department.address, "Not filed: no case", (
                "Your message names no case, so it was stored and nobody was told.\n"
                "Please answer the consultation mail itself (keep its subject).")),
        ], hits)
    actions: list[Action] = [
        StoreMessage(MessageKind.DEPARTMENT, f.text),
        ConsultationAnswered(f.department.name),
        Record(EventKind.CONSULTATION_ANSWERED, f.department.name, f.department.address)]
    if f.case.status is Status.UNDER_CONSULTATION and not f.other_open:
        actions.append(SetStatus(Status.IN_PROGRESS, f"{f.department.name} answered"))
    actions.append(Notify(f"{f.department.name} answered your consultation (internal: the customer "
                          "does not see it)"))
    return decision(Outcome.DEPARTMENT_ANSWER, actions, hits)
