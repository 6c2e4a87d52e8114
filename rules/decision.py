"""Decisions as values: what the rules say to do, and the facts they read.

A rule takes plain facts (the message as the rules see it, the case's
state, the directory of CSRs, pools and mailboxes, ``now``) and returns a
:class:`Decision`: an outcome, the actions to take in order, and the rule
hits that explain them. One executor (``smtpd_hook.executor``) applies a
decision inside one transaction; nothing here touches the database.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from rules.blacklist import strip_tag
from rules.vocab import ClosedPolicy, EventKind, MessageKind, Outcome, Status, TimerKind

# -- facts -------------------------------------------------------------------


@dataclass(frozen=True)
class QuestionInfo:
    """A closing question: answered on #close as ``name=value``."""

    name: str
    choices: tuple[str, ...] = ()
    required: bool = False
    free_text: bool = False

    def allowed(self) -> str:
        values = "|".join(self.choices) if self.choices else "any text"
        if self.choices and self.free_text:
            values += "|any text"
        return f"{self.name}={values}" + (" (required)" if self.required else "")


@dataclass(frozen=True)
class PoolInfo:
    name: str
    rule: str = "least_load"
    escalation_notice: bool = False  # tell the customer when their case goes to the second level
    closed_policy: ClosedPolicy = field(default_factory=ClosedPolicy)
    close_on_reply: bool = False
    remind_after: int | None = None  # seconds; None: off
    autoclose_after: int | None = None
    questions: tuple[QuestionInfo, ...] = ()  # the closing questionnaire
    cc_participants: bool = True  # a CSR's answer goes to the participants in Cc
    max_participants: int = 10  # Cc's that may join one case
    acknowledge: bool = True  # a new case is acknowledged to the customer


@dataclass(frozen=True)
class MailboxInfo:
    address: str
    display_name: str
    pool: PoolInfo
    subject_prefix: str = ""  # a new case's subject must start with it ("": any)
    unknown_policy: str = "open"  # a sender new to this mailbox: open | reject | hold
    # The mailbox's own template settings; None: the pool's (docs/templates.md).
    language: str | None = None
    acknowledge: bool | None = None
    greeting: str | None = None

    @property
    def acknowledges(self) -> bool:
        """Is a new case acknowledged: the mailbox's setting, else its pool's."""
        return self.pool.acknowledge if self.acknowledge is None else self.acknowledge


@dataclass(frozen=True)
class ProductInfo:
    """A product: every case of ``mailbox``, or one whose subject has a keyword."""

    name: str
    mailbox: str = ""
    keywords: tuple[str, ...] = ()


@dataclass(frozen=True)
class CsrInfo:
    address: str
    name: str
    signature: str = ""
    available: bool = True
    pools: frozenset[str] = frozenset()
    away: tuple[tuple[str, str], ...] = ()  # (pool, deputy or "") where the CSR is away now
    levels: tuple[tuple[str, int], ...] = ()  # (pool, level): 1 first line, 2 escalation
    supervisor: str = ""  # set: the CSR's answers are held for this CSR's approval
    footer: bool = False  # the CSR has a footer for their answers (the store holds it)

    def level(self, pool: str) -> int:
        return next((lv for p, lv in self.levels if p == pool), 1)

    def is_away(self, pool: str) -> bool:
        return not self.available or any(p == pool for p, _ in self.away)

    def deputy(self, pool: str) -> str | None:
        return next((d for p, d in self.away if p == pool and d), None)


@dataclass(frozen=True)
class DepartmentInfo:
    name: str
    address: str
    deadline: int  # seconds


