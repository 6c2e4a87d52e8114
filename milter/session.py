"""One milter connection as a state machine: feed commands, get responses. No I/O.

The session negotiates protocol version 6, asks Postfix for the macros it
needs at each stage, keeps the per-message state (sender, SASL identity,
client address, From: and Subject: values, incoming ``X-Casegate-*``
headers), asks a :class:`~milter.policy.Policy` at MAIL FROM, RCPT TO and end
of headers, and at end of message deletes every incoming ``X-Casegate-*``
header and adds a signed ``X-Casegate-Auth`` stamp.

Only mail for a supervised address is casegate's business. A message none of
whose accepted recipients is supervised passes untouched: no header check, no
stamp (it would tell the recipients a CSR's SASL login and address), no
header deleted. A header rule that fires on a message that also goes to
others does not reject it: at end of message the supervised recipients are
deleted (``SMFIR_DELRCPT``) and the others get the message as sent.

It answers exactly the commands the negotiated protocol says must be
answered (Postfix reads one reply per event, none for ``MACRO``, ``ABORT``,
``QUIT`` and the ``SMFIP_NR_*`` events): one reply too many or too few and
Postfix is out of sync with us for the rest of the connection.

An exception while handling a command (a policy bug) is logged and becomes a
``451 4.3.0`` for the message: at once if the command wants a reply, else at
the next command of the message that does.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from milter.policy import Decision, Message, Policy
from milter.protocol import (
    PROTOCOL_VERSION,
    Abort,
    Action,
    AddHeader,
    Body,
    ChangeHeader,
    Command,
    Connect,
    Continue,
    Data,
    DefineMacro,
    DeleteRecipient,
    EndOfHeaders,
    EndOfMessage,
    Header,
    Helo,
    MacroStage,
    MailFrom,
    OptNeg,
    OptNegReply,
    ProtocolError,
    Quit,
    QuitNewConnection,
    RcptTo,
    RejectCode,
    Response,
    Step,
    TempFailCode,
    Unknown,
)
from rules.replies import TEMPFAIL
from rules.stamp import STAMP_HEADER, make_stamp

__all__ = ["CONTROL_HEADER_PREFIX", "MACRO_REQUESTS", "WANTED_ACTIONS", "WANTED_STEPS", "Session"]

log = logging.getLogger("casegate.milter")

CONTROL_HEADER_PREFIX = "x-casegate-"

EDIT_ACTIONS = Action.ADDHDRS | Action.CHGHDRS
WANTED_ACTIONS = EDIT_ACTIONS | Action.DELRCPT
# Events we do not need (HELO, body, unknown commands) and replies Postfix
# need not wait for (connect, each header): fewer round trips. DATA is taken
# (and answered at once) on purpose: declined, Postfix still sends its DATA
# macro frame and waits for nothing, so that lone frame sits unacknowledged
# until our kernel's delayed ACK fires and Nagle holds the header frames
# behind it: 40 ms added to every message (bench/milter_latency.py).
WANTED_STEPS = Step.NOHELO | Step.NOBODY | Step.NOUNKNOWN | Step.NR_CONN | Step.NR_HDR
# Asking replaces Postfix's default list for the stage, and stages not listed
# get no macros at all: ask for everything we use, where we use it.
MACRO_REQUESTS: tuple[tuple[MacroStage, tuple[str, ...]], ...] = (
    (MacroStage.CONNECT, ("j", "{client_addr}", "{client_name}")),
    (MacroStage.ENVFROM, ("i", "{auth_authen}", "{auth_type}", "{mail_addr}")),
    (MacroStage.ENVRCPT, ("i", "{rcpt_addr}")),
    (MacroStage.EOH, ("i",)),
    (MacroStage.EOM, ("i",)),
)

# Macro stages (command codes) by lifetime: connection-level ones survive a
# message, message-level ones are forgotten after it.
_CONNECTION_STAGES = ("C", "H")
_MESSAGE_STAGES_AFTER_MAIL = ("R", "T", "L", "N", "B", "E")
_LOOKUP_ORDER = ("E", "B", "N", "L", "T", "R", "M", "H", "C")

# Which negotiated flag means "no reply" for each command type.
_NO_REPLY_FLAG: dict[type, Step] = {
    Connect: Step.NR_CONN,
    Helo: Step.NR_HELO,
    MailFrom: Step.NR_MAIL,
    RcptTo: Step.NR_RCPT,
    Data: Step.NR_DATA,
    Header: Step.NR_HDR,
    EndOfHeaders: Step.NR_EOH,
    Body: Step.NR_BODY,
    Unknown: Step.NR_UNKN,
}
_NEVER_REPLY = (DefineMacro, Abort, Quit, QuitNewConnection)

_TEMPFAIL = TempFailCode(TEMPFAIL)
_CONTINUE = Continue()


def _macro_name(name: str) -> str:
    return name[1:-1] if name.startswith("{") and name.endswith("}") else name


def _unbracket(address: str) -> str:
    a = address.strip()
    if a.startswith("<") and a.endswith(">"):
        a = a[1:-1].strip()
    return a


class Session:
    """The state of one connection from Postfix's smtpd (or cleanup)."""

    def __init__(
        self,
        policy: Policy,
        *,
        secret: bytes,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        if not secret:
            raise ValueError("the stamp secret must not be empty")
        self._policy = policy
        self._secret = secret
        self._wall_clock = wall_clock
        self._steps: Step | None = None  # negotiated; None until OPTNEG
        self._can_edit = False
        self._can_delete_rcpt = False
        self._macros: dict[str, dict[str, str]] = {}
        self._client_addr = ""
        self._client_name = ""
        self._message: Message | None = None
        self._control_headers: dict[str, tuple[str, int]] = {}
        self._drop_supervised: Decision[RejectCode] | None = None
        self._failed = False
        self.closed = False

    # -- what the server needs to know ------------------------------------

    @property
    def negotiated(self) -> bool:
        return self._steps is not None

    @property
    def queue_id(self) -> str:
        """Postfix's queue ID (the ``i`` macro) once known, else ``""``."""
        return self.macro("i")

    @property
    def in_message(self) -> bool:
        return self._message is not None

    @property
    def message(self) -> Message | None:
        return self._message

    def macro(self, name: str) -> str:
        """A macro's latest value, by name with or without braces; ``""`` if unknown."""
        key = _macro_name(name)
        for stage in _LOOKUP_ORDER:
            values = self._macros.get(stage)
            if values is not None and key in values:
                return values[key]
        return ""

    def expects_reply(self, command: Command) -> bool:
        """Whether Postfix waits for a reply to this command."""
        if isinstance(command, OptNeg | EndOfMessage):
            return True
        if isinstance(command, _NEVER_REPLY):
            return False
        flag = _NO_REPLY_FLAG.get(type(command))
        return flag is None or self._steps is None or not (self._steps & flag)

    # -- the state machine ------------------------------------------------

    def feed(self, command: Command) -> list[Response]:
        """The responses to send for ``command`` (often none, at most a few).

        Raises :class:`ProtocolError` for a conversation that cannot go on
        (the server then closes the connection and Postfix applies
        ``milter_default_action``).
        """
        if self.closed:
            raise ProtocolError(f"{type(command).__name__} after QUIT")
        if self._steps is None:
            if not isinstance(command, OptNeg):
                raise ProtocolError(f"expected option negotiation, got {type(command).__name__}")
            return [self._negotiate(command)]
        if (
            self._failed
            and self._message is not None
            and not isinstance(command, MailFrom)
            and self.expects_reply(command)
        ):
            self._end_message_if(command)
            return [_TEMPFAIL]
        try:
            responses = self._dispatch(command)
        except ProtocolError:
            raise
        except Exception:
            log.exception(
                "internal error on %s from client [%s]: answering tempfail",
                type(command).__name__,
                self._client_addr or "?",
            )
            if self.expects_reply(command):
                self._end_message_if(command)
                return [_TEMPFAIL]
            if self._message is not None:
                self._failed = True
            return []
        return responses

    def _end_message_if(self, command: Command) -> None:
        # A 4xx at MAIL, end of headers or end of message ends the message; at
        # RCPT it only refuses that recipient.
        if isinstance(command, MailFrom | EndOfHeaders | EndOfMessage):
            self._reset_message()

    def _reply(self, command: Command, response: Response = _CONTINUE) -> list[Response]:
        return [response] if self.expects_reply(command) else []

    def _negotiate(self, offer: OptNeg) -> OptNegReply:
        if offer.version < 2:
            raise ProtocolError(f"milter protocol version {offer.version} is too old")
        version = min(offer.version, PROTOCOL_VERSION)
        actions = WANTED_ACTIONS & offer.actions
        self._can_edit = actions & EDIT_ACTIONS == EDIT_ACTIONS
        self._can_delete_rcpt = bool(actions & Action.DELRCPT)
        if not self._can_edit:
            log.warning(
                "MTA does not allow header changes (actions 0x%x): no stamp, no stripping",
                int(offer.actions),
            )
        macros: tuple[tuple[MacroStage, tuple[str, ...]], ...] = ()
        if offer.actions & Action.SETSYMLIST and version >= 6:
            actions |= Action.SETSYMLIST
            macros = MACRO_REQUESTS
        steps = WANTED_STEPS & offer.protocol
        self._steps = steps
        return OptNegReply(version, actions, steps, macros)

    def _dispatch(self, command: Command) -> list[Response]:
        match command:
            case DefineMacro(stage, macros):
                self._macros[stage] = {_macro_name(n): v for n, v in macros}
                return []
            case Connect(hostname, _family, _port, address):
                self._reset_message()
                self._client_addr = self.macro("client_addr") or address
                self._client_name = self.macro("client_name") or hostname
                return self._reply(command)
            case MailFrom(address, _args):
                return self._mail(command, address)
            case RcptTo(address, _args):
                return self._rcpt(command, address)
            case Header(name, value):
                self._header(name, value)
                return self._reply(command)
            case EndOfHeaders():
                return self._end_of_headers(command)
            case EndOfMessage():
                return self._end_of_message()
            case Abort():
                self._reset_message()
                return []
            case Quit():
                self._reset_message()
                self.closed = True
                return []
            case QuitNewConnection():
                self._reset_message()
                self._macros.clear()
                self._client_addr = self._client_name = ""
                return []
            case OptNeg():
                raise ProtocolError("second option negotiation on one connection")
            case Helo() | Data() | Body() | Unknown():
                return self._reply(command)
        raise ProtocolError(f"unhandled command {command!r}")  # pragma: no cover

    # -- per message --------------------------------------------------------

    def _reset_message(self) -> None:
        self._message = None
        self._control_headers = {}
        self._drop_supervised = None
        self._failed = False
        for stage in ("M", *_MESSAGE_STAGES_AFTER_MAIL):
            self._macros.pop(stage, None)

    def _current(self) -> Message:
        if self._message is None:  # RCPT or content without MAIL: be lenient
            self._message = self._new_message("")
        return self._message

    def _new_message(self, sender: str) -> Message:
        return Message(
            client_addr=self._client_addr or self.macro("client_addr"),
            client_name=self._client_name or self.macro("client_name"),
            sender=sender,
            authen=self.macro("auth_authen"),
            auth_type=self.macro("auth_type"),
            queue_id=self.queue_id,
        )

    def _mail(self, command: MailFrom, address: str) -> list[Response]:
        # A new MAIL FROM starts a new message even without an ABORT; keep
        # the macros Postfix sent for this very command.
        mail_macros = self._macros.get("M")
        self._reset_message()
        if mail_macros is not None:
            self._macros["M"] = mail_macros
        message = self._new_message(_unbracket(self.macro("mail_addr") or address))
        self._message = message
        decision = self._policy.check_sender(message)
        if decision is not None:
            self._log_decision("MAIL FROM", decision, message)
            self._reset_message()
            return self._reply(command, decision.code)
        return self._reply(command)

    def _rcpt(self, command: RcptTo, address: str) -> list[Response]:
        message = self._current()
        message.queue_id = self.queue_id or message.queue_id
        recipient = _unbracket(self.macro("rcpt_addr") or address)
        decision = self._policy.check_recipient(message, recipient)
        if decision is not None:
            self._log_decision(f"RCPT TO:<{recipient}>", decision, message)
            return self._reply(command, decision.code)
        message.recipients.append(recipient)
        if self._policy.is_supervised(recipient):
            message.supervised.append(_unbracket(address) or recipient)
        return self._reply(command)

    def _header(self, name: str, value: str) -> None:
        message = self._current()
        lower = name.lower()
        if lower == "from":
            message.from_values.append(value)
        elif lower == "subject":
            message.subjects.append(value)
        elif lower.startswith(CONTROL_HEADER_PREFIX):
            first, count = self._control_headers.get(lower, (name, 0))
            self._control_headers[lower] = (first, count + 1)

    def _end_of_headers(self, command: EndOfHeaders) -> list[Response]:
        message = self._current()
        message.queue_id = self.queue_id or message.queue_id
        if not message.supervised:
            return self._reply(command)  # not casegate's mail
        decision = self._policy.check_headers(message)
        if decision is None:
            return self._reply(command)
        if len(message.supervised) == len(message.recipients):
            self._log_decision("end of headers", decision, message)
            self._reset_message()
            return self._reply(command, decision.code)
        # Others get this message too: refuse it for the supervised addresses
        # only, by deleting them at end of message.
        others = len(message.recipients) - len(message.supervised)
        if self._can_delete_rcpt:
            self._drop_supervised = decision
            self._log_decision(
                f"end of headers (deleting {', '.join(message.supervised)}; "
                f"{others} other recipient(s) keep the message)",
                decision,
                message,
                verb="drop",
            )
        else:
            log.warning(
                "%s (rule %s) for a message to %d other recipient(s) as well, and the MTA"
                " does not allow deleting recipients: let through, the filter decides",
                decision.detail or decision.rule,
                decision.rule,
                others,
            )
        return self._reply(command)

    def _end_of_message(self) -> list[Response]:
        message = self._current()
        message.queue_id = self.queue_id or message.queue_id
        responses: list[Response] = []
        if self._drop_supervised is not None:
            responses.extend(DeleteRecipient(a) for a in message.supervised)
            responses.append(_CONTINUE)
            self._reset_message()
            return responses
        if not message.supervised:
            # Not casegate's mail: no stamp (it would leak a CSR's login and
            # address to the recipients), no header changed, not counted.
            responses.append(_CONTINUE)
            self._reset_message()
            return responses
        if self._can_edit:
            removed = 0
            # Postfix counts only the headers still there: delete from the
            # last occurrence to the first so each index is still right.
            for name, count in self._control_headers.values():
                for index in range(count, 0, -1):
                    responses.append(ChangeHeader(index, name, ""))
                    removed += 1
            stamp = make_stamp(
                secret=self._secret,
                authen=message.authen,
                client_addr=message.client_addr,
                queue_id=message.queue_id,
                timestamp=int(self._wall_clock()),
            )
            responses.append(AddHeader(STAMP_HEADER, stamp))
            log.info(
                "stamp authen=%s client=[%s] from=<%s>%s",
                message.authen or "-",
                message.client_addr or "?",
                message.sender,
                f"; removed {removed} incoming X-Casegate-* header(s)" if removed else "",
            )
        responses.append(_CONTINUE)
        self._policy.accepted(message)
        self._reset_message()
        return responses

    def _log_decision(
        self,
        where: str,
        decision: Decision[RejectCode] | Decision[TempFailCode],
        message: Message,
        *,
        verb: str = "",
    ) -> None:
        log.info(
            "%s at %s: from=<%s> client=[%s] authen=%s rule=%s%s: %s",
            verb or ("tempfail" if isinstance(decision.code, TempFailCode) else "reject"),
            where,
            message.sender,
            message.client_addr or "?",
            message.authen or "-",
            decision.rule,
            f" ({decision.detail})" if decision.detail else "",
            decision.code.reply,
        )
