"""Commands CSRs give by mail (``#close`` …) and by shell (``casegate case close``).

A proven CSR's reply may start with command lines, each one line beginning
with ``#``; the text below them is the answer, the note or the solution,
depending on the commands. Each command is a small object with a name, a
parser for its argument and a rule that returns actions; :func:`decide`
checks them all first and applies none when any is wrong (nothing is
half-done), answering the CSR with what was wrong and what would work.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from email.utils import parseaddr

from rules.decision import (
    CANCEL_WAITING,
    Action,
    AddNote,
    AnswerCustomer,
    Assign,
    Blacklist,
    Cancel,
    CaseState,
    Consult,
    CsrInfo,
    DecideDraft,
    Decision,
    Directory,
    DraftInfo,
    Hit,
    HoldDraft,
    Notify,
    OpenCase,
    PoolInfo,
    Record,
    RefuseIntake,
    SendCustomer,
    SetAnswers,
    SetAway,
    SetBack,
    SetProduct,
    SetStatus,
    StoreMessage,
    SwitchCase,
    TellCsr,
    closing,
    decision,
    timers_after_answer,
)
from rules.durations import parse_duration
from rules.products import product_for
from rules.vocab import EventKind, MessageKind, Outcome, Status, TimerKind

_COMMAND_LINE = re.compile(r"^#([a-z][a-z-]*)\b[ \t]*(.*)$", re.IGNORECASE)
# name=value pairs (a value with spaces in double quotes): #close product=Router partner="ACME Ltd"
_PAIR = r'[A-Za-z][\w-]*=(?:"[^"]*"|\S+)'
_PAIRS = re.compile(rf"{_PAIR}(?:\s+{_PAIR})*")
_PAIR_RE = re.compile(r'([A-Za-z][\w-]*)=(?:"([^"]*)"|(\S+))')

# What a command does with the text under the command lines.
ANSWER, NOTE, SOLUTION, QUESTION, NONE = "answer", "note", "solution", "question", "none"


@dataclass(frozen=True)
class Given:
    """One command line as written: ``#assign bob@example.com``."""

    name: str
    arg: str = ""

    def __str__(self) -> str:
        return f"#{self.name}{' ' + self.arg if self.arg else ''}"


@dataclass(frozen=True)
class Parsed:
    commands: tuple[Given, ...]
    text: str  # what stands under the command lines


def parse(text: str) -> Parsed:
    """Leading ``#word`` lines (blank lines between them allowed) and the rest.

    A command's own line may carry text after its argument-less name
    (``#note call back Monday``): that text leads the body."""
    lines = (text or "").replace("\r\n", "\n").split("\n")
    commands: list[Given] = []
    i = 0
    inline = ""
    while i < len(lines):
        line = lines[i].strip()
        if not line:
            i += 1
            continue
        m = _COMMAND_LINE.match(line)
        if m is None:
            break
        name, rest = m.group(1).lower(), m.group(2).strip()
        command = COMMANDS.get(name)
        words_are_text = command is not None and not command.takes_arg and (
            # "#close thanks, bye": the words are the answer, not name=value answers
            not command.takes_pairs or not _PAIRS.fullmatch(rest))
        if words_are_text and rest:
            commands.append(Given(name))
            inline = rest
            i += 1
            break
        commands.append(Given(name, rest))
        i += 1
    if not commands:
        return Parsed((), (text or "").strip())
    body = "\n".join(lines[i:]).strip()
    if inline:
        body = f"{inline}\n{body}".strip()
    return Parsed(tuple(commands), body)


# -- the facts a command reads ----------------------------------------------


@dataclass(frozen=True)
class Actor:
    """Who gives the command: a proven CSR, or an admin at the shell."""

    address: str  # "" for an admin without --csr
    csr: CsrInfo | None

    @property
    def label(self) -> str:
        return self.address or "admin"


@dataclass(frozen=True)
class CommandFacts:
    actor: Actor
    case: CaseState | None
    pool: PoolInfo | None
    directory: Directory
    subject: str = ""  # of the CSR's message (#new uses it)
    has_files: bool = False
    by_mail: bool = True  # False: the shell; errors go back as text, not mail
    waiting: tuple[str, ...] = ()  # for #next: unassigned cases of the actor's pools, in pull order
    now: dt.datetime | None = None  # for #away until …
    drafts: tuple[DraftInfo, ...] = ()  # held answers on the case (#approve, #reject)
    approved: bool = False  # a supervisor approved this: not held again
    mailbox: str = ""  # the supervised address the command came to (#new's product)


class Command:
    name = ""
    takes_arg = False
    arg_optional = False  # takes_arg, but may be given without one
    takes_pairs = False  # name=value answers on its line (#close), else the line's words are text
    text_role = NONE  # what the text under the commands becomes
    needs_case = True
    needs_csr = False  # the actor must be a CSR (the shell needs --csr)
    open_only = False  # refused on a closed case
    help = ""

    def check(self, arg: str, text: str, f: CommandFacts) -> str | None:
        return None

    def actions(self, arg: str, text: str, f: CommandFacts) -> list[Action]:
        return []


