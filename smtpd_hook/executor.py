"""The executor: applies a decision's actions, in order, inside the caller's
transaction, and writes the outgoing mail they cause into the outbox.

Rules decide (``rules.life``, ``rules.commands``); this module only does what
they say. The one judgement it keeps is a guard every automatic mail passes
at the last moment: the rate caps, which need counts from the store.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import json
import logging
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from markupsafe import Markup

from casestore.models import Case, Csr, Event, Mailbox, Message, Participant
from casestore.store import Store, aware, case_dict
from rules import decision as d
from rules import defaults, tokens
from rules.assign import AssignRule, Candidate, choose
from rules.classify import Identity, Role
from rules.decision import Directory, base_address
from rules.inbound import Inbound
from rules.life import ack_refusal
from rules.logctx import queue_id as current_queue_id
from rules.loop import LOOP_HEADER, make_loop_header, verp_address
from rules.names import first_name
from rules.quotes import REPLY_MARKER, html_to_text
from rules.salutation import own as own_salutation
from rules.salutation import split as split_salutation
from rules.vocab import AUTOMATIC_OUT, CUSTOMER_THREAD_OUT, EventKind, MessageKind, Status, TimerKind
from smtpd_hook.delivery import Delivery
from smtpd_hook.i18n import say, translate
from smtpd_hook.render import (
    InlineImage,
    OutgoingFile,
    Rendered,
    Renderer,
    build_message,
    format_address,
    greeting_line,
)
from smtpd_hook.sanitize import csr_html, footer_cid, footer_html, inline_digests
from smtpd_hook.settings import Settings

log = logging.getLogger("casegate.executor")

RULES_HEADER = "X-Casegate-Rules"
AUTOMATIC_KINDS = frozenset(k.value for k in AUTOMATIC_OUT)  # as the rows store them
# Variables of every customer template that cost queries (docs/templates.md).
THREAD_VARIABLES = ("filelist", "threadcount", "threadlist", "threadlast")


@dataclass
class Context:
    """What one event's actions work on; the executor fills in what they create."""

    mailbox: Mailbox
    directory: Directory
    case: Case | None = None
    delivery: Delivery | None = None
    inbound: Inbound | None = None
    message: Message | None = None  # the inbound message, once stored
    identity: Identity | None = None  # who wrote the inbound message
    suppress: str | None = None  # the inbound message asked for no automatic replies
    hops: int = 0  # loop-header hops of the inbound message
    explain: str = ""  # the decision's rule hits
    actor: str = ""  # at the shell: who gives the command
    opened: bool = False  # the case was opened by this decision
    participants: set[str] | None = None  # the case's, when the caller loaded them (saves a query)
    sent: list[Message] = field(default_factory=list)
    # A case this decision opened holds only what this transaction stored on
    # it: its messages (message, sent), files and notes are known without
    # reading them back (three SELECTs per new case).
    fresh: int | None = None  # the id of the case opened by this decision
    # (Assign, CSR or None, detail, rule): chosen when the case was opened (Executor._opencase)
    assigned_ahead: tuple[Any, ...] | None = None
    files: list[Any] = field(default_factory=list)  # Attachment rows stored by this decision
    notes: list[Event] = field(default_factory=list)  # note events written by this decision


