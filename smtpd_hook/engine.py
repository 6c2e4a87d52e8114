"""The engine: one delivery from Postfix in, one transaction out.

``Engine.process`` is synchronous (the SMTP hook runs it in a thread). It
parses, asks ``rules`` for decisions, and writes everything the message
causes — message rows, attachments, case changes, events and fully rendered
outgoing mail in the outbox — in one transaction, then answers. A delivery
seen before (same envelope and bytes) changes nothing: Postfix may hand a
message over twice when our 250 got lost.
"""

from __future__ import annotations

import contextvars
import datetime as dt
import logging
import re
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import quote

from casestore.models import Case, Csr, Mailbox, Message
from casestore.store import Store, StoreUnavailable, aware
from rules import replies, tokens
from rules.assign import Candidate, least_load
from rules.automatic import never_autoreply_to, suppresses_autoreply
from rules.blacklist import Blacklist, Entry
from rules.classify import Identity, Role, classify
from rules.inbound import Inbound, parse
from rules.logctx import queue_id as current_queue_id
from rules.loop import LOOP_HEADER, detect, hops_of, make_loop_header, read_verp, verp_address
from rules.match import Match, match_case
from rules.names import greeting
from rules.quotes import REPLY_MARKER, body_text, extract_reply
from rules.replies import Reply
from rules.stamp import STAMP_HEADER, Stamp, verify_stamp
from smtpd_hook.delivery import Delivery
from smtpd_hook.render import OutgoingFile, Renderer, build_message, format_address
from smtpd_hook.settings import Settings

log = logging.getLogger("casegate.filter")


# Settings an admin changes with `casegate limits` (stored, shared by hosts).
LIMIT_DEFAULTS = {
    "autoreply_per_recipient": 40,  # acknowledgements to one address ...
    "autoreply_per_case": 10,  # ... and on one case ...
    "autoreply_window_hours": 24,  # ... within this many hours (Znuny: 40 a day)
}
STAMP_MAX_AGE = 5 * 24 * 3600  # Postfix's default maximal_queue_lifetime
BLACKLIST_TTL = 5.0  # seconds; the milter refreshes its copy as often
COMMANDS = ("#blacklist-subject", "#blacklist")  # longest first
OWN_MAIL_RULES = frozenset({"own_loop_header", "own_message_id", "hop_limit"})

# The loop-header hop count of the message being processed (per thread/task).
_hops: contextvars.ContextVar[int] = contextvars.ContextVar("hops", default=0)


class Misrouted(Exception):
    """Postfix sent us mail for an address we do not supervise."""