def answers_of(arg: str) -> dict[str, str]:
    return {m.group(1).lower(): (m.group(2) if m.group(2) is not None else m.group(3))
            for m in _PAIR_RE.finditer(arg or "")}


class Close(Command):
    name = "close"
    text_role = ANSWER
    takes_pairs = True
    help = ("#close [NAME=VALUE …]: close the case (answering the pool's closing questions); "
            "text below it goes to the customer first")

    def check(self, arg: str, text: str, f: CommandFacts) -> str | None:
        assert f.case is not None
        if f.case.status is Status.CLOSED:
            return f"{f.case.number} is already closed"
        if f.case.status is Status.HELD:
            return f"{f.case.number} is held: #accept opens it, #reject refuses it"
        questions = f.pool.questions if f.pool is not None else ()
        answers = answers_of(arg)
        known = {q.name.lower(): q for q in questions}
        problems = [f"{name} is not a closing question of this pool" for name in answers
                    if name not in known]
        for q in questions:
            value = answers.get(q.name.lower())
            if value is None:
                if q.required:
                    problems.append(f"{q.name} is required")
            elif q.choices and not q.free_text and value not in q.choices:
                problems.append(f"{q.name}={value} is not one of {', '.join(q.choices)}")
        if problems:
            example = " ".join(f"{q.name}={q.choices[0]}" for q in questions if q.choices)
            return ("not closed: " + "; ".join(problems) + ". The questions: "
                    + ", ".join(q.allowed() for q in questions)
                    + (f", e.g. #close {example}" if example else ""))
        return None

    def actions(self, arg: str, text: str, f: CommandFacts) -> list[Action]:
        answers = answers_of(arg)
        out: list[Action] = []
        if answers:
            names = {q.name.lower(): q.name for q in (f.pool.questions if f.pool else ())}
            out.append(SetAnswers(tuple((names.get(k, k), v) for k, v in answers.items())))
        return out + closing(f"closed by {f.actor.label}")


class Reopen(Command):
    name = "reopen"
    text_role = ANSWER
    help = "#reopen: reopen a closed case"

    def check(self, arg: str, text: str, f: CommandFacts) -> str | None:
        assert f.case is not None
        if f.case.status is not Status.CLOSED:
            return f"#reopen applies to closed cases; {f.case.number} is {f.case.status}"
        return None

    def actions(self, arg: str, text: str, f: CommandFacts) -> list[Action]:
        return [SetStatus(Status.REOPENED, f"reopened by {f.actor.label}")]


class Note(Command):
    name = "note"
    text_role = NOTE
    help = "#note: everything below is an internal note, never sent to the customer"

    def check(self, arg: str, text: str, f: CommandFacts) -> str | None:
        return None if text.strip() else "#note needs the note's text below it (or on its line)"

    def actions(self, arg: str, text: str, f: CommandFacts) -> list[Action]:
        return [AddNote(f.actor.label, text.strip())]


class AssignTo(Command):
    name = "assign"
    open_only = True
    takes_arg = True
    text_role = NOTE
    help = "#assign ADDRESS: give the case to another CSR (text below: a note for them)"

    def check(self, arg: str, text: str, f: CommandFacts) -> str | None:
        assert f.case is not None
        address = _address(arg)
        if not address:
            return "#assign needs a CSR's address, e.g. #assign bob@example.com"
        if len(arg.split()) > 1 and "<" not in arg:
            return f"#assign takes one address ({arg!r}): put your note for them below the line"
        target = f.directory.csr(address)
        if target is None:
            names = ", ".join(sorted(c.address for c in f.directory.pool_members(f.pool.name)))\
                if f.pool else ""
            return f"{address} is not a CSR" + (f" (the pool's CSRs: {names})" if names else "")
        if f.case.assignee == target.address:
            return f"{f.case.number} is already assigned to {target.address}"
        return None

    def actions(self, arg: str, text: str, f: CommandFacts) -> list[Action]:
        target = _address(arg)
        note = text.strip()
        out: list[Action] = [Assign(target, f"assigned by {f.actor.label}", note=note)]
        if note:
            out.append(AddNote(f.actor.label, note))
        out.append(Notify(f"Assigned to you by {f.actor.label}", note=note))
        return out


class Escalate(Command):
    name = "escalate"
    takes_arg = True
    arg_optional = True
    text_role = NOTE
    open_only = True
    help = ("#escalate [ADDRESS]: pass the case to the pool's second level (or to ADDRESS); "
            "text below: a note for them")

    def check(self, arg: str, text: str, f: CommandFacts) -> str | None:
        assert f.case is not None
        if arg:
            target = f.directory.csr(_address(arg))
            if target is None:
                return f"{_address(arg) or arg} is not a CSR"
            if f.case.assignee == target.address:
                return f"{f.case.number} is already assigned to {target.address}"
            return None
        if f.pool is None or not [c for c in f.directory.pool_members(f.pool.name, level=2)
                                  if not c.is_away(f.pool.name)]:
            return (f"pool {f.pool.name if f.pool else '?'} has no available second-level CSR "
                    "(casegate csr set ADDRESS --pool NAME:2); #escalate ADDRESS names one")
        return None

    def actions(self, arg: str, text: str, f: CommandFacts) -> list[Action]:
        note = text.strip()
        target = _address(arg) if arg else None
        out: list[Action] = [Assign(target, f"escalated by {f.actor.label}", note=note, level=2)]
        if note:
            out.append(AddNote(f.actor.label, note))
        out += [Record(EventKind.ESCALATED, target or "the pool's second level", f.actor.label),
                Notify(f"Escalated to you by {f.actor.label}", note=note)]
        if f.pool is not None and f.pool.escalation_notice:
            out.append(SendCustomer(MessageKind.ESCALATED))
        return out