@dataclass(frozen=True)
class Directory:
    """Who is who: CSRs, departments and supervised addresses, loaded once per event."""

    csrs: Mapping[str, CsrInfo]
    mailboxes: Mapping[str, MailboxInfo]
    departments: Mapping[str, DepartmentInfo] = field(default_factory=dict)  # by name
    products: tuple[ProductInfo, ...] = ()

    def department(self, name: str) -> DepartmentInfo | None:
        return self.departments.get((name or "").lower())

    def department_at(self, address: str) -> DepartmentInfo | None:
        key = base_address(address)
        return next((d for d in self.departments.values() if d.address == key), None)

    def csr(self, address: str) -> CsrInfo | None:
        """The CSR with this address (a +tag of it included: jane+x@ is Jane)."""
        key = (address or "").lower()
        return self.csrs.get(key) or self.csrs.get(base_address(key))

    def mailbox(self, address: str) -> MailboxInfo | None:
        return self.mailboxes.get(base_address(address))

    def is_ours(self, address: str) -> bool:
        """A CSR's, a department's or a supervised address (any +tag): never a customer."""
        return bool(address) and (self.csr(address) is not None or self.mailbox(address) is not None
                                  or self.department_at(address) is not None)

    def pool_members(self, pool: str, level: int | None = None) -> list[CsrInfo]:
        return [c for c in self.csrs.values()
                if pool in c.pools and (level is None or c.level(pool) == level)]


def base_address(address: str) -> str:
    """The address without a ``+tag``, lower-cased: the one definition of
    "the same mailbox" (``support+CS0000001@`` is ``support@``)."""
    local, at, domain = (address or "").strip().rpartition("@")
    if not at:
        return (address or "").strip().lower()
    return f"{strip_tag(local)}@{domain}".lower()


@dataclass(frozen=True)
class CaseState:
    number: str
    status: Status
    mailbox: str
    customer_address: str
    customer_name: str
    subject: str
    assignee: str | None  # a CSR's address
    created: dt.datetime
    closed: dt.datetime | None = None
    participants: frozenset[str] = frozenset()
    survey_sent: bool = False
    survey_ids: frozenset[str] = frozenset()  # Message-IDs of the survey mails we sent
    follow_up_of: str | None = None


# -- hits and actions --------------------------------------------------------


@dataclass(frozen=True)
class Hit:
    rule: str
    reason: str

    def __str__(self) -> str:
        return f"{self.rule}: {self.reason}"


class Action:
    """Base of every action; the executor dispatches on the class."""

    __slots__ = ()


@dataclass(frozen=True)
class OpenCase(Action):
    customer_address: str
    customer_name: str
    subject: str
    status: Status = Status.RECEIVED
    participants: tuple[str, ...] = ()  # Cc's who may write on the case
    follow_up_of: str | None = None
    mentions: tuple[str, ...] = ()
    reason: str = ""


@dataclass(frozen=True)
class AddParticipants(Action):
    """Cc's of a customer's message join the case (rules.participants)."""

    addresses: tuple[str, ...]
    refused: tuple[tuple[str, str], ...] = ()  # (address, why not): recorded


@dataclass(frozen=True)
class RefuseIntake(Action):
    """A polite templated answer, no case (or a held case refused): the
    mailbox's intake policy. Automatic mail to ``to``: the loop guards apply."""

    to: str
    template: str  # customer/<template>.txt.j2: intake_prefix | intake_rejected
    reason: str = ""


@dataclass(frozen=True)
class SetProduct(Action):
    product: str
    reason: str = ""


@dataclass(frozen=True)
class StoreMessage(Action):
    """Store the inbound message (raw bytes, attachments) on the case (or none)."""

    kind: MessageKind
    text: str
    attach: bool = True  # False: keep it unattached (a bounce about nothing we know)


@dataclass(frozen=True)
class SetStatus(Action):
    status: Status
    reason: str = ""


@dataclass(frozen=True)
class Assign(Action):
    """To ``csr``, or by the pool's rule when None (nobody: unassigned, retried)."""

    csr: str | None
    rule: str
    note: str = ""  # a private note for the new assignee
    level: int = 1  # by the pool's rule: among the CSRs of this level (2: escalation)


@dataclass(frozen=True)
class SwitchCase(Action):
    """The actions after this one work on another case (``#next`` picks one)."""

    number: str


@dataclass(frozen=True)
class Notify(Action):
    """Tell the case's assignee (whoever that is once the actions before ran),
    or ``to`` (an away CSR's deputy)."""

    headline: str
    note: str = ""
    to: str | None = None


@dataclass(frozen=True)
class SetAway(Action):
    """A CSR away in these pools (all of theirs when empty) until ``until``."""

    csr: str
    pools: tuple[str, ...] = ()
    until: dt.datetime | None = None
    deputy: str = ""


@dataclass(frozen=True)
class SetBack(Action):
    csr: str
    pools: tuple[str, ...] = ()


