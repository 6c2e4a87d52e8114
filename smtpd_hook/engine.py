"""The engine: one function per event, each deciding with ``rules`` and
applying the decision with the executor in one transaction.

* :meth:`Engine.process` — a delivery from Postfix (the SMTP hook runs it in
  a thread); 250 only once everything it causes is committed, else 451.
* :meth:`Engine.command` — a CSR's or an admin's commands from the shell;
  the very rules a CSR's ``#close`` by mail runs.
* :meth:`Engine.open_case` — a proactive case from the shell (``#new`` by mail).
* :meth:`Engine.run_due_timers` — the scheduler's tick.

The facts a message needs (the directory, the case, its participants) are
loaded once; parsing happens before the write transaction. A delivery seen
before (same envelope and bytes) changes nothing.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from casestore import quarantine
from casestore.models import Case, Mailbox, Message
from casestore.store import Store, StoreDataError, StoreError, StoreUnavailable, pool_info
from rules import commands as cmd
from rules import defaults, life, replies, tokens
from rules.automatic import suppresses_autoreply
from rules.blacklist import Blacklist, Entry
from rules.classify import Identity, Role, classify
from rules.decision import (
    Decision,
    Directory,
    DraftInfo,
    Hit,
    MailboxInfo,
    StoreMessage,
    base_address,
)
from rules.inbound import Inbound, parse, raw_header
from rules.loop import detect, hops_of, read_verp
from rules.match import Match, match_case
from rules.quotes import body_text, extract_reply
from rules.replies import Reply
from rules.stamp import STAMP_HEADER, Stamp, verify_stamp
from rules.vocab import MessageKind, Outcome, Status, TimerKind
from smtpd_hook.delivery import Delivery
from smtpd_hook.dkim import aligned_pass
from smtpd_hook.executor import Context, Executor
from smtpd_hook.render import Renderer
from smtpd_hook.settings import Settings

log = logging.getLogger("casegate.filter")


@dataclass(frozen=True)
class Texts:
    """A message's readable text, read once, before the transaction."""

    body: str  # the whole text (history included): what is stored
    reply: str  # a CSR's new text, quotes stripped
    # A customer's text without the history it quotes (signature kept): what
    # is stored, shown to CSRs and in the case history when the message joins
    # an existing case, whose history holds the quoted messages already.
    shown: str = ""


class Misrouted(Exception):
    """Postfix sent us mail for an address we do not supervise."""


@dataclass(frozen=True)
class Result:
    """What a shell command did: the outcome, the case, and why not, if not."""

    outcome: Outcome
    number: str | None = None
    errors: tuple[str, ...] = ()
    hits: tuple[Hit, ...] = ()
    sent: tuple[str, ...] = field(default=())  # kinds of the mail it caused

    @property
    def ok(self) -> bool:
        return not self.errors


def _delivered_case(seen: object) -> str | None:
    """The case number a recorded delivery stored its message on, if any."""
    message = getattr(seen, "message", None)
    case = getattr(message, "case", None) if message is not None else None
    return getattr(case, "number", None) if case is not None else None