class ConsultDepartment(Command):
    name = "consult"
    takes_arg = True
    text_role = QUESTION
    open_only = True
    help = ("#consult NAME: ask a department; the text below is the question (it gets the case "
            "and its history, never your notes)")

    def check(self, arg: str, text: str, f: CommandFacts) -> str | None:
        if f.directory.department(arg.strip()) is None:
            names = ", ".join(sorted(f.directory.departments)) or "none yet (casegate department add)"
            return f"{arg.strip()!r} is not a department (departments: {names})"
        if not text.strip():
            return "#consult needs the question below it"
        return None

    def actions(self, arg: str, text: str, f: CommandFacts) -> list[Action]:
        dept = f.directory.department(arg.strip())
        assert dept is not None
        return [Consult(dept.name, text.strip(), f.actor.label),
                SetStatus(Status.UNDER_CONSULTATION, f"{dept.name} consulted by {f.actor.label}"),
                Record(EventKind.CONSULTED, f"{dept.name}: {text.strip()[:500]}", f.actor.label)]


def _draft(arg: str, f: CommandFacts) -> DraftInfo | None:
    number = arg.strip().lstrip("#")
    return next((d for d in f.drafts if str(d.id) == number), None)


def _may_decide(d: DraftInfo, f: CommandFacts) -> str | None:
    if f.actor.csr is None and not f.by_mail:
        return None  # an admin at the shell
    if f.actor.address != d.supervisor:
        return f"draft {d.id} waits for {d.supervisor}'s approval, not yours"
    return None


def draft_decision(d: DraftInfo, f: CommandFacts) -> Decision:
    """What the held answer does once approved: as if it had never been held."""
    author = f.directory.csr(d.csr)
    sub = replace(f, actor=Actor(d.csr, author), approved=True, by_mail=False, drafts=())
    given = parse(d.commands).commands if d.commands else ()
    if given:
        return decide(given, d.text, sub)
    if sub.case is None or sub.pool is None:
        return decision(Outcome.CSR_COMMAND_REFUSED, [], [], ["the draft's case is gone"])
    return csr_reply(d.text, False, sub, store=None)


class Approve(Command):
    name = "approve"
    takes_arg = True
    help = "#approve N: (a supervisor) send held answer N as its author wrote it"

    def check(self, arg: str, text: str, f: CommandFacts) -> str | None:
        d = _draft(arg, f)
        if d is None:
            waiting = ", ".join(str(x.id) for x in f.drafts) or "none"
            return f"no held answer {arg.strip()} on this case (held: {waiting})"
        problem = _may_decide(d, f)
        if problem:
            return problem
        result = draft_decision(d, f)
        if result.errors:
            return f"draft {d.id} cannot be sent now: {'; '.join(result.errors)}"
        return None

    def actions(self, arg: str, text: str, f: CommandFacts) -> list[Action]:
        d = _draft(arg, f)
        assert d is not None
        sent = [replace(a, with_files=False) if isinstance(a, AnswerCustomer) else a
                for a in draft_decision(d, f).actions]
        return [DecideDraft(d.id, "approved", f.actor.label),
                Record(EventKind.APPROVED, f"draft {d.id} by {d.csr}", f.actor.label), *sent]


class RejectDraft(Command):
    name = "reject"
    takes_arg = True
    arg_optional = True  # on a held case (intake policy "hold"): refuse the case
    text_role = NOTE
    help = ("#reject N: (a supervisor) return held answer N to its author; the text below says why. "
            "#reject alone on a held case: refuse it")

    def check(self, arg: str, text: str, f: CommandFacts) -> str | None:
        if not arg.strip():
            if f.case is not None and f.case.status is Status.HELD:
                return None
            return f"#reject needs an argument: {self.help}"
        d = _draft(arg, f)
        if d is None:
            waiting = ", ".join(str(x.id) for x in f.drafts) or "none"
            return f"no held answer {arg.strip()} on this case (held: {waiting})"
        return _may_decide(d, f)

    def actions(self, arg: str, text: str, f: CommandFacts) -> list[Action]:
        if not arg.strip():
            return refuse_held(text, f)
        d = _draft(arg, f)
        assert d is not None
        number = f.case.number if f.case else ""
        why = text.strip() or "(no reason given)"
        return [DecideDraft(d.id, "rejected", f.actor.label),
                Record(EventKind.REJECTED, f"draft {d.id} by {d.csr}: {why}", f.actor.label),
                TellCsr(d.csr, "Not approved", (
                    f"{f.actor.label} did not approve your answer on {number}; nothing was sent "
                    f"to the customer.\n\n{why}\n\nYour draft:\n\n"
                    + (f"{d.commands}\n" if d.commands else "") + d.text))]