@dataclass(frozen=True)
class Acknowledge(Action):
    pass


@dataclass(frozen=True)
class AnswerCustomer(Action):
    """A CSR's words to the customer: greeting, text, signature, history."""

    csr: str
    text: str
    kind: MessageKind = MessageKind.REPLY  # or SOLUTION
    with_files: bool = True  # the inbound message's attachments travel along


@dataclass(frozen=True)
class SendCustomer(Action):
    """Automatic mail to the customer from a template (closing, survey, …)."""

    kind: MessageKind


@dataclass(frozen=True)
class TellCsr(Action):
    """A short mail to a CSR: what a command did, or why nothing was done."""

    to: str
    subject: str
    text: str


@dataclass(frozen=True)
class AddNote(Action):
    author: str
    text: str


@dataclass(frozen=True)
class Consult(Action):
    """Ask a department: the question, the case and its public history go to it."""

    department: str  # its name
    question: str
    by: str


@dataclass(frozen=True)
class ConsultationAnswered(Action):
    """The department's answer came: its open consultations on the case are answered."""

    department: str


@dataclass(frozen=True)
class MarkOverdue(Action):
    """Open consultations past their deadline: overdue, and one notice each to
    the department and the case's CSR; the next deadline scheduled."""


@dataclass(frozen=True)
class DraftInfo:
    """A held answer waiting for its supervisor."""

    id: int
    csr: str
    supervisor: str
    commands: str  # as given, e.g. "#close"; "" for a plain answer
    text: str


@dataclass(frozen=True)
class HoldDraft(Action):
    """Keep a CSR's answer for their supervisor: nothing reaches the customer yet."""

    csr: str
    supervisor: str
    commands: str
    text: str
    kind: MessageKind = MessageKind.REPLY  # how the customer would get it


@dataclass(frozen=True)
class DecideDraft(Action):
    draft: int
    status: str  # approved | rejected
    by: str


@dataclass(frozen=True)
class SetAnswers(Action):
    """The closing questionnaire's answers, kept on the case."""

    answers: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class SetRating(Action):
    rating: int
    comment: str = ""


@dataclass(frozen=True)
class Schedule(Action):
    kind: TimerKind
    after: int  # seconds from now


@dataclass(frozen=True)
class Cancel(Action):
    kinds: tuple[TimerKind, ...]


@dataclass(frozen=True)
class Blacklist(Action):
    pattern: str
    subject: str | None
    by: str


@dataclass(frozen=True)
class Record(Action):
    """An event on the case's history."""

    kind: EventKind
    detail: str = ""
    actor: str = ""


@dataclass(frozen=True)
class Decision:
    outcome: Outcome
    actions: tuple[Action, ...] = ()
    hits: tuple[Hit, ...] = ()
    errors: tuple[str, ...] = field(default=())  # for the shell: why nothing was done

    def explain(self) -> str:
        """The rule hits as one line (log lines, the X-Casegate-Rules header)."""
        return "; ".join(str(h) for h in self.hits)


def decision(outcome: Outcome, actions: Iterable[Action], hits: Iterable[Hit],
             errors: Iterable[str] = ()) -> Decision:
    return Decision(outcome, tuple(actions), tuple(hits), tuple(errors))


def timers_after_answer(pool: PoolInfo) -> list[Action]:
    """Once we answered: remind the customer, then close, unless they write."""
    actions: list[Action] = [Cancel((TimerKind.REMIND, TimerKind.AUTOCLOSE))]
    if pool.remind_after:
        actions.append(Schedule(TimerKind.REMIND, pool.remind_after))
    if pool.autoclose_after:
        actions.append(Schedule(TimerKind.AUTOCLOSE, pool.autoclose_after))
    return actions


CANCEL_WAITING = Cancel((TimerKind.REMIND, TimerKind.AUTOCLOSE))


def closing(reason: str) -> list[Action]:
    """Close, tell the customer, ask for a rating (and stop waiting)."""
    return [SetStatus(Status.CLOSED, reason),
            Cancel((TimerKind.REMIND, TimerKind.AUTOCLOSE, TimerKind.ASSIGN_RETRY)),
            SendCustomer(MessageKind.CLOSED), SendCustomer(MessageKind.SURVEY)]