class Executor:
    def __init__(self, store: Store, settings: Settings, renderer: Renderer,
                 sign: Callable[[bytes], bytes] | None = None) -> None:
        self.store = store
        self.settings = settings
        self.renderer = renderer
        self.sign = sign

    def apply(self, decision: d.Decision, ctx: Context) -> Context:
        ctx.explain = decision.explain()
        for i, action in enumerate(decision.actions):
            if isinstance(action, d.OpenCase):
                self._opencase(action, ctx, _assign_ahead(decision.actions[i + 1:], ctx))
                continue
            handler = getattr(self, "_" + type(action).__name__.lower())
            handler(action, ctx)
        return ctx

    # -- case changes ------------------------------------------------------------

    def _opencase(self, a: d.OpenCase, ctx: Context, assign: d.Assign | None = None) -> None:
        """Open the case. ``assign``: the decision's Assign of it that follows
        with nothing in between that bears on the choice (see
        :func:`_assign_ahead`): its CSR is chosen now, as the Assign would,
        and written by the case's INSERT, not by an UPDATE after it (a row
        version and every index of the case's table less); the Assign then
        records what was chosen."""
        store = self.store
        previous = store.case(a.follow_up_of) if a.follow_up_of else None
        assignee = None
        if assign is not None:
            ctx.assigned_ahead = (assign, *self._choose(assign, ctx, number=None))
            assignee = ctx.assigned_ahead[1]
        case = store.new_case(mailbox=ctx.mailbox, prefix=self.settings.case_prefix,
                              customer_address=a.customer_address,
                              customer_name=a.customer_name,
                              subject=tokens.clean_subject(a.subject, self.settings.case_prefix)
                              or "(no subject)",
                              status=a.status, follow_up_of=previous, assignee=assignee)
        ctx.case = case
        ctx.opened = True
        ctx.fresh = case.id
        self._event(ctx, EventKind.OPENED, a.reason, a.customer_address)
        # (new_case added the customer, bounded as stored)
        known = {case.customer_address} if case.customer_address else set()
        for address in a.participants:
            store.add_participant(case, address, "cc", known=known)
        ctx.participants = {a.customer_address, *a.participants} if a.customer_address else None
        if a.mentions:
            self._event(ctx, EventKind.MENTIONS, ", ".join(a.mentions), a.customer_address)
        if previous is not None:
            self._event(ctx, EventKind.FOLLOW_UP_OF, f"follow-up of {previous.number}")
            store.event(EventKind.FOLLOW_UP_CREATED, case=previous,
                        detail=f"follow-up {case.number} created")

    def _storemessage(self, a: d.StoreMessage, ctx: Context) -> None:
        delivery, inbound = ctx.delivery, ctx.inbound
        if delivery is None or inbound is None:
            # From the shell: what the CSR said, kept like a message (no bytes).
            ctx.message = self.store.add_message(
                case=ctx.case if a.attach else None, direction="in", kind=a.kind.value,
                sender=ctx.actor, text=a.text, raw=b"", client_addr="shell")
            return
        identity = ctx.identity
        message = self.store.add_message(
            case=ctx.case if a.attach else None,
            direction="in",
            kind=a.kind.value,
            sender=inbound.from_address or delivery.mail_from.lower(),
            recipients=",".join(delivery.rcpt_tos),
            message_id=inbound.message_id,
            in_reply_to=" ".join(inbound.in_reply_to),
            subject=inbound.subject,
            text=a.text,
            raw=delivery.data,
            queue_id=delivery.queue_id,
            client_addr=delivery.client_addr,
            authenticated=identity.proof if identity is not None
            and identity.role in (Role.CSR, Role.DEPARTMENT) else "",
            automatic=f"{identity.rule}: {identity.reason}"[:200]
            if identity is not None and identity.role is Role.AUTOMATIC else "",
            dkim=" ".join(f"{'pass' if ok else 'fail'}:{dom}" for dom, ok, _ in delivery.dkim)[:500],
        )
        for part in inbound.attachments:
            ctx.files.append(self.store.add_attachment(message, filename=part.filename,
                                                       content_type=part.content_type, data=part.data,
                                                       sha256=part.sha256, inline=part.inline,
                                                       content_id=part.content_id))
        ctx.message = message

    def _setstatus(self, a: d.SetStatus, ctx: Context) -> None:
        case = self._case(ctx)
        old = case.status
        if old == a.status:
            return
        changes: dict[str, Any] = {"status": a.status.value}
        if a.status is Status.CLOSED:
            changes["closed"] = self.store.now()
            if case.assignee_id is not None:
                # Room for a case that waits for a CSR with room (limit:N): now.
                self.store.hurry_assign_retries(ctx.mailbox.pool)
        elif old == Status.CLOSED:
            changes["closed"] = None
        self.store.touch(case, **changes)
        self._event(ctx, EventKind.STATUS, f"{old} -> {a.status}" + (f": {a.reason}" if a.reason else ""))

    def _assign(self, a: d.Assign, ctx: Context) -> None:
        case, store = self._case(ctx), self.store
        pool = ctx.mailbox.pool
        ahead, ctx.assigned_ahead = ctx.assigned_ahead, None
        if ahead is not None and ahead[0] is a:  # chosen when the case was opened
            _, csr, detail, rule = ahead
        else:
            csr, detail, rule = self._choose(a, ctx, number=case.number)
        if rule is not None:  # by the pool's rule
            if csr is None and a.level != 1:
                self._event(ctx, EventKind.UNASSIGNED, f"no available level-{a.level} CSR in pool "
                            f"{pool.name}: the case stays with its CSR")
                return
            if csr is None:
                self._unassigned(ctx, rule)
                return
            if rule.name == "round_robin":
                pool.last_assigned = csr.id
                pool.save(only=[type(pool).last_assigned])
        if csr is None:
            return
        if ahead is None or ahead[0] is not a:  # (else the case's INSERT wrote it)
            store.touch(case, assignee=csr)
        if not ctx.opened:
            store.cancel_timers_later(case, [TimerKind.ASSIGN_RETRY])
        self._event(ctx, EventKind.ASSIGNED, detail, csr.address)

    def _choose(self, a: d.Assign, ctx: Context, *, number: str | None
                ) -> tuple[Csr | None, str, AssignRule | None]:
        """Whom an Assign gives the case to (None: nobody available), the
        event's detail, and the pool's rule (None for a CSR named by the
        action). ``number``: the case's, which seeds the random rule."""
        if a.csr:
            return self.store.csr(a.csr), a.rule, None
        pool = ctx.mailbox.pool
        rule = _pool_rule(pool)
        rows = self.store.candidates(pool)
        chosen = choose(rule, [Candidate(c.id, load, level, available)
                               for c, load, level, available in rows],
                        last=pool.last_assigned, rng=random.Random(number), level=a.level)
        return next((c for c, _, _, _ in rows if c.id == chosen), None), str(rule), rule

    def _unassigned(self, ctx: Context, rule: AssignRule) -> None:
        """Nobody took the case: retried by the scheduler (when the rule hands
        cases out), and the pool's fallback address is told once per case."""
        case, store, pool = self._case(ctx), self.store, ctx.mailbox.pool
        if not rule.pushes:
            self._event(ctx, EventKind.UNASSIGNED, f"pool {pool.name} ({rule}): waits for a CSR's #next"
                        if rule.name == "fifo" else f"pool {pool.name} ({rule}): nobody is pushed cases")
            return
        self._event(ctx, EventKind.UNASSIGNED, f"no available CSR in pool {pool.name} ({rule})")
        log.warning("case %s: no available CSR in pool %s (%s)", case.number, pool.name, rule)
        store.cancel_timers_later(case, [TimerKind.ASSIGN_RETRY])
        store.schedule(case, TimerKind.ASSIGN_RETRY,
                       store.clock() + dt.timedelta(seconds=defaults.ASSIGN_RETRY_SECONDS))
        fallback = pool.unassigned_notify
        if fallback and not Event.select(Event.id).where(
                (Event.case == case) & (Event.kind == EventKind.UNASSIGNED_NOTIFIED)).exists():
            lang = _language(ctx.mailbox)
            self._tellcsr(d.TellCsr(fallback, say(lang, "Nobody could take it"), say(
                lang, "Case {number} in pool {pool} found no available CSR ({rule}).\nIt waits; the "
                "scheduler tries again every {minutes} minutes. `casegate case assign {number} "
                "ADDRESS` assigns it now.", number=case.number, pool=pool.name, rule=str(rule),
                minutes=defaults.ASSIGN_RETRY_SECONDS // 60)), ctx)
            self._event(ctx, EventKind.UNASSIGNED_NOTIFIED, fallback)

    def _switchcase(self, a: d.SwitchCase, ctx: Context) -> None:
        case = self.store.load_case(Case.number == a.number)
        assert case is not None, a.number
        ctx.case = case
        ctx.mailbox = case.mailbox
        ctx.participants = None  # another case's

    def _addnote(self, a: d.AddNote, ctx: Context) -> None:
        self._event(ctx, EventKind.NOTE, a.text, a.author)

    def _consult(self, a: d.Consult, ctx: Context) -> None:
        case, store = self._case(ctx), self.store
        dept = ctx.directory.department(a.department)
        assert dept is not None, a.department
        consultation = store.consult(case, dept.name, a.question, a.by)
        csr = ctx.directory.csr(a.by)
        csr_name = csr.name if csr is not None else a.by or "admin"
        msgs = store.messages(case)
        history, omitted = self._history(case, msgs, ctx.directory, exclude=None, public_only=True,
                                         language=_language(ctx.mailbox))
        out = self._render(ctx, "department", "consult", {
            "csr_name": csr_name, "organization": self._organization(ctx), "department": dept.name,
            "question": a.question, "case": self._case_view(case), "due": _date(consultation.due),
            "history": history, "history_omitted": omitted})
        self._outgoing(ctx, kind=MessageKind.CONSULT,
                       from_=format_address(f"{csr_name} via {self._organization(ctx)}",
                                            tokens.plus_address(ctx.mailbox.address, case.number)),
                       to=[dept.address],
                       subject=tokens.tagged_subject(case.number, f"Question for {dept.name}: {case.subject}",
                                                     self.settings.case_prefix),
                       body=out.text, html=out.html, in_reply_to=None, references=[],
                       headers=self._automatic_headers(ctx, "auto-generated"))
        self._schedule_consult_due(ctx)

    def _schedule_consult_due(self, ctx: Context) -> None:
        case, store = self._case(ctx), self.store
        store.cancel_timers_later(case, [TimerKind.CONSULT_DUE])
        due = [aware(c.due) for c in store.open_consultations(case)]
        if due:
            store.schedule(case, TimerKind.CONSULT_DUE, min(d for d in due if d is not None))

    def _consultationanswered(self, a: d.ConsultationAnswered, ctx: Context) -> None:
        self.store.consultation_answered(self._case(ctx), a.department)
        self._schedule_consult_due(ctx)

    def _markoverdue(self, a: d.MarkOverdue, ctx: Context) -> None:
        case, store = self._case(ctx), self.store
        now = store.now()
        for c in store.open_consultations(case):
            if c.due > now:
                continue
            c.status = "overdue"
            c.save(only=[type(c).status])
            self._event(ctx, EventKind.CONSULTATION_OVERDUE, f"{c.department.name}: due {_date(c.due)}")
            view = {"department": c.department.name, "case": self._case_view(case),
                    "asked": _date(c.asked), "due": _date(c.due), "question": c.question}
            targets = [(c.department.address, True)]
            if case.assignee_id is not None:
                targets.append((case.assignee.address, False))
            for to, to_department in targets:
                out = self._render(ctx, "department", "overdue", {**view, "to_department": to_department})
                self._outgoing(ctx, kind=MessageKind.OVERDUE, from_=self._from_mailbox(ctx), to=[to],
                               subject=tokens.tagged_subject(
                                   case.number, f"Overdue: {c.department.name}, {case.subject}",
                                   self.settings.case_prefix),
                               body=out.text, html=out.html, in_reply_to=None, references=[],
                               headers=self._automatic_headers(ctx, "auto-generated"))
        self._schedule_consult_due(ctx)

    def _holddraft(self, a: d.HoldDraft, ctx: Context) -> None:
        """Keep the draft; the supervisor gets it as the customer would, with links."""
        case, store = self._case(ctx), self.store
        draft = store.hold_draft(case, csr=a.csr, supervisor=a.supervisor, commands=a.commands,
                                 text=a.text)
        csr = ctx.directory.csr(a.csr)
        name = csr.name if csr is not None else a.csr
        organization = self._organization(ctx)
        preview = self._render(ctx, "customer", str(a.kind), {
            **self._customer_context(case, ctx), "reply": a.text, "reply_html": "",
            "csr": {"name": name, "signature": csr.signature.strip() if csr else "",
                    "address": a.csr},
            "signoff": _signoff(name, csr.signature if csr else "", organization),
            **self._footer(a.csr, ctx)[0],
            "history": [], "history_omitted": 0,
            "links": self._customer_links(case, ctx, a.kind),
            **_own_salutation(a.text, name, csr.signature if csr else "", organization)}).text
        subject = tokens.tagged_subject(case.number, case.subject, self.settings.case_prefix, reply=True)
        out = self._render(ctx, "csr", "approval", {
            "csr": name, "draft": draft.id, "commands": a.commands, "preview": preview,
            "case": self._case_view(case),
            "approve": self._mailto(ctx, case, subject, f"#approve {draft.id}"),
            "reject": self._mailto(ctx, case, subject, f"#reject {draft.id}\n\n")})
        headers = self._automatic_headers(ctx, "auto-generated")
        self._outgoing(ctx, kind=MessageKind.APPROVAL,
                       from_=format_address(f"{name} via {organization}",
                                            tokens.plus_address(ctx.mailbox.address, case.number)),
                       to=[a.supervisor],
                       subject=tokens.tagged_subject(case.number, f"Approve? {case.subject}",
                                                     self.settings.case_prefix),
                       body=out.text, html=out.html, in_reply_to=None, references=[], headers=headers)

    def _decidedraft(self, a: d.DecideDraft, ctx: Context) -> None:
        self.store.decide_draft(a.draft, a.status, a.by)

    def _setanswers(self, a: d.SetAnswers, ctx: Context) -> None:
        case = self._case(ctx)
        self.store.touch(case, answers=json.dumps(dict(a.answers), ensure_ascii=False))
        self._event(ctx, EventKind.ANSWERED, ", ".join(f"{k}={v}" for k, v in a.answers))

    def _setrating(self, a: d.SetRating, ctx: Context) -> None:
        self.store.touch(self._case(ctx), rating=a.rating, rating_comment=a.comment)

    def _schedule(self, a: d.Schedule, ctx: Context) -> None:
        case = self._case(ctx)
        self.store.cancel_timers_later(case, [a.kind])
        self.store.schedule(case, a.kind, self.store.clock() + dt.timedelta(seconds=a.after))

    def _cancel(self, a: d.Cancel, ctx: Context) -> None:
        self.store.cancel_timers_later(self._case(ctx), list(a.kinds))

    def _blacklist(self, a: d.Blacklist, ctx: Context) -> None:
        case = self._case(ctx)
        self.store.add_blacklist(a.pattern, a.subject, reason=f"by {a.by} on {case.number}", by=a.by)
        self._event(ctx, EventKind.BLACKLISTED, a.pattern + (f" subject /{a.subject}/" if a.subject else ""),
                    a.by)
        log.info("%s blacklisted %s%s", a.by, a.pattern, " with the case's subject" if a.subject else "")

    def _record(self, a: d.Record, ctx: Context) -> None:
        self._event(ctx, a.kind, a.detail, a.actor)

    # -- mail ------------------------------------------------------------------------

    def _acknowledge(self, a: d.Acknowledge, ctx: Context) -> None:
        case = self._case(ctx)
        refused = self._automatic_refused(ctx, case.customer_address)
        if refused:
            self._event(ctx, EventKind.NO_ACK, refused)
            log.info("case %s: no acknowledgement: %s", case.number, refused)
            return
        inbound = ctx.inbound
        subject = inbound.subject if inbound is not None else case.subject
        refs = [*inbound.references, inbound.message_id] if inbound and inbound.message_id else []
        out = self._render(ctx, "customer", "ack", self._customer_context(case, ctx))
        self._outgoing(ctx, kind=MessageKind.ACK, from_=self._from_mailbox(ctx),
                       to=[case.customer_address],
                       subject=tokens.tagged_subject(case.number, subject, self.settings.case_prefix),
                       body=out.text, html=out.html, in_reply_to=inbound.message_id if inbound else None,
                       references=refs, headers=self._automatic_headers(ctx, "auto-replied"))
        self._event(ctx, EventKind.ACKNOWLEDGED, actor=case.customer_address)

    def _sendcustomer(self, a: d.SendCustomer, ctx: Context) -> None:
        case = self._case(ctx)
        refused = self._automatic_refused(ctx, case.customer_address)
        if refused:
            self._event(ctx, EventKind.NOT_SENT, f"{a.kind}: {refused}")
            log.info("case %s: no %s mail: %s", case.number, a.kind, refused)
            return
        context = self._customer_context(case, ctx)
        context["links"] = self._customer_links(case, ctx, a.kind)
        out = self._render(ctx, "customer", str(a.kind), context)
        msgs = self.store.messages(case)
        in_reply_to, thread = self._threading(msgs)
        self._outgoing(ctx, kind=a.kind, from_=self._from_mailbox(ctx), to=[case.customer_address],
                       subject=tokens.tagged_subject(case.number, case.subject,
                                                     self.settings.case_prefix, reply=True),
                       body=out.text, html=out.html, in_reply_to=in_reply_to, references=thread,
                       headers=self._automatic_headers(ctx, "auto-replied"))

    def _answercustomer(self, a: d.AnswerCustomer, ctx: Context) -> None:
        case = self._case(ctx)
        csr = ctx.directory.csr(a.csr)
        assert csr is not None, a.csr
        msgs = self.store.messages(case)
        organization = self._organization(ctx)
        context = self._customer_context(case, ctx)
        html_mail = not ctx.mailbox.pool.text_only
        own_html = self._csr_html(a, ctx) if html_mail else None
        footer, footer_images = self._footer(a.csr, ctx)
        context.update({
            "reply": a.text,
            "reply_html": Markup(own_html[0]) if own_html else "",
            "csr": {"name": csr.name, "signature": csr.signature.strip(), "address": csr.address},
            "signoff": _signoff(csr.name, csr.signature, organization),
            "links": self._customer_links(case, ctx, a.kind),
            **footer,
        })
        salutation = _own_salutation(a.text, csr.name, csr.signature, organization)
        context.update(salutation)
        if own_html and salutation:
            # The CSR's HTML keeps their own greeting and sign-off: the HTML
            # part adds neither ours nor theirs a second time.
            context["html_greeting"] = "" if "greeting" in salutation else context["greeting"]
            theirs = split_salutation(a.text).signoff
            context["html_signoff"] = (salutation["signoff"][len(theirs):].strip("\n")
                                       if "signoff" in salutation else context["signoff"])
        context["history"], context["history_omitted"] = self._history(
            case, msgs, ctx.directory, exclude=ctx.message, public_only=True,
            language=_language(ctx.mailbox))
        out = self._render(ctx, "customer", str(a.kind), context)
        inline = [*(own_html[1] if own_html else ()), *footer_images] if out.html is not None else []
        in_reply_to, thread = self._threading(msgs)
        parts = ctx.inbound.attachments if (a.with_files and ctx.inbound is not None) else ()
        shown = inline_digests(inline)
        parts = tuple(p for p in parts if p.sha256 not in shown)  # travels inline already
        files = [p for p, ok in zip(parts, _forwardable(parts), strict=True) if ok]
        self._outgoing(ctx, kind=a.kind,
                       from_=format_address(f"{csr.name} ({organization})", ctx.mailbox.address),
                       to=[case.customer_address],
                       subject=tokens.tagged_subject(case.number, case.subject,
                                                     self.settings.case_prefix, reply=True),
                       body=out.text, html=out.html, inline=inline, in_reply_to=in_reply_to,
                       references=thread,
                       files=[OutgoingFile(p.filename, p.content_type, p.data) for p in files],
                       cc=self._answer_cc(case, ctx))

    def _setaway(self, a: d.SetAway, ctx: Context) -> None:
        pools = self.store.set_away(a.csr, list(a.pools), away=True, until=a.until, deputy=a.deputy)
        detail = (f"away in {', '.join(pools)}" + (f" until {a.until.isoformat()}" if a.until else "")
                  + (f", deputy {a.deputy}" if a.deputy else ""))
        self._event(ctx, EventKind.AWAY, detail, a.csr)
        ctx.explain = f"{ctx.explain}; {a.csr} {detail}".strip("; ")

    def _setback(self, a: d.SetBack, ctx: Context) -> None:
        pools = self.store.set_away(a.csr, list(a.pools), away=False)
        self._event(ctx, EventKind.BACK, f"back in {', '.join(pools)}", a.csr)

    def _notify(self, a: d.Notify, ctx: Context) -> None:
        case = self._case(ctx)
        if a.to:
            csr = self.store.csr(a.to)
            if csr is None:
                return
        elif case.assignee_id is None:
            return
        else:
            csr = case.assignee
        msgs, files = self._case_thread(case, ctx)
        message = ctx.message
        about = message is not None and message.kind in (
            MessageKind.CUSTOMER, MessageKind.AUTOMATIC, MessageKind.BOUNCE, MessageKind.DEPARTMENT)
        parts = ctx.inbound.attachments if (about and ctx.inbound is not None) else ()
        fates = self._file_fates(parts, files, message)
        fits = [f.forward for f in fates]
        mine = [f.id for f in files if about and message is not None and f.message_id == message.id]
        attached = {fid for fid, ok in zip(mine, fits, strict=False) if ok}
        held = {fid: fate.reason for fid, fate in zip(mine, fates, strict=False) if not fate.forward}
        language = _language(ctx.mailbox)
        history, omitted = self._history(case, msgs, ctx.directory, exclude=message if about else None,
                                         public_only=False, notes=self._case_notes(case, ctx),
                                         language=language)
        text = (message.text or "").strip() if message is not None else ""
        if len(text) > defaults.MESSAGE_TEXT_CHARS:
            text = (text[: defaults.MESSAGE_TEXT_CHARS]
                    + f"\n[... {len(text) - defaults.MESSAGE_TEXT_CHARS} more characters: "
                    f"`casegate case show {case.number}`]")
        out = self._render(ctx, "csr", "notify", {
            "marker": REPLY_MARKER,
            "headline": translate(language, a.headline),
            "note": a.note,
            "case": self._case_view(case),
            "assignee": f"{csr.name} <{csr.address}>",
            "files": [{"id": f.id, "filename": f.filename, "content_type": f.content_type,
                       "size": f.size, "attached": f.id in attached, "inline": bool(f.inline),
                       "content_id": f.content_id or ""} for f in files],
            "message": {"author": self._author(case, message, {}, language),
                        "date": _date(message.created), "text": text or say(language, "(no text)")}
            if about and message is not None else None,
            "history": history,
            "history_omitted": omitted,
            "actions": self._actions(case, ctx),
            # issue 10: who else takes part, the product, files kept back
            "participants": self._participant_list(case, ctx.participants),
            "product": case.product or "",
            "files_held": [{"id": f.id, "filename": f.filename, "size": f.size,
                            "reason": held[f.id]} for f in files if f.id in held],
        })
        earlier = [m.message_id for m in msgs if m.direction == "out" and m.kind == MessageKind.NOTIFY]
        name = case.customer_name or case.customer_address or "unknown sender"
        headers = self._automatic_headers(ctx, "auto-generated")
        if ctx.explain:
            headers[RULES_HEADER] = " ".join(ctx.explain.split())[:900]
        files_out = [p for p, ok in zip(parts, fits, strict=True) if ok]
        self._outgoing(ctx, kind=MessageKind.NOTIFY,
                       from_=format_address(f"{name} via {self._organization(ctx)}",
                                            tokens.plus_address(ctx.mailbox.address, case.number)),
                       to=[csr.address],
                       subject=tokens.tagged_subject(case.number, case.subject, self.settings.case_prefix),
                       body=out.text, html=out.html, in_reply_to=earlier[-1] if earlier else None,
                       references=earlier,
                       headers=headers,
                       files=[OutgoingFile(p.filename, p.content_type, p.data) for p in files_out])

    def _file_fates(self, parts: Sequence[Any], files: Sequence[Any],
                    message: Message | None) -> list[Any]:
        """Which of the inbound message's files travel (the size limits of
        ``settings.files_*``); the others stay stored and are listed."""
        from rules.files import plan

        before = sum(f.size for f in files if message is None or f.message_id != message.id)
        return plan([(p.sha256, len(p.data)) for p in parts],
                    message_max=self.settings.files_message_max, case_used=before,
                    case_max=self.settings.files_case_max)

    def _refuseintake(self, a: d.RefuseIntake, ctx: Context) -> None:
        """The mailbox's intake policy opened no case (or a CSR refused a held
        one): a polite answer, under every guard of automatic mail."""
        address = a.to
        refused = ack_refusal(address, ctx.directory) or ctx.suppress
        if not refused and address.rpartition("@")[2].startswith("["):
            refused = "never to an address literal"
        if not refused:
            refused = (self._over_rate_cap(ctx.case, address, ctx) if ctx.case is not None
                       else self._over_recipient_cap(address))
        if refused:
            self._event(ctx, EventKind.NOT_SENT, f"{a.template}: {refused}")
            log.info("no %s mail to %s: %s", a.template, address, refused)
            return
        inbound = ctx.inbound
        case = ctx.case
        subject = (case.subject if case is not None else inbound.subject if inbound is not None
                   else "") or "(no subject)"
        info = ctx.directory.mailbox(ctx.mailbox.address)
        out = self._render(ctx, "customer", a.template, {
            "greeting": greeting_line(case.customer_name if case is not None
                                      else inbound.from_name if inbound is not None else "",
                                      _greeting(ctx.mailbox), _language(ctx.mailbox)),
            "organization": self._organization(ctx), "mailbox": ctx.mailbox.address,
            "subject_prefix": info.subject_prefix if info is not None else "",
            "subject": subject})
        by_mail = inbound is not None and case is None
        self._outgoing(ctx, kind=MessageKind.REFUSED, from_=self._from_mailbox(ctx), to=[address],
                       subject=f"Re: {subject}",
                       body=out.text, html=out.html,
                       in_reply_to=inbound.message_id if by_mail and inbound.message_id
                       else None,
                       references=[inbound.message_id] if by_mail and inbound.message_id else [],
                       headers=self._automatic_headers(ctx, "auto-replied"))

    def _over_recipient_cap(self, address: str) -> str | None:
        limits = self.store.limits()
        since = self.store.clock() - dt.timedelta(hours=limits["autoreply_window_hours"])
        key = rate_key(address)
        to_mailbox, to_domain = self.store.automatic_sent_to(since=since, recipient=key)
        if to_mailbox >= limits["autoreply_per_recipient"]:
            return f"rate cap: {limits['autoreply_per_recipient']} automatic mails to {key} already sent"
        if to_domain >= limits["autoreply_per_domain"]:
            return f"rate cap: {limits['autoreply_per_domain']} automatic mails to @{key.rpartition('@')[2]}"
        return None

    def _setproduct(self, a: d.SetProduct, ctx: Context) -> None:
        self.store.touch(self._case(ctx), product=a.product)
        self._event(ctx, EventKind.PRODUCT, f"{a.product}: {a.reason}" if a.reason else a.product)

    def _addparticipants(self, a: d.AddParticipants, ctx: Context) -> None:
        case = self._case(ctx)
        for address in a.addresses:
            self.store.add_participant(case, address, "cc")
        if ctx.participants is not None:
            ctx.participants |= set(a.addresses)
        detail = ", ".join(a.addresses) + "".join(f"; not {addr}: {why}" for addr, why in a.refused)
        self._event(ctx, EventKind.PARTICIPANTS, detail.strip("; "))

    def _answer_cc(self, case: Case, ctx: Context) -> list[str]:
        """The participants in Cc of a CSR's answer, when the pool says so
        (never our own addresses, should one have become a CSR since)."""
        info = ctx.directory.mailbox(ctx.mailbox.address)
        if info is not None and not info.pool.cc_participants:
            return []
        return [a for a in self._participant_list(case, ctx.participants)
                if not ctx.directory.is_ours(a)]

    def _participant_list(self, case: Case, ctx_participants: set[str] | None = None) -> list[str]:
        """The case's participants other than the customer (Cc's)."""
        if ctx_participants is not None:
            return sorted(a for a in ctx_participants if a != case.customer_address)
        return [p.address for p in case.participants.order_by(Participant.id)
                if p.address != case.customer_address]

    def _tellcsr(self, a: d.TellCsr, ctx: Context) -> None:
        case = ctx.case
        inbound = ctx.inbound
        out = self._render(ctx, "csr", "notice", {
            "text": a.text, "case": self._case_view(case) if case is not None else None})
        subject = a.subject
        if inbound is not None and inbound.subject:
            subject = f"{a.subject}: {tokens.clean_subject(inbound.subject, self.settings.case_prefix)}"
        if case is not None:
            subject = tokens.tagged_subject(case.number, subject, self.settings.case_prefix)
        headers = self._automatic_headers(ctx, "auto-replied")
        if ctx.explain:
            headers[RULES_HEADER] = " ".join(ctx.explain.split())[:900]
        self._outgoing(ctx, kind=MessageKind.CSR_NOTICE, from_=self._from_mailbox(ctx), to=[a.to],
                       subject=subject, body=out.text, html=out.html,
                       in_reply_to=inbound.message_id if inbound and inbound.message_id else None,
                       references=[inbound.message_id] if inbound and inbound.message_id else [],
                       headers=headers)

    # -- templates (issue 10) ---------------------------------------------------------

    def _render(self, ctx: Context, audience: str, name: str, context: dict[str, Any]) -> Rendered:
        """A template pair for this mailbox: its overrides, its pool's language,
        text only when the pool says so. The seed's tags (thread, files) are
        read from the store only when the templates use them."""
        pool = ctx.mailbox.pool
        if audience == "customer" and self.renderer.uses(
                audience, name, THREAD_VARIABLES, pool=pool.name, mailbox=ctx.mailbox.address,
                language=_language(ctx.mailbox)) and ctx.case is not None:
            context = {**context, **self._thread_context(ctx.case, ctx)}
        else:
            context = {**dict.fromkeys(THREAD_VARIABLES), **context}
        return self.renderer.render(audience, name, context, pool=pool.name,
                                    mailbox=ctx.mailbox.address, language=_language(ctx.mailbox),
                                    html=not pool.text_only)

    def _thread_context(self, case: Case, ctx: Context) -> dict[str, Any]:
        """The seed's tags: the case's files and its public thread, oldest first."""
        names = {address: c.name for address, c in ctx.directory.csrs.items()}
        thread = [{"date": _date(m.created), "author": self._author(case, m, names, _language(ctx.mailbox)),
                   "text": (m.text or "").strip(), "from_customer": m.kind == MessageKind.CUSTOMER}
                  for m in self.store.messages(case)
                  if m.direction == "in" and m.kind in (MessageKind.CUSTOMER, MessageKind.CSR)]
        files = [{"id": f.id, "filename": f.filename, "content_type": f.content_type, "size": f.size}
                 for f in self.store.attachments(case)]
        return {"filelist": files, "threadcount": len(thread), "threadlist": thread,
                "threadlast": thread[-1] if thread else None}

    def _csr_html(self, a: d.AnswerCustomer, ctx: Context) -> tuple[str, list[InlineImage]] | None:
        """The CSR's own HTML (their formatting, their pictures), when the
        answer comes from their message, not from the shell or a draft."""
        inbound = ctx.inbound
        if (inbound is None or not a.with_files  # an approved draft: not this message's words
                or base_address(inbound.from_address) != base_address(a.csr)):
            return None
        try:
            return csr_html(inbound.msg, a.text)
        except Exception:  # never lose an answer to its HTML: the text still goes
            log.exception("the HTML of %s's answer could not be used; sending the text", a.csr)
            return None

    def _footer(self, address: str, ctx: Context) -> tuple[dict[str, Any], list[InlineImage]]:
        """The CSR's footer for the templates, and its picture (inline)."""
        info = ctx.directory.csr(address)
        row = self.store.csr(address) if info is not None and info.footer else None
        if row is None or not (row.footer_html or "").strip():
            return {"footer_html": "", "footer_text": ""}, []
        image = bytes(row.footer_image) if row.footer_image else None
        html = footer_html(row.footer_html, image)
        images = [InlineImage(footer_cid(image), row.footer_image_type or "image/jpeg", image,
                              row.footer_image_name or "footer.jpg")] if image else []
        return {"footer_html": Markup(html), "footer_text": html_to_text(html).strip()}, images

    # -- pieces ----------------------------------------------------------------------

    def _case(self, ctx: Context) -> Case:
        assert ctx.case is not None, "an action on a case before the case exists"
        return ctx.case

    def _event(self, ctx: Context, kind: EventKind, detail: str = "", actor: str = "") -> None:
        if kind == EventKind.NOTE:  # kept in memory with its id (a new case's notes)
            ctx.notes.append(self.store.event(kind.value, case=ctx.case, message=ctx.message,
                                              actor=actor, detail=detail))
            return
        self.store.record_event(kind.value, case=ctx.case, message=ctx.message, actor=actor,
                                detail=detail)

    def _fresh(self, case: Case, ctx: Context) -> bool:
        return ctx.fresh is not None and case.id == ctx.fresh

    def _case_messages(self, case: Case, ctx: Context) -> list[Message]:
        """``store.messages(case)``; for a case this decision opened, from memory."""
        if not self._fresh(case, ctx):
            return self.store.messages(case)
        return sorted((m for m in (ctx.message, *ctx.sent) if m is not None and m.case_id == case.id),
                      key=lambda m: m.id)

    def _case_thread(self, case: Case, ctx: Context) -> tuple[list[Message], list[Any]]:
        """``_case_messages`` and ``_case_files``; from the store, the files
        are read only when a message has some (most cases have none)."""
        if self._fresh(case, ctx):
            return self._case_messages(case, ctx), self._case_files(case, ctx)
        return self.store.messages_and_files(case)

    def _case_files(self, case: Case, ctx: Context) -> list[Any]:
        """``store.attachments(case)``; for a case this decision opened, from memory."""
        if not self._fresh(case, ctx):
            return self.store.attachments(case)
        mine = {m.id for m in self._case_messages(case, ctx)}
        return sorted((f for f in ctx.files if f.message_id in mine), key=lambda f: f.id)

    def _case_notes(self, case: Case, ctx: Context) -> list[Event]:
        """``store.notes(case)``; for a case this decision opened, from memory."""
        if not self._fresh(case, ctx):
            return self.store.notes(case)
        return sorted((e for e in ctx.notes if e.case_id == case.id), key=lambda e: (e.at, e.id))

    def _organization(self, ctx: Context) -> str:
        return ctx.mailbox.display_name or self.settings.organization

    def _from_mailbox(self, ctx: Context) -> str:
        return format_address(self._organization(ctx), ctx.mailbox.address)

    def _automatic_refused(self, ctx: Context, address: str) -> str | None:
        """The last guard of automatic mail to a customer: who and how many."""
        refused = ack_refusal(address, ctx.directory)
        if refused:
            return refused
        if ctx.suppress:
            return ctx.suppress
        if address.rpartition("@")[2].startswith("["):
            # victim@[192.0.2.1]: one more spelling of any mailbox behind that
            # address (a key of its own for the caps), and no customer writes from one.
            return "never to an address literal"
        return self._over_rate_cap(self._case(ctx), address, ctx)

    def _over_rate_cap(self, case: Case, address: str, ctx: Context) -> str | None:
        limits = self.store.limits()
        since = self.store.clock() - dt.timedelta(hours=limits["autoreply_window_hours"])
        key = rate_key(address)
        to_mailbox, to_domain = self.store.automatic_sent_to(since=since, recipient=key)
        per_rcpt = limits["autoreply_per_recipient"]
        if to_mailbox >= per_rcpt:
            return f"rate cap: {per_rcpt} automatic mails to {key} already sent"
        per_domain = limits["autoreply_per_domain"]
        if to_domain >= per_domain:
            return f"rate cap: {per_domain} automatic mails to @{key.rpartition('@')[2]} already sent"
        per_case = limits["autoreply_per_case"]
        if self._automatic_sent(case, since, ctx) >= per_case:
            return f"rate cap: {per_case} automatic mails on {case.number} already sent"
        return None

    def _automatic_sent(self, case: Case, since: dt.datetime, ctx: Context) -> int:
        """``store.automatic_sent``; for a case this decision opened, from
        memory (it holds only the mail this decision wrote)."""
        if not self._fresh(case, ctx):
            return self.store.automatic_sent(since=since, case=case)
        return sum(1 for m in ctx.sent if m.case_id == case.id and m.direction == "out"
                   and m.kind in AUTOMATIC_KINDS and (aware(m.created) or since) >= since)

    def _automatic_headers(self, ctx: Context, auto_submitted: str) -> dict[str, str]:
        """What marks our automatic mail; a CSR's answer carries none of it."""
        return {
            "Auto-Submitted": auto_submitted,
            "X-Auto-Response-Suppress": "All",
            "Precedence": "auto_reply",
            LOOP_HEADER: make_loop_header(self.settings.secret, ctx.hops + 1),
        }

    def _case_view(self, case: Case) -> dict[str, Any]:
        """``case_dict`` with what templates print: dates for people."""
        return {**case_dict(case), "customer_address": case.customer_address,
                "created": _date(case.created)}

    def _customer_context(self, case: Case, ctx: Context) -> dict[str, Any]:
        pool, mailbox = ctx.mailbox.pool, ctx.mailbox
        return {"greeting": greeting_line(case.customer_name, _greeting(mailbox), _language(mailbox)),
                "case": self._case_view(case),
                "organization": self._organization(ctx), "links": {},
                "customer": {"address": case.customer_address, "name": case.customer_name,
                             "first_name": first_name(case.customer_name)},
                "pool": {"name": pool.name, "language": _language(mailbox)},
                "mailbox": {"address": mailbox.address, "display_name": mailbox.display_name}}

    def _mailto(self, ctx: Context, case: Case, subject: str, body: str) -> str:
        to = tokens.plus_address(ctx.mailbox.address, case.number)
        return f"mailto:{to}?subject={quote(subject)}&body={quote(body)}"

    def _customer_links(self, case: Case, ctx: Context, kind: MessageKind) -> dict[str, Any]:
        subject = tokens.tagged_subject(case.number, case.subject, self.settings.case_prefix, reply=True)
        if kind is MessageKind.SOLUTION:
            return {"accept": self._mailto(ctx, case, subject, "Accept"),
                    "reject": self._mailto(ctx, case, subject, "Reject")}
        if kind is MessageKind.SURVEY:
            return {"grades": [{"grade": g, "url": self._mailto(ctx, case, subject, str(g))}
                               for g in range(5, 0, -1)]}
        return {}

    def _actions(self, case: Case, ctx: Context) -> list[dict[str, str]]:
        """One-click mailto links for the notification: each a command, pre-filled.
        They carry nothing secret: only a proven CSR's mail is obeyed. The
        labels in the mailbox's language (smtpd_hook/i18n.py)."""
        subject = tokens.tagged_subject(case.number, case.subject, self.settings.case_prefix, reply=True)
        lang = _language(ctx.mailbox)
        links: list[tuple[str, str]] = []
        if case.status == Status.CLOSED:
            links.append((say(lang, "Reopen"), "#reopen"))
        else:
            info = ctx.directory.mailbox(ctx.mailbox.address)
            questions = info.pool.questions if info is not None else ()
            close = "#close" + "".join(f" {q.name}={q.choices[0] if q.choices else '...'}"
                                       for q in questions if q.required)
            links += [(say(lang, "Close (text below goes to the customer first)")
                       + (say(lang, "; answer {questions}",
                              questions=", ".join(q.allowed() for q in questions)) if questions else ""),
                       close + "\n\n"),
                      (say(lang, "Propose a solution"), "#solution\n\n"),
                      (say(lang, "Add an internal note"), "#note\n\n"),
                      (say(lang, "Take it (for a colleague this is forwarded to)"), "#take"),
                      (say(lang, "Set a status"), "#status in_progress")]
            pool = ctx.mailbox.pool.name
            for csr in sorted(ctx.directory.pool_members(pool), key=lambda c: (c.level(pool), c.name)):
                if case.assignee_id is not None and csr.address == case.assignee.address:
                    continue
                state = say(lang, "away" if csr.is_away(pool) else "available")
                label, command = (("Escalate to {csr} (level {level}, {state})", "#escalate")
                                  if csr.level(pool) > 1 else
                                  ("Assign to {csr} (level {level}, {state})", "#assign"))
                links.append((say(lang, label, csr=f"{csr.name} <{csr.address}>", level=csr.level(pool),
                                  state=state), f"{command} {csr.address}\n\n"))
            if ctx.directory.pool_members(pool, level=2):
                links.append((say(lang, "Escalate to the second level"), "#escalate\n\n"))
        customer = case.customer_address
        local, at, _ = customer.rpartition("@")
        if at and local and not ctx.directory.is_ours(customer):
            links += [(say(lang, "Blacklist {address}", address=customer), "#blacklist"),
                      (say(lang, "Blacklist {address} for this subject only", address=customer),
                       "#blacklist-subject")]
        return [{"label": label, "url": self._mailto(ctx, case, subject, body)} for label, body in links]

    def _history(self, case: Case, msgs: Sequence[Message], directory: Directory, *,
                 exclude: Message | None, public_only: bool,
                 notes: Sequence[Event] | None = None,
                 language: str = "en") -> tuple[list[dict[str, str]], int]:
        """Earlier messages, newest first: for the customer what they and we
        said; for CSRs automatic mail and internal notes too."""
        kinds = {MessageKind.CUSTOMER, MessageKind.CSR} if public_only else {
            MessageKind.CUSTOMER, MessageKind.CSR, MessageKind.AUTOMATIC, MessageKind.BOUNCE,
            MessageKind.RATING, MessageKind.DEPARTMENT}
        names = {address: csr.name for address, csr in directory.csrs.items()}
        items: list[tuple[dt.datetime, int, dict[str, str]]] = []
        for m in msgs:
            if (exclude is not None and m.id == exclude.id) or m.direction != "in" or m.kind not in kinds:
                continue
            items.append((aware(m.created) or dt.datetime.min.replace(tzinfo=dt.UTC), m.id, {
                "date": _date(m.created), "author": self._author(case, m, names, language),
                "text": (m.text or "").strip() or say(language, "(no text)")}))
        if not public_only:
            for e in (self.store.notes(case) if notes is None else notes):
                items.append((aware(e.at) or dt.datetime.min.replace(tzinfo=dt.UTC), 0, {
                    "date": _date(e.at), "author": say(language, "Internal note by {actor}",
                                                       actor=e.actor or "admin"),
                    "text": e.detail.strip()}))
        items.sort(key=lambda item: (item[0], item[1]), reverse=True)
        # Bounded by count and size: 30 appended 1 MB messages must not make
        # every notification 30 MB (the case holds them all).
        shown: list[dict[str, str]] = []
        budget = defaults.HISTORY_MAX_CHARS
        for _, _, item in items[: self.settings.history_limit]:
            text = item["text"]
            if len(text) > defaults.HISTORY_ITEM_CHARS:
                text = text[: defaults.HISTORY_ITEM_CHARS] + "\n[...]"
            if len(text) > budget:
                break
            budget -= len(text)
            shown.append({**item, "text": text})
        return shown, len(items) - len(shown)

    def _author(self, case: Case, m: Message | None, csr_names: dict[str, str],
                language: str = "en") -> str:
        if m is None:
            return ""
        if m.kind == MessageKind.CSR:
            return csr_names.get(m.sender, m.sender)
        if m.kind == MessageKind.DEPARTMENT:
            return say(language, "{sender} (department, internal)", sender=m.sender)
        if m.sender == case.customer_address and case.customer_name:
            return f"{case.customer_name} <{m.sender}>"
        return m.sender or "unknown"

    def _threading(self, msgs: Sequence[Message]) -> tuple[str | None, list[str]]:
        """In-Reply-To and References that keep our mail in the customer's thread."""
        thread = [m.message_id for m in msgs if m.message_id and (
            (m.direction == "in" and m.kind == MessageKind.CUSTOMER)
            or (m.direction == "out" and m.kind in CUSTOMER_THREAD_OUT))]
        customer = [m.message_id for m in msgs
                    if m.direction == "in" and m.kind == MessageKind.CUSTOMER and m.message_id]
        in_reply_to = customer[-1] if customer else (thread[-1] if thread else None)
        return in_reply_to, thread

    def _outgoing(self, ctx: Context, *, kind: MessageKind, from_: str, to: Sequence[str], subject: str,
                  body: str, in_reply_to: str | None, references: Sequence[str],
                  headers: dict[str, str] | None = None, files: Sequence[OutgoingFile] = (),
                  cc: Sequence[str] = (), html: str | None = None,
                  inline: Sequence[InlineImage] = ()) -> Message:
        case, mailbox = ctx.case, ctx.mailbox
        domain = mailbox.address.partition("@")[2]
        if case is not None:
            message_id = tokens.make_message_id(self.settings.secret, case.number, domain)
            reply_to = tokens.plus_address(mailbox.address, case.number)
        else:
            message_id = email.utils.make_msgid(domain=domain)
            reply_to = mailbox.address
        raw = build_message(from_=from_, to=list(to), subject=subject, body=body,
                            message_id=message_id, date=self.store.clock(), reply_to=reply_to,
                            in_reply_to=in_reply_to, references=references, headers=headers,
                            files=files, cc=cc, html=html, inline=inline)
        if self.sign is not None:
            raw = self.sign(raw)
        qid = current_queue_id.get()
        message = self.store.add_message(
            case=case, direction="out", kind=kind.value, sender=mailbox.address,
            recipients=",".join([*to, *cc]), message_id=message_id, in_reply_to=in_reply_to or "",
            subject=subject, text=body, raw=raw, queue_id=qid if qid != "-" else "",
            rcpt_key=rate_key(to[0])[:320] if to else "",
            rcpt_domain=rate_key(to[0]).rpartition("@")[2][:255] if to else "")
        if case is not None and kind in (MessageKind.REPLY, MessageKind.SOLUTION):
            self.store.note_first_answer(case, message)  # the report's time to first answer
        # VERP: a bounce of this message names its case and the message exactly.
        envelope = (verp_address(self.settings.secret, mailbox.address, case.number, message.id)
                    if case is not None else mailbox.address)
        self.store.enqueue(message, mail_from=envelope, rcpt_to=[*to, *cc])
        ctx.sent.append(message)
        return message


def _pool_rule(pool: Any) -> AssignRule:
    try:
        return AssignRule.parse(pool.rule)
    except ValueError:
        log.warning("pool %s: unknown assignment rule %r, using least_load", pool.name, pool.rule)
        return AssignRule()


# Between a new case's OpenCase and its Assign: actions that change nothing
# the choice reads (candidates, their loads, the pool's last assignee).
_NEUTRAL_BEFORE_ASSIGN = (d.StoreMessage, d.SetProduct)


def _assign_ahead(following: Sequence[d.Action], ctx: Context) -> d.Assign | None:
    """The Assign of a case being opened whose CSR can be chosen before the
    case's INSERT: the first action after the OpenCase but those of
    _NEUTRAL_BEFORE_ASSIGN, and not by the random rule (seeded by the case's
    number, which the INSERT makes)."""
    for action in following:
        if isinstance(action, d.Assign):
            try:
                random_rule = AssignRule.parse(ctx.mailbox.pool.rule).name == "random"
            except ValueError:  # least_load (_pool_rule says so once, when choosing)
                random_rule = False
            return None if action.csr is None and random_rule else action
        if not isinstance(action, _NEUTRAL_BEFORE_ASSIGN):
            return None
    return None


# Providers known to ignore dots in the local part (j.o.h.n@ is john@) and
# to share one mailbox across these domains.
_DOTLESS_DOMAINS = {"gmail.com": "gmail.com", "googlemail.com": "gmail.com"}
_QUOTED_PAIR = re.compile(r"\\(.)")


def rate_key(address: str) -> str:
    """The mailbox an address reaches, as the rate caps count it: every
    spelling a forger can vary that still lands in the same mailbox is one
    key. ``base_address`` (plus-tag and case) and, on top of it: a quoted
    local part (``"victim"@``, ``"victim+x"@``), trailing dots of the domain
    (``victim.test.``, which Postfix strips), the dots of a Gmail local part.
    Merging more than a provider does only makes the caps stricter."""
    local, at, domain = (address or "").strip().rpartition("@")
    if not at:
        return base_address(address)
    if len(local) >= 2 and local.startswith('"') and local.endswith('"'):
        local = _QUOTED_PAIR.sub(r"\1", local[1:-1])
    local, _, domain = base_address(f"{local}@{domain.rstrip('.')}").rpartition("@")
    if domain in _DOTLESS_DOMAINS:
        local, domain = local.replace(".", ""), _DOTLESS_DOMAINS[domain]
    return f"{local}@{domain}"


def _forwardable(parts: Sequence[Any]) -> list[bool]:
    """Which files travel with a mail: each file once, within the size budget
    (a larger one stays stored and is listed, not attached)."""
    seen: set[str] = set()
    budget = defaults.FORWARD_FILES_BYTES
    fits = []
    for part in parts:
        ok = part.sha256 not in seen and len(part.data) <= budget
        if ok:
            seen.add(part.sha256)
            budget -= len(part.data)
        fits.append(ok)
    return fits


def _signoff(name: str, signature: str, organization: str) -> str:
    """Name, signature and organisation, without saying anything twice."""
    lines = [name] if name not in signature else []
    lines += [line.rstrip() for line in signature.strip().splitlines()]
    if organization and organization not in signature:
        lines.append(organization)
    return "\n".join(lines)


def _own_salutation(text: str, name: str, signature: str, organization: str) -> dict[str, Any]:
    """The CSR's own greeting and sign-off replace ours, never both (docs/cases.md).
    ``own_signoff``: their words end with their sign-off, so the answer
    templates keep the sign-off right under them (a solution's question
    follows it), in the text part as in their HTML."""
    out: dict[str, Any] = own_salutation(text, name, _signoff(name, signature, organization))
    if "signoff" in out:
        out["own_signoff"] = True
    return out


def _language(mailbox: Mailbox) -> str:
    """The language of a mailbox's built-in templates: its own, else its pool's."""
    return mailbox.language or mailbox.pool.language or "en"


def _greeting(mailbox: Mailbox) -> str:
    """A mailbox's greeting line template ("": its language's): its own, else
    its pool's, unless the mailbox speaks another language than its pool."""
    if mailbox.greeting is not None:
        return mailbox.greeting
    if mailbox.language and mailbox.language != (mailbox.pool.language or "en"):
        return ""
    return mailbox.pool.greeting


def _date(value: Any) -> str:
    when = aware(value)
    return when.strftime("%Y-%m-%d %H:%M UTC") if when else ""