# -- a held case (a mailbox's intake policy "hold", issue 10) ---------------------------


def refuse_held(text: str, f: CommandFacts) -> list[Action]:
    """#reject on a held case: closed without survey or closing mail; the
    sender gets the polite refusal (under the loop guards); the text below is
    a note."""
    assert f.case is not None
    out: list[Action] = [SetStatus(Status.CLOSED, f"refused by {f.actor.label}"),
                         Cancel((TimerKind.REMIND, TimerKind.AUTOCLOSE, TimerKind.ASSIGN_RETRY)),
                         Record(EventKind.INTAKE_REFUSED, "held case refused", f.actor.label),
                         RefuseIntake(f.case.customer_address, "intake_rejected", "refused by a CSR")]
    if text.strip():
        out.append(AddNote(f.actor.label, text.strip()))
    return out


class Accept(Command):
    name = "accept"
    help = "#accept: open a held case (a sender new to the mailbox) normally; they get the acknowledgement"

    def check(self, arg: str, text: str, f: CommandFacts) -> str | None:
        assert f.case is not None
        if f.case.status is not Status.HELD:
            return f"{f.case.number} is not held (it is {f.case.status}): nothing to accept"
        return None

    def actions(self, arg: str, text: str, f: CommandFacts) -> list[Action]:
        # The acknowledgement, unless the mailbox (else its pool) turned them off.
        assert f.case is not None
        info = f.directory.mailbox(f.case.mailbox)
        if info is not None and not info.acknowledges:
            ack: Action = Record(EventKind.NO_ACK, f"mailbox {info.address}: acknowledgements off"
                                 if info.acknowledge is not None
                                 else f"pool {info.pool.name}: acknowledgements off")
        elif info is None and f.pool is not None and not f.pool.acknowledge:
            ack = Record(EventKind.NO_ACK, f"pool {f.pool.name}: acknowledgements off")
        else:
            ack = SendCustomer(MessageKind.ACK)
        return [SetStatus(Status.RECEIVED, f"accepted by {f.actor.label}"),
                Record(EventKind.ACCEPTED, "", f.actor.label), ack]


class Take(Command):
    name = "take"
    open_only = True
    text_role = ANSWER
    needs_csr = True
    help = "#take: assign the case to yourself"

    def check(self, arg: str, text: str, f: CommandFacts) -> str | None:
        assert f.case is not None
        if f.case.assignee == f.actor.address:
            return f"{f.case.number} is already yours"
        return None

    def actions(self, arg: str, text: str, f: CommandFacts) -> list[Action]:
        out: list[Action] = [Assign(f.actor.address, "took it")]
        assert f.case is not None
        if f.case.status in (Status.RECEIVED, Status.REOPENED):
            out.append(SetStatus(Status.IN_PROGRESS, f"taken by {f.actor.label}"))
        return out


class Solution(Command):
    name = "solution"
    open_only = True
    text_role = SOLUTION
    needs_csr = True
    help = "#solution: the text below is a proposed solution the customer accepts or rejects"

    def check(self, arg: str, text: str, f: CommandFacts) -> str | None:
        assert f.case is not None
        if not text.strip():
            return "#solution needs the solution's text below it"
        if not f.case.customer_address:
            return f"{f.case.number} has no customer address to send a solution to"
        return None

    def actions(self, arg: str, text: str, f: CommandFacts) -> list[Action]:
        assert f.pool is not None
        return [AnswerCustomer(f.actor.address, text.strip(), MessageKind.SOLUTION),
                SetStatus(Status.SOLUTION_PROPOSED, f"solution proposed by {f.actor.label}"),
                *timers_after_answer(f.pool)]


class BlacklistSender(Command):
    name = "blacklist"
    text_role = NOTE
    help = "#blacklist: reject the customer's address from now on"
    subject_only = False

    def check(self, arg: str, text: str, f: CommandFacts) -> str | None:
        assert f.case is not None
        address = f.case.customer_address
        local, at, domain = address.rpartition("@")
        if not at or not local or not domain:
            return f"{address or 'no address'} is not a full address: a command never blacklists a domain"
        if f.directory.is_ours(address):
            return f"{address} is one of our own addresses (a CSR or a supervised address)"
        if f.actor.csr is not None and domain == f.actor.address.rpartition("@")[2]:
            return f"{address} is in the staff domain {domain}: blacklist it from the shell if you must"
        return None

    def actions(self, arg: str, text: str, f: CommandFacts) -> list[Action]:
        assert f.case is not None
        subject = None
        if self.subject_only and f.case.subject:
            head = f.case.subject[:200]  # the column holds 500; a long subject matches by its start
            subject = "^" + re.escape(head) + ("$" if head == f.case.subject else "")
        out: list[Action] = [Blacklist(f.case.customer_address, subject, f.actor.label)]
        if text.strip():
            out.append(AddNote(f.actor.label, text.strip()))
        return out