class Engine:
    def __init__(self, store: Store, settings: Settings, renderer: Renderer | None = None,
                 *, sign: Callable[[bytes], bytes] | None = None) -> None:
        self.store = store
        self.settings = settings
        self.renderer = renderer or Renderer(settings.templates_dir)
        self.executor = Executor(store, settings, self.renderer, sign)
        self._lock = threading.Lock()
        self._cached_blacklist: tuple[float, Blacklist] | None = None
        self._failing: set[str] = set()  # keys of deliveries that failed in this process
        self._cached_directory: tuple[float, int, tuple[Directory, dict[str, Mailbox]]] | None = None

    # -- SIGHUP ---------------------------------------------------------------------

    def reload(self, settings: Settings | None = None) -> None:
        """Re-read what an admin edits without a restart (``casegate serve``
        on SIGHUP): new settings, the templates read again, the blacklist and
        the directory cache dropped so that the next message reads them.
        A message being processed finishes with what it started with."""
        if settings is not None:
            old = self.settings
            if settings.templates_dir != old.templates_dir:
                self.renderer = type(self.renderer)(settings.templates_dir)
                self.executor.renderer = self.renderer
            self.settings = settings
            self.executor.settings = settings
        hook = getattr(self.renderer, "reload", None)
        if callable(hook):  # the renderer's own, when it has one
            hook()
        else:  # a renderer without reload(): drop its compiled templates
            cache = getattr(getattr(self.renderer, "env", None), "cache", None)
            if cache is not None:
                cache.clear()
        with self._lock:
            self._cached_blacklist = None
            self._cached_directory = None

    # -- a delivery from Postfix ----------------------------------------------------

    def process(self, delivery: Delivery) -> Reply:
        """Store what the delivery causes; 250 only once committed, else 451."""
        outcome = replies.OK
        inbound: Inbound | None = None
        for rcpt in delivery.rcpt_tos:
            try:
                if inbound is None:
                    inbound = parse(delivery.data)  # before any transaction: it may be slow
                result = self._process_one(delivery, rcpt, inbound)
            except StoreUnavailable as exc:
                log.warning("store unavailable, deferring: %s", exc)
                return replies.TEMPFAIL.because("case store unavailable, try again later")
            except Misrouted as exc:
                log.error("%s", exc)
                return replies.TEMPFAIL.because(str(exc))
            except StoreDataError as exc:
                # The same data fails the same way on every try: no 451 for
                # ever. A broken constraint may be a race with another host
                # storing this very delivery: one more try finds it a duplicate.
                if exc.integrity:
                    try:
                        result = self._process_one(delivery, rcpt, inbound or parse(delivery.data))
                    except Exception as again:
                        return self._failed(delivery, rcpt, again, hold_after=1)
                else:
                    return self._failed(delivery, rcpt, exc, hold_after=1)
            except Exception as exc:
                return self._failed(delivery, rcpt, exc)
            if replies.is_stored(outcome) and outcome != result:
                # keep the first non-plain outcome (duplicate, discarded), and
                # the first case number otherwise
                if outcome == replies.OK or not replies.is_stored(result):
                    outcome = result
        return outcome

    def _failed(self, delivery: Delivery, rcpt: str, exc: Exception,
                hold_after: int = defaults.QUARANTINE_AFTER) -> Reply:
        """A bug this message triggers: 451 so Postfix retries, and after
        QUARANTINE_AFTER attempts keep it whole in the quarantine and answer
        250, so it is neither retried for ever nor bounced."""
        log.exception("processing failed: %s", exc)
        key = delivery.key(base_address(rcpt))
        try:
            row = quarantine.record_failure(
                self.store, key=key, queue_id=delivery.queue_id, mail_from=delivery.mail_from,
                rcpt_to=list(delivery.rcpt_tos), client_addr=delivery.client_addr, raw=delivery.data,
                error=f"{type(exc).__name__}: {exc}", hold_after=hold_after)
        except Exception as store_exc:
            log.warning("could not record the failure (%s): deferring", store_exc)
            return replies.TEMPFAIL.because("Temporary failure in casegate, try again later")
        with self._lock:
            self._failing.add(key)
        if row.status == "held":
            log.error("held in the quarantine after %d attempts: `casegate quarantine show %d`",
                      row.attempts, row.id)
            return replies.OK_QUARANTINED
        log.warning("attempt %d of %d failed; deferring", row.attempts, hold_after)
        return replies.TEMPFAIL.because("Temporary failure in casegate, try again later")

    def _process_one(self, delivery: Delivery, rcpt: str, inbound: Inbound) -> Reply:
        # support@ and support+CS0000123@ in one message are one delivery.
        key = delivery.key(base_address(rcpt))
        store = self.store
        directory, mailboxes = self._directory()
        mailbox = mailboxes.get(base_address(rcpt))
        if mailbox is None:  # perhaps added since the directory was read
            directory, mailboxes = self._directory(fresh=True)
            mailbox = mailboxes.get(base_address(rcpt))
        if mailbox is None:
            raise Misrouted(
                f"{rcpt} is not a supervised address: add it with `casegate mailbox add` "
                "or remove it from Postfix's transport map"
            )
        identity = self._identify(delivery, inbound, directory)
        listed = self._blacklisted(delivery, inbound)
        # The costly reading of the text, before the write transaction holds
        # SQLite's lock (a 9 MB header storm held it for a minute).
        staff = identity.role in (Role.CSR, Role.DEPARTMENT)
        texts = Texts(body="" if staff else body_text(inbound.msg),
                      reply=extract_reply(inbound.msg) if staff else "",
                      shown=extract_reply(inbound.msg, keep_signature=True)
                      if identity.role is Role.CUSTOMER else "")
        with store.atomic():
            seen = store.delivery_seen(key)
            if seen is not None:
                number = _delivered_case(seen)
                log.info("duplicate delivery to %s of %s (first seen as %s): nothing to do",
                         rcpt, number or "no case", seen.queue_id or "?")
                return replies.duplicate(number)
            if listed is not None:
                # Should the milter be down or bypassed: discard, never store
                # or answer, never a 5xx after the queue.
                store.record_delivery(key, queue_id=delivery.queue_id,
                                      outcome=Outcome.DISCARDED_BLACKLIST, message=None)
                log.info("discarded: sender %s is blacklisted (%s%s)", inbound.from_address
                         or delivery.mail_from, listed.pattern,
                         f", subject /{listed.subject}/" if listed.subject else "")
                return replies.OK_DISCARDED
            ctx = Context(mailbox=mailbox, directory=directory, delivery=delivery, inbound=inbound,
                          identity=identity, hops=hops_of(inbound.msg, self.settings.secret))
            decision = self._decide(delivery, rcpt, inbound, identity, ctx, mailboxes, texts)
            self.executor.apply(decision, ctx)
            store.record_delivery(key, queue_id=delivery.queue_id, outcome=decision.outcome,
                                  message=ctx.message)
        if self._failing and key in self._failing:  # it failed before: nothing to keep now
            with self._lock:
                self._failing.discard(key)
            quarantine.forget(store, key)
        if inbound.defects:
            log.info("message defects: %s", ", ".join(inbound.defects[:10]))
        log.info("stored %s %s: from=<%s> role=%s; %s", ctx.case.number if ctx.case else "-",
                 decision.outcome, inbound.from_address, identity.role, decision.explain())
        return replies.stored(ctx.case.number if ctx.case else None)

    def _decide(self, delivery: Delivery, rcpt: str, inbound: Inbound, identity: Identity,
                ctx: Context, mailboxes: dict[str, Mailbox], texts: Texts) -> Decision:
        directory = ctx.directory
        verp = read_verp(self.settings.secret, rcpt, self.settings.case_prefix)
        if verp is not None:
            return self._bounce(inbound, verp.number, verp.message_id, ctx, mailboxes, texts)
        match, cases = self._match(rcpt, inbound, identity, mailboxes)
        case = None
        if match.number:  # read with the match's facts, else (not among them) now
            case = (cases[match.number][0] if match.number in cases
                    else self.store.load_case(Case.number == match.number, mailboxes))
        if case is not None:
            ctx.case = case
            ctx.mailbox = case.mailbox
        state = self.store.case_state(case, participants=match.participants) if case else None
        if state is not None:
            ctx.participants = set(state.participants)
        info = directory.mailbox(ctx.mailbox.address)
        assert info is not None
        hits = (Hit(identity.rule, identity.reason),)
        if identity.role is Role.CSR:
            csr = directory.csr(inbound.from_address)
            assert csr is not None
            text = texts.reply
            parsed = cmd.parse(text)
            facts = cmd.CommandFacts(
                actor=cmd.Actor(csr.address, csr), case=state, pool=info.pool, directory=directory,
                subject=inbound.subject, has_files=bool(inbound.attachments),
                waiting=self._waiting(csr.address, parsed.commands), now=self.store.clock(),
                drafts=self._drafts(case, parsed.commands), mailbox=info.address)
            keep = StoreMessage(MessageKind.COMMAND if parsed.commands else MessageKind.CSR,
                                text if parsed.commands else parsed.text)
            if inbound.opaque:
                why = "; ".join(d for d in inbound.defects if d.startswith("opaque")) or "opaque"
                decision = cmd.unreadable(facts, why, store=StoreMessage(MessageKind.COMMAND, ""))
            elif parsed.commands:
                decision = cmd.decide(parsed.commands, parsed.text, facts, store=keep)
            elif state is None:
                decision = cmd.no_case(facts, store=keep)
            else:
                decision = cmd.csr_reply(parsed.text, bool(inbound.attachments), facts, store=keep)
        elif identity.role is Role.DEPARTMENT:
            dept = directory.department_at(inbound.from_address)
            assert dept is not None
            others = [c for c in self.store.consultations(case) if c.status in ("open", "overdue")
                      and c.department.name != dept.name] if case is not None else []
            decision = life.on_department(life.DepartmentFacts(
                department=dept, case=state, text=texts.reply, other_open=len(others)))
        elif identity.role is Role.AUTOMATIC:
            decision = life.on_automatic(life.AutomaticFacts(
                mailbox=info, case=state, rule=identity.rule, reason=identity.reason,
                is_bounce=identity.proof == "bounce", sender=inbound.from_address or
                delivery.mail_from.lower(), sender_name=inbound.from_name,
                subject=inbound.subject, text=texts.body))
        else:
            ctx.suppress = suppresses_autoreply(inbound.msg)
            decision = life.on_customer(life.CustomerFacts(
                mailbox=info, directory=directory, case=state, match=match,
                # No From: address: the envelope sender, else nobody to answer.
                sender=inbound.from_address or delivery.mail_from.lower(),
                sender_name=inbound.from_name, subject=inbound.subject,
                cc=tuple(a for _, a in inbound.cc),
                text=texts.shown if state is not None and texts.shown.strip() else texts.body,
                # The first line means something (Accept, a rating) only here.
                reply_text=extract_reply(inbound.msg) if state is not None and state.status in (
                    Status.CLOSED, Status.SOLUTION_PROPOSED) else "",
                no_ack_reason=ctx.suppress, now=self.store.clock(),
                answers_survey=state is not None and bool(
                    state.survey_ids & {*inbound.in_reply_to, *inbound.references}),
                # ... from someone who takes no part in its case (a responder).
                answers_our_mail=match.signed and match.number is None,
                known_customer=self._known_customer(info, ctx, state, inbound, delivery)))
        return Decision(decision.outcome, decision.actions, hits + decision.hits, decision.errors)

    def _known_customer(self, info: MailboxInfo, ctx: Context, state: object, inbound: Inbound,
                        delivery: Delivery) -> bool:
        """Read only when it matters: a new case where the mailbox's intake
        policy is not ``open`` (issue 10)."""
        if state is not None or info.unknown_policy == "open":
            return True
        return self.store.known_customer(ctx.mailbox, inbound.from_address or delivery.mail_from.lower())

    def _bounce(self, inbound: Inbound, number: str, message_id: int, ctx: Context,
                mailboxes: dict[str, Mailbox], texts: Texts) -> Decision:
        case = self.store.load_case(Case.number == number, mailboxes)
        ctx.case = case
        if case is not None:
            ctx.mailbox = case.mailbox
        failed = Message.get_or_none((Message.id == message_id) & (Message.case == case))
        detail = (f"{failed.kind} to {failed.recipients} ({failed.message_id}) bounced"
                  if failed is not None else f"message {message_id} bounced")
        status = _dsn_status(inbound)
        log.info("bounce for %s on %s: %s", message_id, number, status or "no status")
        ctx.identity = Identity(Role.AUTOMATIC, "verp_bounce", "bounce to our VERP address",
                                proof="bounce")
        return life.on_bounce(case is not None, f"{detail}{': ' + status if status else ''}",
                              inbound.from_address, texts.body)

    # -- who wrote, which case ---------------------------------------------------------

    def _directory(self, *, fresh: bool = False) -> tuple[Directory, dict[str, Mailbox]]:
        """Mailboxes, pools and CSRs, re-read at most every DIRECTORY_TTL
        seconds (at once after this process changed them): reading them for
        every message cost more than a millisecond."""
        now = time.monotonic()
        generation = self.store.directory_generation
        with self._lock:
            cached = self._cached_directory
            if (not fresh and cached is not None and now - cached[0] < defaults.DIRECTORY_TTL
                    and cached[1] == generation):
                return cached[2]
        with self.store.guard():
            loaded = self.store.load_directory()
        with self._lock:
            self._cached_directory = (now, generation, loaded)
        return loaded

    def _blacklist(self) -> Blacklist:
        """The blacklist, compiled, re-read at most every BLACKLIST_TTL seconds."""
        now = time.monotonic()
        with self._lock:
            cached = self._cached_blacklist
            if cached is not None and now - cached[0] < defaults.BLACKLIST_TTL:
                return cached[1]
        entries = [Entry(e.pattern, e.subject, e.reason) for e in self.store.blacklist()]
        blacklist = Blacklist(entries, strict=False)
        with self._lock:
            self._cached_blacklist = (now, blacklist)
        return blacklist

    def _blacklisted(self, delivery: Delivery, inbound: Inbound) -> Entry | None:
        """The milter's verdict, by the same function (should it be down or bypassed)."""
        return self._blacklist().verdict([delivery.mail_from, inbound.from_address],
                                         raw_header(inbound.msg, "Subject"))

    def _stamp(self, delivery: Delivery, inbound: Inbound) -> Stamp | None:
        """The milter's stamp of this very message (signed, and naming its queue ID)."""
        try:
            values = [str(v) for v in inbound.msg.get_all(STAMP_HEADER, [])]
        except Exception:
            return None
        for value in values:
            stamp = verify_stamp(value, secret=self.settings.secret, max_age=defaults.STAMP_MAX_AGE,
                                 now=int(time.time()))
            if stamp is None:
                log.warning("ignoring an %s header that does not verify", STAMP_HEADER)
                continue
            if not delivery.queue_id or stamp.queue_id != delivery.queue_id:
                log.warning("ignoring an %s stamp of another message (%s)", STAMP_HEADER,
                            stamp.queue_id or "no queue ID")
                continue
            return stamp
        return None

    def _identify(self, delivery: Delivery, inbound: Inbound, directory: Directory) -> Identity:
        s = self.settings
        verdict = detect(inbound.msg, delivery.mail_from, secret=s.secret, prefix=s.case_prefix)
        if verdict is not None:
            return Identity(Role.AUTOMATIC, verdict.rule, verdict.reason, proof=verdict.kind)
        csr = directory.csr(inbound.from_address) if inbound.from_address else None
        stamp = self._stamp(delivery, inbound)
        login = stamp.authen if stamp is not None and stamp.authen else None
        # The client address: the milter's signed word for it when there is a
        # stamp; XFORWARD's only when the milter is not in use (any local
        # process may speak XFORWARD to the filter's port).
        if stamp is not None:
            client_addr = stamp.client_addr
        elif s.require_stamp:
            client_addr = ""
        else:
            client_addr = delivery.client_addr
        dkim_domain = aligned_pass(delivery.dkim, inbound.from_address) if inbound.from_address else None
        # A consulted department is proven exactly as a CSR is.
        dept = directory.department_at(inbound.from_address) if csr is None and inbound.from_address \
            else None
        staff = csr.address if csr is not None else dept.address if dept is not None else None
        identity = classify(
            from_address=inbound.from_address,
            csr_known=staff is not None,
            automatic_reason=None,
            client_addr=client_addr,
            trusted_networks=s.trusted_networks,
            sasl_login=login,
            sasl_login_is_csr=bool(login and staff and login.lower() == staff),
            dkim_staff_domain=dkim_domain if staff is not None else None,
        )
        if dept is not None and identity.role is Role.CSR:
            return Identity(Role.DEPARTMENT, identity.rule.replace("csr_", "department_"),
                            f"{dept.name}: {identity.reason}", identity.proof)
        return identity

    def _match(self, rcpt: str, inbound: Inbound, identity: Identity,
               mailboxes: dict[str, Mailbox]) -> tuple[Match, dict[str, tuple[Case, set[str]]]]:
        """The match, and the cases it looked at (number -> case, participants)."""
        secret, prefix = self.settings.secret, self.settings.case_prefix
        refs = list(reversed(inbound.references)) + list(inbound.in_reply_to)
        signed: list[str] = []
        others: list[str] = []
        for mid in dict.fromkeys(list(inbound.in_reply_to) + refs):
            number = tokens.message_id_number(secret, mid, prefix)
            if number is not None:
                signed.append(number)
            else:
                others.append(mid)
        stored = self.store.case_numbers_of_message_ids(others)
        # A DKIM-proven message can be replayed to any RCPT TO: its case
        # must come from what the signature covers, not the plus-address.
        address_number = (None if identity.proof.startswith("dkim:")
                          else tokens.address_number(rcpt, prefix))
        subject_numbers = tokens.subject_numbers(inbound.subject, prefix)
        cases = self.store.cases_of(
            [*signed, *stored, *([address_number] if address_number else []), *subject_numbers],
            mailboxes)
        known = {number: people for number, (_, people) in cases.items()}
        match = match_case(
            sender=inbound.from_address,
            is_csr=identity.role in (Role.CSR, Role.DEPARTMENT),
            signed_numbers=signed,
            stored_numbers=stored,
            address_number=address_number,
            subject_numbers=subject_numbers,
            participants=known.get,
        )
        return Match(match.number, match.rule, match.reason, match.mentioned,
                     participants=frozenset(known.get(match.number, ())) if match.number else None,
                     signed=bool(signed)), cases

    # -- the shell ------------------------------------------------------------------------

    def command(self, number: str, *, actor: str | None, commands: Sequence[cmd.Given],
                text: str = "") -> Result:
        """A CSR's (``actor``) or an admin's (None) commands on a case, as if mailed."""
        store = self.store
        with store.atomic():
            directory, mailboxes = store.load_directory()
            case = store.load_case(Case.number == number.upper(), mailboxes)
            if case is None:
                raise StoreError(f"no case {number}; `casegate case list` shows them")
            mailbox = case.mailbox
            who = self._actor(directory, actor)
            facts = cmd.CommandFacts(actor=who, case=store.case_state(case), pool=pool_info(mailbox.pool),
                                     directory=directory, by_mail=False, now=store.clock(),
                                     drafts=self._drafts(case, commands))
            decision = cmd.decide(commands, text, facts,
                                  store=StoreMessage(MessageKind.COMMAND, text) if text.strip() else None)
            if decision.errors:
                return Result(decision.outcome, case.number, decision.errors, decision.hits)
            ctx = Context(mailbox=mailbox, directory=directory, case=case, actor=who.label)
            self.executor.apply(decision, ctx)
        log.info("%s %s by %s: %s", case.number, decision.outcome, who.label, decision.explain())
        return Result(decision.outcome, case.number, (), decision.hits,
                      tuple(m.kind for m in ctx.sent))

    def open_case(self, *, customer: str, mailbox: str, csr: str, subject: str, text: str) -> Result:
        """A proactive case: the CSR writes first (``#new`` by mail)."""
        store = self.store
        with store.atomic():
            directory, mailboxes = store.load_directory()
            row = mailboxes.get(base_address(mailbox))
            if row is None:
                raise StoreError(f"{mailbox} is not a supervised address (`casegate mailbox list`)")
            who = self._actor(directory, csr)
            facts = cmd.CommandFacts(actor=who, case=None, pool=pool_info(row.pool),
                                     directory=directory, subject=subject, by_mail=False,
                                     mailbox=row.address)
            decision = cmd.decide([cmd.Given("new", customer)], text, facts)
            if decision.errors:
                return Result(decision.outcome, None, decision.errors, decision.hits)
            ctx = Context(mailbox=row, directory=directory, actor=who.label)
            self.executor.apply(decision, ctx)
        assert ctx.case is not None
        log.info("%s %s by %s", ctx.case.number, decision.outcome, who.label)
        return Result(decision.outcome, ctx.case.number, (), decision.hits,
                      tuple(m.kind for m in ctx.sent))

    def _drafts(self, case: Case | None, commands: Sequence[cmd.Given]) -> tuple[DraftInfo, ...]:
        """Held answers on the case (only looked up for #approve and #reject)."""
        if case is None or not any(g.name in ("approve", "reject") for g in commands):
            return ()
        return self.store.draft_infos(case)

    def _waiting(self, csr: str, commands: Sequence[cmd.Given]) -> tuple[str, ...]:
        """What #next would hand this CSR (only looked up when asked for)."""
        return tuple(self.store.waiting(csr)) if any(g.name == "next" for g in commands) else ()

    def next_case(self, csr: str) -> Result:
        """``#next`` from the shell: the oldest waiting case of the CSR's pools."""
        return self.staff_command(csr, cmd.Given("next"))

    def staff_command(self, csr: str, given: cmd.Given) -> Result:
        """A CSR's command about no case (``#next``, ``#away``, ``#back``) from the shell."""
        store = self.store
        with store.atomic():
            directory, mailboxes = store.load_directory()
            who = self._actor(directory, csr)
            any_mailbox = next(iter(mailboxes.values()), None)
            if any_mailbox is None:
                raise StoreError("no supervised address yet (`casegate mailbox add`)")
            facts = cmd.CommandFacts(actor=who, case=None, pool=None, directory=directory,
                                     by_mail=False, waiting=self._waiting(who.address, [given]),
                                     now=store.clock())
            decision = cmd.decide([given], "", facts)
            if decision.errors:
                return Result(decision.outcome, None, decision.errors, decision.hits)
            ctx = Context(mailbox=any_mailbox, directory=directory, actor=who.label)
            self.executor.apply(decision, ctx)
        log.info("%s by %s: %s", given, who.label, decision.explain())
        return Result(decision.outcome, ctx.case.number if ctx.case else None, (), decision.hits,
                      tuple(m.kind for m in ctx.sent))

    def _actor(self, directory: Directory, address: str | None) -> cmd.Actor:
        if not address:
            return cmd.Actor("", None)
        csr = directory.csr(address)
        if csr is None:
            raise StoreError(f"{address} is not a CSR (`casegate csr list`)")
        return cmd.Actor(csr.address, csr)

    # -- the scheduler ----------------------------------------------------------------------

    def run_due_timers(self, owner: str, limit: int = 50) -> int:
        """Fire the timers that are due (each in its own transaction); how many fired."""
        store = self.store
        fired = 0
        for timer in store.claim_timers(limit, defaults.TIMER_LEASE_SECONDS, owner):
            try:
                with store.atomic():
                    if not store.timer_done(timer, owner):
                        continue  # cancelled meanwhile, or another host took it over
                    directory, mailboxes = store.load_directory()
                    case = store.load_case(Case.id == timer.case_id, mailboxes)
                    assert case is not None
                    mailbox = case.mailbox
                    info: MailboxInfo | None = directory.mailbox(mailbox.address)
                    assert info is not None
                    decision = life.on_timer(TimerKind(timer.kind), store.case_state(case), info.pool)
                    ctx = Context(mailbox=mailbox, directory=directory, case=case)
                    self.executor.apply(decision, ctx)
                fired += 1
                log.info("timer %s on %s: %s; %s", timer.kind, case.number, decision.outcome,
                         decision.explain())
            except StoreUnavailable:
                raise
            except Exception as exc:
                log.exception("timer %s (%s) failed", timer.id, timer.kind)
                store.timer_failed(timer, f"{type(exc).__name__}: {exc}", 60.0 * (timer.attempts + 1))
        return fired


def _dsn_status(inbound: Inbound) -> str:
    """``5.1.1 (Diagnostic…)`` from a DSN's machine-readable part, if it has one."""
    try:
        for part in inbound.msg.walk():
            if part.get_content_type() in ("message/delivery-status", "message/global-delivery-status"):
                payload = part.get_payload()
                text = "\n".join(str(p) for p in payload) if isinstance(payload, list) else str(payload)
                status = re.search(r"^Status:\s*([245]\.\d{1,3}\.\d{1,3})", text, re.M | re.I)
                diag = re.search(r"^Diagnostic-Code:\s*(.+)$", text, re.M | re.I)
                return " ".join(x for x in (status.group(1) if status else "",
                                            diag.group(1).strip() if diag else "") if x)[:300]
    except Exception:
        return ""
    return ""