class Engine:
    def __init__(self, store: Store, settings: Settings, renderer: Renderer | None = None,
                 *, sign: Callable[[bytes], bytes] | None = None) -> None:
        self.store = store
        self.settings = settings
        self.renderer = renderer or Renderer(settings.templates_dir)
        self.sign = sign  # DKIM-signs outgoing bytes before they are stored
        self._lock = threading.Lock()
        self._cached_blacklist: tuple[float, Blacklist] | None = None

    # -- entry point ---------------------------------------------------------

    def process(self, delivery: Delivery) -> Reply:
        """Store what the delivery causes; 250 only once committed, else 451."""
        outcome = replies.OK
        for rcpt in delivery.rcpt_tos:
            try:
                result = self._process_one(delivery, rcpt)
            except StoreUnavailable as exc:
                log.warning("store unavailable, deferring: %s", exc)
                return replies.TEMPFAIL.because("case store unavailable, try again later")
            except Misrouted as exc:
                log.error("%s", exc)
                return replies.TEMPFAIL.because(str(exc))
            if outcome is replies.OK:
                outcome = result  # keep the first non-plain outcome (duplicate, discarded)
        return outcome

    def _process_one(self, delivery: Delivery, rcpt: str) -> Reply:
        # support@ and support+CS0000123@ in one message are one delivery.
        key = delivery.key(tokens.base_address(rcpt))
        store = self.store
        with store.atomic():
            seen = store.delivery_seen(key)
            if seen is not None:
                log.info("duplicate delivery to %s (first seen as %s): nothing to do",
                         rcpt, seen.queue_id or "?")
                return replies.OK_DUPLICATE
            mailbox = store.mailbox(tokens.base_address(rcpt))
            if mailbox is None:
                raise Misrouted(
                    f"{rcpt} is not a supervised address: add it with `casegate mailbox add` "
                    "or remove it from Postfix's transport map"
                )
            inbound = parse(delivery.data)
            listed = self._blacklisted(delivery, inbound)
            if listed is not None:
                # Should the milter be down or bypassed: discard, never store
                # or answer, never a 5xx after the queue.
                store.record_delivery(key, queue_id=delivery.queue_id,
                                      outcome="discarded_blacklist", message=None)
                log.info("discarded: sender %s is blacklisted (%s%s)", inbound.from_address
                         or delivery.mail_from, listed.pattern,
                         f", subject /{listed.subject}/" if listed.subject else "")
                return replies.OK_DISCARDED
            verp = read_verp(self.settings.secret, rcpt, self.settings.case_prefix)
            if verp is not None:
                message, outcome = self._bounce(delivery, inbound, verp.number, verp.message_id)
            else:
                message, outcome = self._handle(delivery, rcpt, mailbox, inbound)
            store.record_delivery(key, queue_id=delivery.queue_id, outcome=outcome, message=message)
        log.info("stored: %s", outcome)
        return replies.OK

    def _blacklist(self) -> Blacklist:
        """The blacklist, compiled, re-read at most every BLACKLIST_TTL seconds."""
        now = time.monotonic()
        with self._lock:
            cached = self._cached_blacklist
            if cached is not None and now - cached[0] < BLACKLIST_TTL:
                return cached[1]
        entries = [Entry(e.pattern, e.subject, e.reason) for e in self.store.blacklist()]
        blacklist = Blacklist(entries, strict=False)
        with self._lock:
            self._cached_blacklist = (now, blacklist)
        return blacklist

    def _blacklisted(self, delivery: Delivery, inbound: Inbound) -> Entry | None:
        blacklist = self._blacklist()
        for address in dict.fromkeys(a for a in (delivery.mail_from.lower(),
                                                 inbound.from_address) if a):
            hit = blacklist.match_sender(address) or blacklist.match(address, inbound.subject)
            if hit is not None:
                return hit
        return None

    # -- decisions -----------------------------------------------------------

    def _stamp(self, delivery: Delivery, inbound: Inbound) -> Stamp | None:
        """The milter's stamp of this very message (signed, and naming its queue ID)."""
        try:
            values = [str(v) for v in inbound.msg.get_all(STAMP_HEADER, [])]
        except Exception:
            return None
        for value in values:
            stamp = verify_stamp(value, secret=self.settings.secret, max_age=STAMP_MAX_AGE,
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

    def _identify(self, delivery: Delivery, inbound: Inbound) -> tuple[Identity, Csr | None]:
        s = self.settings
        verdict = detect(inbound.msg, delivery.mail_from, secret=s.secret, prefix=s.case_prefix)
        csr = self.store.csr(inbound.from_address) if inbound.from_address else None
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
        staff_domain = inbound.from_address.rpartition("@")[2]
        dkim_domain = next((d for d, ok, _ in delivery.dkim if ok and d == staff_domain), None)
        identity = classify(
            from_address=inbound.from_address,
            csr_known=csr is not None,
            automatic_reason=f"{verdict.rule}: {verdict.reason}" if verdict else None,
            client_addr=client_addr,
            trusted_networks=s.trusted_networks,
            sasl_login=login,
            sasl_login_is_csr=bool(login and csr and login.lower() == csr.address),
            dkim_staff_domain=dkim_domain if csr is not None else None,
        )
        if verdict is not None:
            identity = Identity(Role.AUTOMATIC, verdict.rule, verdict.reason, proof=verdict.kind)
        return identity, csr if identity.role is Role.CSR else None

    def _match(self, rcpt: str, inbound: Inbound, identity: Identity) -> Match:
        secret, prefix = self.settings.secret, self.settings.case_prefix
        refs = list(reversed(inbound.references)) + list(inbound.in_reply_to)
        signed: list[str] = []
        stored: list[str] = []
        others: list[str] = []
        for mid in dict.fromkeys(list(inbound.in_reply_to) + refs):
            number = tokens.message_id_number(secret, mid, prefix)
            if number is not None:
                signed.append(number)
            else:
                others.append(mid)
        stored = self.store.case_numbers_of_message_ids(others)

        def participants(number: str) -> set[str] | None:
            case = Case.get_or_none(Case.number == number)
            return None if case is None else self.store.participants(case)

        return match_case(
            sender=inbound.from_address,
            is_csr=identity.role is Role.CSR,
            signed_numbers=signed,
            stored_numbers=stored,
            # A DKIM-proven message can be replayed to any RCPT TO: its case
            # must come from what the signature covers, not the plus-address.
            address_number=None if identity.proof.startswith("dkim:")
            else tokens.address_number(rcpt, prefix),
            subject_numbers=tokens.subject_numbers(inbound.subject, prefix),
            participants=participants,
        )

    def _handle(
        self, delivery: Delivery, rcpt: str, mailbox: Mailbox, inbound: Inbound
    ) -> tuple[Message, str]:
        identity, csr = self._identify(delivery, inbound)
        match = self._match(rcpt, inbound, identity)
        log.info(
            "from=<%s> role=%s (%s: %s) case=%s (%s: %s)",
            inbound.from_address, identity.role, identity.rule, identity.reason,
            match.number or "new", match.rule, match.reason,
        )
        case = Case.get_or_none(Case.number == match.number) if match.number else None
        _hops.set(hops_of(inbound.msg, self.settings.secret))

        if identity.role is Role.CSR and case is not None:
            assert csr is not None
            command = self._command(inbound)
            if command is not None:
                return self._csr_command(delivery, inbound, case, csr, identity, command)
            return self._csr_reply(delivery, inbound, case, csr, identity)
        if identity.role is Role.AUTOMATIC:
            return self._automatic(delivery, mailbox, inbound, case, identity)
        return self._customer(delivery, mailbox, inbound, case, identity, match)

    # -- the three flows -----------------------------------------------------

    def _customer(
        self,
        delivery: Delivery,
        mailbox: Mailbox,
        inbound: Inbound,
        case: Case | None,
        identity: Identity,
        match: Match,
    ) -> tuple[Message, str]:
        store = self.store
        new = case is None
        if case is None:
            case = self._open_case(mailbox, inbound, match, delivery.mail_from)
        message = self._store_inbound(delivery, inbound, case, kind="customer", identity=identity,
                                      text=body_text(inbound.msg))
        if not new:
            store.event("customer_replied", case=case, message=message, actor=inbound.from_address,
                        detail=match.rule)
            if case.status == "closed":
                store.touch(case, status="open", closed=None)
                store.event("reopened", case=case, message=message, actor=inbound.from_address)
            else:
                store.touch(case)
        if case.assignee is None:
            self._assign(case, mailbox)
        if new:
            self._acknowledge(case, mailbox, inbound, message)
        self._notify(case, mailbox, message, inbound,
                     headline="New case" if new else "The customer wrote again")
        return message, "new_case" if new else "appended"

    def _csr_reply(
        self, delivery: Delivery, inbound: Inbound, case: Case, csr: Csr, identity: Identity
    ) -> tuple[Message, str]:
        store = self.store
        text = extract_reply(inbound.msg)
        message = self._store_inbound(delivery, inbound, case, kind="csr", identity=identity, text=text)
        if case.assignee_id is None:
            store.touch(case, assignee=csr)
            store.event("assigned", case=case, actor=csr.address, detail=f"{csr.address} answered")
        else:
            store.touch(case)
        if not text.strip() and not inbound.attachments:
            store.event("empty_reply", case=case, message=message, actor=csr.address,
                        detail="nothing above the quoted text: nothing sent to the customer")
            return message, "csr_empty_reply"
        self._reply_to_customer(case, message, inbound, csr, text)
        store.event("replied", case=case, message=message, actor=csr.address)
        return message, "csr_reply"

    def _automatic(
        self,
        delivery: Delivery,
        mailbox: Mailbox,
        inbound: Inbound,
        case: Case | None,
        identity: Identity,
    ) -> tuple[Message, str]:
        store = self.store
        kind = "bounce" if identity.proof == "bounce" else "automatic"
        if identity.rule in OWN_MAIL_RULES:
            # Our own mail came back (a forward, a forged sender, another
            # casegate): kept, but it never opens a case or tells anyone, or
            # it could go round for ever.
            message = self._store_inbound(delivery, inbound, case, kind="automatic",
                                          identity=identity, text=body_text(inbound.msg))
            store.event("own_mail", case=case, message=message, actor=inbound.from_address,
                        detail=f"{identity.rule}: {identity.reason}")
            return message, "own_mail"
        if case is None and kind == "bounce":
            # A bounce never opens a case; keep it, unattached, with the reason.
            message = self._store_inbound(delivery, inbound, None, kind=kind, identity=identity,
                                          text=body_text(inbound.msg))
            store.event("bounce_unmatched", message=message, actor=inbound.from_address,
                        detail=f"{identity.rule}: {identity.reason}")
            return message, "bounce_unmatched"
        new = case is None
        if case is None:
            case = self._open_case(mailbox, inbound, None, delivery.mail_from)
        message = self._store_inbound(delivery, inbound, case, kind=kind, identity=identity,
                                      text=body_text(inbound.msg))
        store.event("automatic", case=case, message=message, actor=inbound.from_address,
                    detail=f"{identity.rule}: {identity.reason}")
        if new:
            # Automatic mail that is not about a case still gets a case (it
            # may be a real system's alert), but never an acknowledgement.
            self._assign(case, mailbox)
            self._notify(case, mailbox, message, inbound, headline="New case (automatic mail)")
            return message, "new_case_automatic"
        return message, "automatic_appended"

    def _bounce(
        self, delivery: Delivery, inbound: Inbound, number: str, message_id: int
    ) -> tuple[Message, str]:
        """A bounce to our VERP address: a delivery failure on its case, exactly."""
        store = self.store
        case = Case.get_or_none(Case.number == number)
        failed = Message.get_or_none((Message.id == message_id) & (Message.case == case))
        identity = Identity(Role.AUTOMATIC, "verp_bounce", "bounce to our VERP address",
                            proof="bounce")
        message = self._store_inbound(delivery, inbound, case, kind="bounce", identity=identity,
                                      text=body_text(inbound.msg))
        detail = (f"{failed.kind} to {failed.recipients} ({failed.message_id}) bounced"
                  if failed is not None else f"message {message_id} bounced")
        status = _dsn_status(inbound)
        store.event("delivery_failed", case=case, message=message, actor=inbound.from_address,
                    detail=f"{detail}{': ' + status if status else ''}")
        log.info("bounce for %s on %s: %s", message_id, number, status or "no status")
        return message, "bounce_matched"

    # -- commands CSRs give by email -------------------------------------------

    def _command(self, inbound: Inbound) -> str | None:
        text = extract_reply(inbound.msg).strip()
        first = text.splitlines()[0].strip().lower() if text else ""
        for command in COMMANDS:
            if first == command or first.startswith(command + " "):
                return command
        return None

    def _csr_command(
        self, delivery: Delivery, inbound: Inbound, case: Case, csr: Csr, identity: Identity,
        command: str,
    ) -> tuple[Message, str]:
        message = self._store_inbound(delivery, inbound, case, kind="command", identity=identity,
                                      text=extract_reply(inbound.msg))
        if not case.customer_address or self._is_ours(case.customer_address):
            self.store.event("command_refused", case=case, message=message, actor=csr.address,
                             detail=f"{command}: {case.customer_address or 'no address'} is ours")
            log.warning("%s: not blacklisting %s (one of our addresses)", command,
                        case.customer_address)
            return message, "csr_command_refused"
        subject = None
        if command == "#blacklist-subject" and case.subject:
            head = case.subject[:200]  # the column holds 500; a long subject matches by its start
            subject = "^" + re.escape(head) + ("$" if head == case.subject else "")
        # The customer's address: the one on the case (never the CSR's).
        self.store.add_blacklist(case.customer_address, subject,
                                 reason=f"by {csr.address} on {case.number}", by=csr.address)
        self.store.event("blacklisted", case=case, message=message, actor=csr.address,
                         detail=case.customer_address + (f" subject /{subject}/" if subject else ""))
        log.info("%s blacklisted %s%s", csr.address, case.customer_address,
                 " with the case's subject" if subject else "")
        return message, "csr_command"

    def _actions(self, case: Case, mailbox: Mailbox) -> list[dict[str, str]]:
        """One-click mailto links for the notification (honoured only from a CSR)."""
        if not case.customer_address or self._is_ours(case.customer_address):
            return []
        to = tokens.plus_address(mailbox.address, case.number)
        subject = quote(tokens.tagged_subject(case.number, case.subject, self.settings.case_prefix))
        return [
            {"label": f"Blacklist {case.customer_address}",
             "url": f"mailto:{to}?subject={subject}&body={quote('#blacklist')}"},
            {"label": f"Blacklist {case.customer_address} for this subject only",
             "url": f"mailto:{to}?subject={subject}&body={quote('#blacklist-subject')}"},
        ]

    # -- pieces ---------------------------------------------------------------

    def _is_ours(self, address: str) -> bool:
        """A CSR's or a supervised address: never a customer to answer or blacklist."""
        return bool(address) and (self.store.csr(address) is not None or
                                  self.store.mailbox(tokens.base_address(address)) is not None)

    def _open_case(self, mailbox: Mailbox, inbound: Inbound, match: Match | None,
                   envelope_sender: str) -> Case:
        subject = tokens.clean_subject(inbound.subject, self.settings.case_prefix) or "(no subject)"
        case = self.store.new_case(
            mailbox=mailbox,
            prefix=self.settings.case_prefix,
            # No From: address: the envelope sender, else nobody to answer.
            customer_address=inbound.from_address or envelope_sender.lower(),
            customer_name=inbound.from_name,
            subject=subject,
        )
        self.store.event("opened", case=case, actor=inbound.from_address,
                         detail=match.reason if match else "automatic mail")
        # CCs of the first message may write on the case too (never a
        # supervised address or a CSR: those are us).
        for _, address in inbound.cc:
            if address != case.customer_address and self.store.mailbox(
                    tokens.base_address(address)) is None and self.store.csr(address) is None:
                self.store.add_participant(case, address, "cc")
        if match is not None and match.mentioned:
            self.store.event("mentions", case=case, actor=inbound.from_address,
                             detail=", ".join(match.mentioned))
        return case

    def _assign(self, case: Case, mailbox: Mailbox) -> None:
        loads = self.store.open_load(mailbox.pool)
        chosen = least_load([Candidate(csr.id, load) for csr, load in loads])
        if chosen is None:
            self.store.event("unassigned", case=case,
                             detail=f"no available CSR in pool {mailbox.pool.name}")
            log.warning("case %s: no available CSR in pool %s", case.number, mailbox.pool.name)
            return
        csr = next(c for c, _ in loads if c.id == chosen)
        self.store.touch(case, assignee=csr)
        self.store.event("assigned", case=case, actor=csr.address, detail="least_load")

    def _store_inbound(
        self,
        delivery: Delivery,
        inbound: Inbound,
        case: Case | None,
        *,
        kind: str,
        identity: Identity,
        text: str,
    ) -> Message:
        message = self.store.add_message(
            case=case,
            direction="in",
            kind=kind,
            sender=inbound.from_address,
            recipients=",".join(delivery.rcpt_tos),
            message_id=inbound.message_id,
            in_reply_to=" ".join(inbound.in_reply_to),
            subject=inbound.subject,
            text=text,
            raw=delivery.data,
            queue_id=delivery.queue_id,
            client_addr=delivery.client_addr,
            authenticated=identity.proof if identity.role is Role.CSR else "",
            automatic=f"{identity.rule}: {identity.reason}" if identity.role is Role.AUTOMATIC else "",
            dkim=" ".join(f"{'pass' if ok else 'fail'}:{d}" for d, ok, _ in delivery.dkim)[:500],
        )
        for part in inbound.attachments:
            self.store.add_attachment(message, filename=part.filename,
                                      content_type=part.content_type, data=part.data,
                                      sha256=part.sha256)
        return message

    def _history(self, case: Case, msgs: list[Message], *, exclude: Message,
                 public_only: bool) -> list[dict[str, str]]:
        kinds = ("customer", "csr") if public_only else ("customer", "csr", "automatic", "bounce")
        names = self.store.csr_names({m.sender for m in msgs if m.kind == "csr"})
        items = []
        for m in msgs:
            if m.id == exclude.id or m.direction != "in" or m.kind not in kinds:
                continue
            items.append({"date": _date(m.created), "author": self._author(case, m, names),
                          "text": (m.text or "").strip() or "(no text)"})
        items.reverse()  # newest first
        return items[: self.settings.history_limit]

    def _author(self, case: Case, m: Message, csr_names: dict[str, str]) -> str:
        if m.kind == "csr":
            return csr_names.get(m.sender, m.sender)
        if m.sender == case.customer_address and case.customer_name:
            return f"{case.customer_name} <{m.sender}>"
        return m.sender or "unknown"

    def _thread_ids(self, msgs: list[Message]) -> list[str]:
        """Message-IDs of the customer's thread: what they sent and we sent them."""
        ids = []
        for m in msgs:
            if m.message_id and (
                (m.direction == "in" and m.kind == "customer") or
                (m.direction == "out" and m.kind in ("ack", "reply"))
            ):
                ids.append(m.message_id)
        return ids

    def _outgoing(
        self,
        case: Case,
        mailbox: Mailbox,
        *,
        kind: str,
        from_: str,
        to: Sequence[str],
        subject: str,
        body: str,
        in_reply_to: str | None,
        references: Sequence[str],
        headers: dict[str, str] | None = None,
        files: Sequence[OutgoingFile] = (),
    ) -> Message:
        domain = mailbox.address.partition("@")[2]
        message_id = tokens.make_message_id(self.settings.secret, case.number, domain)
        reply_to = tokens.plus_address(mailbox.address, case.number)
        raw = build_message(
            from_=from_, to=list(to), subject=subject, body=body, message_id=message_id,
            date=self.store.clock(), reply_to=reply_to, in_reply_to=in_reply_to,
            references=references, headers=headers, files=files,
        )
        if self.sign is not None:
            raw = self.sign(raw)
        message = self.store.add_message(
            case=case, direction="out", kind=kind, sender=mailbox.address,
            recipients=",".join(to), message_id=message_id, in_reply_to=in_reply_to or "",
            subject=subject, text=body, raw=raw,
            queue_id=current_queue_id.get() if current_queue_id.get() != "-" else "",
        )
        # VERP: a bounce of this message names its case and the message exactly.
        envelope = verp_address(self.settings.secret, mailbox.address, case.number, message.id)
        self.store.enqueue(message, mail_from=envelope, rcpt_to=to)
        return message

    def _automatic_headers(self, auto_submitted: str) -> dict[str, str]:
        """What marks our automatic mail; a CSR's answer carries none of it."""
        return {
            "Auto-Submitted": auto_submitted,
            "X-Auto-Response-Suppress": "All",
            "Precedence": "auto_reply",
            LOOP_HEADER: make_loop_header(self.settings.secret, _hops.get() + 1),
        }

    def _limits(self) -> dict[str, int]:
        stored = self.store.settings({k: str(v) for k, v in LIMIT_DEFAULTS.items()})
        return {k: int(v) if v.isdigit() else LIMIT_DEFAULTS[k] for k, v in stored.items()}

    def _over_rate_cap(self, case: Case, address: str) -> str | None:
        limits = self._limits()
        since = self.store.clock() - dt.timedelta(hours=limits["autoreply_window_hours"])
        per_rcpt = limits["autoreply_per_recipient"]
        if self.store.automatic_sent(since=since, recipient=address) >= per_rcpt:
            return f"rate cap: {per_rcpt} automatic replies to {address} already sent"
        per_case = limits["autoreply_per_case"]
        if self.store.automatic_sent(since=since, case=case) >= per_case:
            return f"rate cap: {per_case} automatic replies on {case.number} already sent"
        return None

    def _mailbox_name(self, mailbox: Mailbox) -> str:
        return mailbox.display_name or self.settings.organization

    def _acknowledge(self, case: Case, mailbox: Mailbox, inbound: Inbound, message: Message) -> None:
        address = case.customer_address
        reason = (("no address to answer" if not address else None)
                  or ("never to our own addresses" if self._is_ours(address) else None)
                  or never_autoreply_to(address) or suppresses_autoreply(inbound.msg)
                  or self._over_rate_cap(case, address))
        if reason:
            self.store.event("no_ack", case=case, message=message, detail=reason)
            log.info("case %s: no acknowledgement: %s", case.number, reason)
            return
        body = self.renderer.text("customer/ack.txt.j2", {
            "greeting": greeting(case.customer_name),
            "case": _case_view(case),
            "organization": self._mailbox_name(mailbox),
        })
        refs = [*inbound.references, inbound.message_id] if inbound.message_id else []
        self._outgoing(
            case, mailbox, kind="ack",
            from_=format_address(self._mailbox_name(mailbox), mailbox.address),
            to=[address],
            subject=tokens.tagged_subject(case.number, inbound.subject, self.settings.case_prefix),
            body=body, in_reply_to=inbound.message_id or None, references=refs,
            headers=self._automatic_headers("auto-replied"),
        )
        self.store.event("acknowledged", case=case, message=message, actor=address)

    def _notify(
        self, case: Case, mailbox: Mailbox, message: Message, inbound: Inbound, *, headline: str
    ) -> None:
        csr = case.assignee
        if csr is None:
            return
        files = self.store.attachments(case)
        msgs = self.store.messages(case)
        attached = {a.id for a in files if a.message_id == message.id}
        author = self._author(case, message, {})  # a notification is never about a CSR's message
        body = self.renderer.text("csr/notify.txt.j2", {
            "marker": REPLY_MARKER,
            "headline": headline,
            "case": _case_view(case),
            "assignee": f"{csr.name} <{csr.address}>",
            "files": [{"id": a.id, "filename": a.filename, "content_type": a.content_type,
                       "size": a.size, "attached": a.id in attached} for a in files],
            "message": {"author": author, "date": _date(message.created),
                        "text": (message.text or "").strip() or "(no text)"},
            "history": self._history(case, msgs, exclude=message, public_only=False),
            "actions": self._actions(case, mailbox),
        })
        earlier = [m.message_id for m in msgs if m.direction == "out" and m.kind == "notify"]
        name = case.customer_name or case.customer_address
        self._outgoing(
            case, mailbox, kind="notify",
            from_=format_address(f"{name} via {self._mailbox_name(mailbox)}",
                                 tokens.plus_address(mailbox.address, case.number)),
            to=[csr.address],
            subject=tokens.tagged_subject(case.number, case.subject, self.settings.case_prefix),
            body=body, in_reply_to=earlier[-1] if earlier else None, references=earlier,
            headers=self._automatic_headers("auto-generated"),
            files=[OutgoingFile(p.filename, p.content_type, p.data) for p in inbound.attachments],
        )

    def _reply_to_customer(
        self, case: Case, message: Message, inbound: Inbound, csr: Csr, text: str
    ) -> None:
        mailbox = case.mailbox
        msgs = self.store.messages(case)
        body = self.renderer.text("customer/reply.txt.j2", {
            "greeting": greeting(case.customer_name),
            "reply": text.strip(),
            "csr": {"name": csr.name, "signature": (csr.signature or "").strip()},
            "signoff": _signoff(csr.name, csr.signature or "", self._mailbox_name(mailbox)),
            "organization": self._mailbox_name(mailbox),
            "case": _case_view(case),
            "history": self._history(case, msgs, exclude=message, public_only=True),
        })
        thread = self._thread_ids(msgs)
        customer_msgs = [m for m in msgs
                         if m.direction == "in" and m.kind == "customer" and m.message_id]
        in_reply_to = customer_msgs[-1].message_id if customer_msgs else (thread[-1] if thread else None)
        self._outgoing(
            case, mailbox, kind="reply",
            from_=format_address(f"{csr.name} ({self._mailbox_name(mailbox)})", mailbox.address),
            to=[case.customer_address],
            subject=tokens.tagged_subject(case.number, case.subject, self.settings.case_prefix,
                                          reply=True),
            body=body, in_reply_to=in_reply_to, references=thread,
            files=[OutgoingFile(p.filename, p.content_type, p.data) for p in inbound.attachments],
        )


def _signoff(name: str, signature: str, organization: str) -> str:
    """Name, signature and organisation, without saying anything twice."""
    lines = [name] if name not in signature else []
    lines += [line.rstrip() for line in signature.strip().splitlines()]
    if organization and organization not in signature:
        lines.append(organization)
    return "\n".join(lines)


def _dsn_status(inbound: Inbound) -> str:
    """``5.1.1 (Diagnostic…)`` from a DSN's machine-readable part, if it has one."""
    for part in inbound.msg.walk():
        if part.get_content_type() in ("message/delivery-status", "message/global-delivery-status"):
            payload = part.get_payload()
            text = "\n".join(str(p) for p in payload) if isinstance(payload, list) else str(payload)
            status = re.search(r"^Status:\s*([245]\.\d{1,3}\.\d{1,3})", text, re.M | re.I)
            diag = re.search(r"^Diagnostic-Code:\s*(.+)$", text, re.M | re.I)
            return " ".join(x for x in (status.group(1) if status else "",
                                        diag.group(1).strip() if diag else "") if x)[:300]
    return ""


def _date(value: Any) -> str:
    when = aware(value)
    return when.strftime("%Y-%m-%d %H:%M UTC") if when else ""


def _case_view(case: Case) -> dict[str, str]:
    return {
        "number": case.number,
        "status": case.status,
        "subject": case.subject,
        "customer_name": case.customer_name,
        "customer_address": case.customer_address,
        "created": _date(case.created),
    }