class BlacklistSubject(BlacklistSender):
    name = "blacklist-subject"
    help = "#blacklist-subject: reject the customer's address with this case's subject"
    subject_only = True


class New(Command):
    name = "new"
    takes_arg = True
    text_role = ANSWER
    needs_case = False
    needs_csr = True
    help = "#new customer@example.org: (to the support address) open a case and write to them"

    def check(self, arg: str, text: str, f: CommandFacts) -> str | None:
        _, address = parseaddr(arg) if arg else ("", "")
        address = address.lower()
        if f.case is not None:
            return f"#new opens a case: write it to the support address, not to {f.case.number}"
        if "@" not in address or not address.rpartition("@")[0]:
            return "#new needs the customer's address, e.g. #new customer@example.org"
        if f.directory.is_ours(address):
            return f"{address} is one of our own addresses: a CSR is never a case's customer"
        if not text.strip() and not f.has_files:
            return "#new needs your first message to the customer below it"
        return None

    def actions(self, arg: str, text: str, f: CommandFacts) -> list[Action]:
        assert f.pool is not None
        name, address = parseaddr(arg)
        # The product as a customer's case gets it: a keyword in the subject,
        # else the mailbox's (rules/products.py).
        product = product_for(f.mailbox, f.subject, f.directory.products)
        return [OpenCase(address.lower(), name, f.subject or "(no subject)",
                         status=Status.IN_PROGRESS, reason=f"opened by {f.actor.label}"),
                StoreMessage(MessageKind.CSR, text),
                *([SetProduct(*product)] if product is not None else []),
                Assign(f.actor.address, "opened it"),
                AnswerCustomer(f.actor.address, text.strip()),
                Record(EventKind.REPLIED, actor=f.actor.address),
                *timers_after_answer(f.pool)]


class Next(Command):
    name = "next"
    needs_case = False
    needs_csr = True
    help = "#next: (to the support address) take the oldest waiting case of your pools"

    def check(self, arg: str, text: str, f: CommandFacts) -> str | None:
        if f.case is not None:
            return "#next takes a new case: write it to the support address, not to a case"
        if not f.waiting:
            pools = ", ".join(sorted(f.actor.csr.pools)) if f.actor.csr else ""
            return f"nothing is waiting in your pools ({pools or 'none'})"
        return None

    def actions(self, arg: str, text: str, f: CommandFacts) -> list[Action]:
        return [SwitchCase(f.waiting[0]), Assign(f.actor.address, "pulled with #next"),
                Record(EventKind.COMMAND, "#next", f.actor.address),
                Notify(f"Your next case, {f.actor.csr.name if f.actor.csr else f.actor.address}")]


def parse_when(text: str, now: dt.datetime) -> dt.datetime:
    """``2026-12-24`` (midnight UTC), ``2026-12-24T09:00`` (UTC unless it says
    otherwise) or a duration from now (``3d``, ``12h``); ValueError otherwise."""
    value = text.strip()
    try:
        seconds = parse_duration(value, allow_off=False)
    except ValueError:
        seconds = None
    if seconds is not None:
        return now + dt.timedelta(seconds=seconds)
    try:
        when = dt.datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{text!r} is not a date: use 2026-12-24, 2026-12-24T09:00 or 3d") from None
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)


def parse_away(arg: str) -> tuple[str, str, str]:
    """``until WHEN``, ``deputy ADDRESS``, ``pool NAME`` in any order → (when, deputy, pool)."""
    words = arg.split()
    found = {"until": "", "deputy": "", "pool": ""}
    i = 0
    while i < len(words):
        key = words[i].lower()
        if key not in found or i + 1 >= len(words):
            raise ValueError(f"#away takes: until WHEN, deputy ADDRESS, pool NAME (not {words[i]!r})")
        found[key] = words[i + 1]
        i += 2
    return found["until"], found["deputy"], found["pool"]


class Away(Command):
    name = "away"
    takes_arg = True
    arg_optional = True
    needs_case = False
    needs_csr = True
    help = ("#away [until 2026-12-24|3d] [deputy ADDRESS] [pool NAME]: (to the support address) "
            "no new cases for you meanwhile")

    def check(self, arg: str, text: str, f: CommandFacts) -> str | None:
        if f.case is not None:
            return "#away goes to the support address, not to a case"
        try:
            when, deputy, pool = parse_away(arg)
            if when:
                until = parse_when(when, f.now or dt.datetime.now(dt.UTC))
                if f.now is not None and until <= f.now:
                    return f"#away until {when}: that is not in the future"
        except ValueError as exc:
            return str(exc)
        if deputy:
            target = f.directory.csr(_address(deputy))
            if target is None:
                return f"deputy {deputy} is not a CSR"
            if f.actor.csr is not None and target.address == f.actor.csr.address:
                return "you cannot be your own deputy"
        if pool and f.actor.csr is not None and pool not in f.actor.csr.pools:
            return f"you are not in pool {pool} (yours: {', '.join(sorted(f.actor.csr.pools))})"
        return None

    def actions(self, arg: str, text: str, f: CommandFacts) -> list[Action]:
        when, deputy, pool = parse_away(arg)
        until = parse_when(when, f.now or dt.datetime.now(dt.UTC)) if when else None
        return [SetAway(f.actor.address, (pool,) if pool else (), until, _address(deputy))]


class Back(Command):
    name = "back"
    takes_arg = True
    arg_optional = True
    needs_case = False
    needs_csr = True
    help = "#back [pool NAME]: (to the support address) new cases reach you again"

    def check(self, arg: str, text: str, f: CommandFacts) -> str | None:
        if f.case is not None:
            return "#back goes to the support address, not to a case"
        words = arg.split()
        if words and (len(words) != 2 or words[0].lower() != "pool"):
            return f"#back takes nothing or pool NAME (not {arg!r})"
        return None

    def actions(self, arg: str, text: str, f: CommandFacts) -> list[Action]:
        words = arg.split()
        return [SetBack(f.actor.address, (words[1],) if words else ())]


class SetTo(Command):
    name = "status"
    open_only = True
    takes_arg = True
    help = "#status STATUS: set the status (received, in_progress, solution_proposed, reopened)"

    def check(self, arg: str, text: str, f: CommandFacts) -> str | None:
        assert f.case is not None
        try:
            status = Status(arg.strip().lower())
        except ValueError:
            shown = (s.value for s in Status if s is not Status.HELD)
            return f"{arg!r} is not a status: use {', '.join(shown)}"
        if status is Status.HELD or f.case.status is Status.HELD:
            return "a held case is opened with #accept (or refused with #reject), not by #status"
        if status is Status.CLOSED:
            return "use #close to close a case (the customer is told)"
        if status is Status.UNDER_CONSULTATION:
            return "under_consultation is set by consulting a department, not by #status"
        if status is f.case.status:
            return f"{f.case.number} is already {status}"
        return None

    def actions(self, arg: str, text: str, f: CommandFacts) -> list[Action]:
        return [SetStatus(Status(arg.strip().lower()), f"set by {f.actor.label}")]


COMMANDS: dict[str, Command] = {c.name: c for c in (
    Close(), Reopen(), Note(), AssignTo(), Take(), Solution(), SetTo(), BlacklistSender(),
    BlacklistSubject(), New(), Next(), Away(), Back(), Escalate(), ConsultDepartment(), Approve(),
    Accept(),
    RejectDraft())}

HELP = "\n".join(f"  {c.help}" for c in COMMANDS.values())

def _address(arg: str) -> str:
    return parseaddr(arg)[1].lower() if arg else ""


# Commands that take no other command beside them.
_ALONE = ("new", "next", "away", "back", "approve", "reject")

_EXCLUSIVE = (
    {"consult", "note"},
    {"consult", "solution"},
    {"consult", "close"},
    {"close", "reopen"},
    {"assign", "take"},
    {"escalate", "assign"},
    {"escalate", "take"},
    {"escalate", "close"},
    {"close", "solution"},
    {"status", "close"},
    {"status", "solution"},
    {"status", "reopen"},
    {"note", "solution"},
    {"new", "close"},
    {"new", "solution"},
)


def check(commands: Sequence[Given], text: str, f: CommandFacts) -> list[str]:
    """Every reason the commands cannot be carried out (empty: all can)."""
    errors: list[str] = []
    names = [g.name for g in commands]
    if "reopen" in names and f.case is not None and f.case.status is Status.CLOSED:
        # #reopen acts first: the others are checked against the reopened case.
        reopened = replace(f.case, status=Status.REOPENED)
        after = replace(f, case=reopened)
    else:
        after = f
    for g in commands:
        command = COMMANDS.get(g.name)
        if command is None:
            errors.append(f"{g}: unknown command")
            continue
        if names.count(g.name) > 1:
            errors.append(f"#{g.name} is given twice")
            continue
        if command.takes_arg and not g.arg and not command.arg_optional:
            errors.append(f"#{g.name} needs an argument: {command.help}")
            continue
        if command.takes_pairs and g.arg and not _PAIRS.fullmatch(g.arg):
            errors.append(f"{g}: #{g.name} takes only NAME=VALUE answers on its line")
            continue
        if not command.takes_arg and not command.takes_pairs and g.arg:
            errors.append(f"{g}: #{g.name} takes no argument")
            continue
        if command.needs_case and f.case is None:
            errors.append(f"#{g.name} needs a case: reply to the case's notification")
            continue
        if command.needs_csr and f.actor.csr is None:
            errors.append(f"#{g.name} is for a CSR (at the shell: --csr ADDRESS)")
            continue
        facts = f if g.name == "reopen" else after
        if command.open_only and facts.case is not None and facts.case.status is Status.CLOSED:
            errors.append(f"{facts.case.number} is closed: #reopen it first")
            continue
        problem = command.check(g.arg, text, facts)
        if problem:
            errors.append(problem)
    for alone in _ALONE:
        if alone in names and len(names) > 1:
            errors.append(f"#{alone} is given alone")
    for pair in _EXCLUSIVE:
        if pair <= set(names):
            a, b = sorted(pair)
            errors.append(f"#{a} and #{b} cannot be given together")
    if (f.actor.csr is None and text.strip() and not errors
            and _text_role(names) == ANSWER and f.case is not None):
        errors.append("text for the customer needs a CSR to sign it (at the shell: --csr ADDRESS)")
    return list(dict.fromkeys(errors))


def _text_role(names: Sequence[str]) -> str:
    roles = {COMMANDS[n].text_role for n in names if n in COMMANDS}
    for role in (NOTE, SOLUTION, QUESTION, ANSWER):
        if role in roles:
            return role
    return ANSWER


# The order in which commands act, whatever order they were written in.
_ORDER = ("new", "accept", "reopen", "take", "assign", "escalate", "consult", "status", "note", "solution",
          "close", "blacklist", "blacklist-subject")


def decide(commands: Sequence[Given], text: str, f: CommandFacts,
           *, store: StoreMessage | None = None) -> Decision:
    """The decision for a CSR's (or an admin's) commands. ``store`` is the
    action that keeps the CSR's own message (by mail), placed first."""
    hits = [Hit("commands", " ".join(str(g) for g in commands) + f" by {f.actor.label}")]
    errors = check(commands, text, f)
    if errors:
        hits.append(Hit("command_refused", "; ".join(errors)))
        refused: list[Action] = [store] if store is not None else []
        if f.case is not None:
            refused.append(Record(EventKind.COMMAND_REFUSED, "; ".join(errors), f.actor.label))
        if f.by_mail:
            refused.append(TellCsr(f.actor.address, "Not done: " + ", ".join(
                str(g) for g in commands), refusal_text(commands, errors)))
        return decision(Outcome.CSR_COMMAND_REFUSED, refused, hits, errors)

    names = [g.name for g in commands]
    role = _text_role(names)
    by_name = {g.name: g for g in commands}
    if role in (ANSWER, SOLUTION) and text.strip() and _needs_approval(f) and "new" not in by_name:
        return _held(" ".join(str(g) for g in commands), text, f, store,
                     MessageKind.SOLUTION if role == SOLUTION else MessageKind.REPLY)
    actions: list[Action] = []
    if "new" in by_name:
        g = by_name["new"]
        return decision(Outcome.PROACTIVE_CASE, COMMANDS["new"].actions(g.arg, text, f), hits)
    for alone in ("next", "away", "back", "approve", "reject"):
        if alone in by_name:
            kept: list[Action] = [store] if store is not None else []
            done = COMMANDS[alone].actions(by_name[alone].arg, text, f)
            if f.by_mail and alone in ("away", "back"):
                done.append(TellCsr(f.actor.address, "Done", _availability_text(done[0])))
            return decision(Outcome.CSR_COMMAND, [*kept, *done], hits)
    if store is not None:
        # What the customer may later see in the history: the answer, never a note.
        # (At the shell there is no message to keep but an answer's text.)
        public = role in (ANSWER, SOLUTION) and text.strip()
        if public:
            actions.append(StoreMessage(MessageKind.CSR, text.strip()))
        elif f.by_mail:
            actions.append(StoreMessage(MessageKind.COMMAND, store.text))
    actions.append(Record(EventKind.COMMAND, " ".join(str(g) for g in commands), f.actor.label))
    answered = False
    for name in _ORDER:
        given = by_name.get(name)
        if given is None:
            continue
        if name == "close" and role == ANSWER and text.strip():
            actions += _answer(text, f, wait=False)
            answered = True
        actions += COMMANDS[name].actions(given.arg, text if COMMANDS[name].text_role == role else "", f)
    if role == ANSWER and text.strip() and not answered:
        actions += _answer(text, f, reopened="reopen" in by_name)
    if {"blacklist", "blacklist-subject"} & set(by_name):
        # Never write to an address just blacklisted (closing notice, survey).
        actions = [a for a in actions if not isinstance(a, SendCustomer)]
    # #assign's or #blacklist's note and #note's are the same text: once.
    return decision(Outcome.CSR_COMMAND, list(dict.fromkeys(actions)), hits)


def _availability_text(action: Action) -> str:
    where = ", ".join(getattr(action, "pools", ())) or "all your pools"
    if isinstance(action, SetAway):
        return (f"You are away in {where}"
                + (f" until {action.until.strftime('%Y-%m-%d %H:%M UTC')}" if action.until else "")
                + (f"; {action.deputy} is told about your cases" if action.deputy else
                   "; your cases' new mail goes to another CSR of the pool") + ".\n"
                "No new cases reach you meanwhile. Send #back to the support address to return.")
    return f"You are back in {where}: new cases reach you again."


def _answer(text: str, f: CommandFacts, *, wait: bool = True, reopened: bool = False) -> list[Action]:
    assert f.case is not None and f.pool is not None and f.actor.csr is not None
    out: list[Action] = [AnswerCustomer(f.actor.address, text.strip()),
                         Record(EventKind.REPLIED, actor=f.actor.address)]
    if reopened:  # #reopen with an answer: the case is being worked on again
        out.append(SetStatus(Status.IN_PROGRESS, f"answered by {f.actor.label}"))
    if wait and (reopened or f.case.status is not Status.CLOSED):
        out += timers_after_answer(f.pool)
    return out


def refusal_text(commands: Sequence[Given], errors: Sequence[str]) -> str:
    lines = ["Nothing was done with your message:", ""]
    lines += [f"  - {e}" for e in errors]
    lines += ["", "Commands go at the top of your reply, one per line:", HELP,
              "", "Your message is stored on the case; nothing was sent to the customer."]
    return "\n".join(lines)


def _needs_approval(f: CommandFacts) -> bool:
    return bool(f.actor.csr is not None and f.actor.csr.supervisor and not f.approved)


def _held(commands: str, text: str, f: CommandFacts, store: StoreMessage | None,
          kind: MessageKind) -> Decision:
    """A CSR who needs approval answered: the supervisor gets the draft, the
    customer nothing yet."""
    assert f.actor.csr is not None
    supervisor = f.actor.csr.supervisor
    kept: list[Action] = [StoreMessage(MessageKind.COMMAND, store.text)] if store is not None else []
    return decision(Outcome.HELD_FOR_APPROVAL, [
        *kept, HoldDraft(f.actor.address, supervisor, commands, text.strip(), kind),
        Record(EventKind.HELD, f"for {supervisor}'s approval", f.actor.address)],
        [Hit("needs_approval", f"{f.actor.address}'s answers wait for {supervisor}")])


def csr_reply(text: str, has_files: bool, f: CommandFacts, *,
              store: StoreMessage | None) -> Decision:
    """A CSR's plain answer (no commands) on a case."""
    assert f.case is not None and f.pool is not None
    if text.strip() and _needs_approval(f):
        return _held("", text, f, store, MessageKind.REPLY)
    hits = [Hit("csr_reply", f"answer by {f.actor.label}")]
    actions: list[Action] = [store] if store is not None else []
    if f.case.assignee is None:
        actions.append(Assign(f.actor.address, f"{f.actor.address} answered"))
    if not text.strip() and not has_files:
        actions.append(Record(EventKind.EMPTY_REPLY, "nothing above the quoted text: "
                              "nothing sent to the customer", f.actor.address))
        return decision(Outcome.CSR_EMPTY_REPLY, actions, hits)
    actions += [AnswerCustomer(f.actor.address, text.strip()),
                Record(EventKind.REPLIED, actor=f.actor.address)]
    if f.case.status in (Status.RECEIVED, Status.REOPENED, Status.SOLUTION_PROPOSED):
        actions.append(SetStatus(Status.IN_PROGRESS, f"answered by {f.actor.label}"))
    if f.case.status is Status.CLOSED:
        hits.append(Hit("closed_case", "an answer on a closed case keeps it closed"))
    elif f.pool.close_on_reply:
        hits.append(Hit("close_on_reply", f"pool {f.pool.name} closes a case on each answer"))
        actions += closing(f"pool {f.pool.name}: close on reply")
    else:
        actions += timers_after_answer(f.pool)
    return decision(Outcome.CSR_REPLY, actions, hits)


def unreadable(f: CommandFacts, why: str, *, store: StoreMessage) -> Decision:
    """A proven CSR's message whose structure casegate could not read: never
    forwarded to the customer as raw MIME; the CSR is told, the bytes kept."""
    text = ("casegate could not read your message's structure, so nothing was sent to "
            f"the customer ({why}).\n\nPlease send your answer again as an ordinary reply. "
            "Your message is stored on the case.")
    actions: list[Action] = [store]
    if f.case is not None:
        actions.append(Record(EventKind.COMMAND_REFUSED, f"unreadable: {why}", f.actor.address))
    actions.append(TellCsr(f.actor.address, "Not sent: unreadable", text))
    return decision(Outcome.CSR_COMMAND_REFUSED, actions, [Hit("unreadable", why)])


def no_case(f: CommandFacts, *, store: StoreMessage) -> Decision:
    """A proven CSR wrote to the support address about no case and without #new."""
    text = ("Your message to the support address names no case, so nothing was sent.\n\n"
            "To write to a customer, start your message with\n\n"
            "  #new customer@example.org\n\n"
            "and your text below it: a case opens with them as the customer.\n"
            "To answer a case, reply to its notification.\n\n"
            "Your message is stored.")
    return decision(Outcome.CSR_NO_CASE, [store, TellCsr(f.actor.address, "Not sent: no case", text)],
                    [Hit("csr_no_case", "a CSR is never the customer of a case")])


__all__ = ["CANCEL_WAITING", "COMMANDS", "Actor", "CommandFacts", "Given", "Parsed", "check",
           "csr_reply", "decide", "no_case", "parse", "unreadable"]
