"""What the milter decides, apart from how it speaks.

:class:`Policy` is what a :class:`milter.session.Session` asks; :class:`StaticPolicy`
is the one the CLI builds from the store and the one tests build by hand.

The milter judges only mail for supervised addresses; everything else on the
server is none of its business. So decisions are per recipient where SMTP
allows it: at RCPT TO a supervised recipient may be refused (blacklisted
sender: 5xx) or held (flood: 4xx) while every other recipient of the same
message is accepted untouched. Header rules (several From: addresses, a
From: or subject on the blacklist) run at the end of the headers only when a
supervised recipient was accepted. Each decision carries the name of the rule
that fired and a detail for the log.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import re
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from email.headerregistry import AddressHeader, HeaderRegistry
from email.utils import parseaddr
from typing import Generic, Protocol, TypeVar, cast

from milter.protocol import RejectCode, TempFailCode
from rules.blacklist import Blacklist, Entry, canonical_address, normalize_address, strip_tag
from rules.replies import REJECT_POLICY, TEMPFAIL_POLICY

__all__ = [
    "MULTIPLE_FROM",
    "REJECT_BLACKLIST",
    "Decision",
    "EntriesSource",
    "Message",
    "Policy",
    "RateLimit",
    "StaticPolicy",
    "from_header_problem",
    "parse_from",
    "rate_key",
]

log = logging.getLogger("casegate.milter.policy")

# What the SMTP client is told. The blacklist entry's reason stays in our log.
REJECT_BLACKLIST = RejectCode(REJECT_POLICY.because("Message rejected by the recipient's policy"))
MULTIPLE_FROM = RejectCode(REJECT_POLICY.because("multiple From: addresses are not accepted"))
RATE_LIMITED = TempFailCode(TEMPFAIL_POLICY)

CodeT = TypeVar("CodeT", TempFailCode, RejectCode)

EntriesSource = Callable[[], Iterable[Entry]] | Callable[[], Awaitable[Iterable[Entry]]]


@dataclass(frozen=True, slots=True)
class Decision(Generic[CodeT]):
    code: CodeT
    rule: str
    detail: str = ""


@dataclass(slots=True)
class Message:
    """One message as the session has seen it so far. Policies read it; only
    the session writes it."""

    client_addr: str = ""
    client_name: str = ""
    sender: str = ""  # envelope sender without brackets; "" is the null sender
    authen: str = ""  # SASL login ({auth_authen}), "" when none
    auth_type: str = ""
    queue_id: str = ""
    recipients: list[str] = field(default_factory=list)  # accepted so far
    # The accepted recipients that are supervised, as the client wrote them
    # in RCPT TO (the form Postfix wants back to delete one).
    supervised: list[str] = field(default_factory=list)
    from_values: list[str] = field(default_factory=list)  # raw From: values
    subjects: list[str] = field(default_factory=list)  # raw Subject: values


class Policy(Protocol):
    async def prepare(self) -> None:
        """Called on the event loop before each MAIL FROM. Refresh what needs
        refreshing; must never raise for a transient problem, nor block."""

    def is_supervised(self, address: str) -> bool:
        """Whether mail for ``address`` is casegate's business."""

    def check_sender(self, message: Message) -> Decision[RejectCode] | None:
        """At MAIL FROM. Whatever it says applies to every recipient, so a
        policy that judges only supervised mail answers None here."""

    def check_recipient(
        self, message: Message, recipient: str
    ) -> Decision[TempFailCode] | Decision[RejectCode] | None:
        """At each RCPT TO; ``recipient`` without brackets. Refuses that recipient only."""

    def check_headers(self, message: Message) -> Decision[RejectCode] | None:
        """At the end of the headers; the session asks only when a supervised
        recipient was accepted."""

    def accepted(self, message: Message) -> None:
        """At the end of a message that passed every check (count it)."""


@dataclass(frozen=True, slots=True)
class RateLimit:
    """At most ``messages`` messages per sender to supervised addresses per ``window`` seconds."""

    messages: int
    window: float

    def __post_init__(self) -> None:
        if self.messages < 1:
            raise ValueError("a rate limit allows at least one message")
        if self.window <= 0:
            raise ValueError("a rate limit window must be positive")


class _SlidingWindow:
    """Timestamps of recent messages per key; O(1) amortized per call."""

    _SWEEP_EVERY = 1024

    def __init__(self, limit: RateLimit, clock: Callable[[], float]) -> None:
        self._limit = limit
        self._clock = clock
        self._hits: dict[str, deque[float]] = {}
        self._calls = 0

    def _recent(self, key: str, now: float) -> deque[float] | None:
        horizon = now - self._limit.window
        self._calls += 1
        if self._calls % self._SWEEP_EVERY == 0:
            stale = [k for k, q in self._hits.items() if not q or q[-1] <= horizon]
            for k in stale:
                del self._hits[k]
        hits = self._hits.get(key)
        while hits and hits[0] <= horizon:
            hits.popleft()
        return hits

    def full(self, key: str) -> bool:
        hits = self._recent(key, self._clock())
        return hits is not None and len(hits) >= self._limit.messages

    def record(self, key: str) -> None:
        now = self._clock()
        hits = self._recent(key, now)
        if hits is None:
            hits = self._hits[key] = deque()
        hits.append(now)


_HEADERS = HeaderRegistry()
_FOLD = re.compile(r"\r?\n(?=[ \t])")


def _unfold(value: str) -> str:
    return _FOLD.sub("", value)


def parse_from(values: list[str]) -> tuple[str | None, list[str]]:
    """``(problem, addresses)`` for the From: header values of a message.

    ``problem`` says why they are refused, or is None when they are fine:
    one From: header with one mailbox is fine (and so is none at all: not
    our rule); several From: headers, several addresses in one, or group
    syntax are refused, as they make "who wrote this" ambiguous.
    ``addresses`` are the addr-specs found, for the blacklist.
    """
    if len(values) > 1:
        return f"{len(values)} From: headers", _addresses(values)
    if not values:
        return None, []
    value = _unfold(values[0])
    if not any(ch in value for ch in ",:;"):
        # One mailbox without group syntax: the cheap parser is enough.
        addr = parseaddr(value)[1]
        return None, [addr] if addr else []
    try:
        header = _HEADERS("From", value)
    except Exception:  # the parser records defects rather than raising; be safe
        return None, []
    if not isinstance(header, AddressHeader):
        return None, []
    addresses = [a.addr_spec for a in header.addresses]
    if any(g.display_name is not None for g in header.groups):
        return "group syntax in From:", addresses
    if len(addresses) > 1:
        return f"{len(addresses)} addresses in From:", addresses
    return None, addresses


def from_header_problem(values: list[str]) -> str | None:
    """Why these From: header values are refused, or None (see :func:`parse_from`)."""
    return parse_from(values)[0]


def _addresses(values: list[str]) -> list[str]:
    out: list[str] = []
    for v in values:
        out.extend(parse_from([v])[1])
    return out


# Senders that speak for a mail system, not a person: every bounce (null
# sender) and most delivery reports share them. Counting them as one sender
# would let the first 30 bounces of the hour, from anywhere, hold all others.
_SYSTEM_SENDERS = frozenset({"", "postmaster", "mailer-daemon"})


def rate_key(sender: str, client_addr: str) -> str:
    """The flood counter a message counts against.

    A person's address (plus-tags and case ignored) for ordinary mail. The
    null sender and ``postmaster@``/``MAILER-DAEMON@`` senders are counted per
    reporting client (the SMTP client's address): each MTA that sends us
    bounces has its own allowance, and no single bucket for the whole
    internet exists.
    """
    parts = canonical_address(sender)
    if parts is None:
        local = sender.strip().strip("<>").lower()
        if local and local not in _SYSTEM_SENDERS:
            return local  # an unparsable sender: counted as itself
        return f"<>@[{client_addr or 'unknown'}]"
    local, domain = parts
    untagged = strip_tag(local)
    if untagged in _SYSTEM_SENDERS:
        return f"<>@[{client_addr or 'unknown'}]"
    return f"{untagged}@{domain}"


class StaticPolicy:
    """The blacklist, the supervised addresses and the rate limit, in memory.

    ``blacklist`` is the list to start with. ``entries_source``, when given,
    returns fresh entries (a sync callable runs in a worker thread, an async one
    is awaited); :meth:`prepare` calls it at the first message and then at most
    every ``refresh_interval`` seconds of ``clock``. A source that raises, or
    takes longer than ``refresh_timeout``, leaves the last good list in place:
    a database hiccup never holds up mail. Invalid entries are skipped and
    logged, never fatal.

    ``supervised`` holds ``user@domain`` and ``@domain`` patterns (the
    support addresses); one that :func:`~rules.blacklist.normalize_address`
    refuses is skipped and logged, as are invalid blacklist entries.
    ``rate_limit`` counts messages per envelope sender (plus-tags ignored;
    bounces per reporting client, :func:`rate_key`) accepted for a supervised
    address; once a sender has used the allowance, further supervised
    recipients get a 451 at RCPT TO until the window slides past. ``None``
    disables it.
    SASL-authenticated senders are exempt unless ``exempt_authenticated`` is
    False: they are staff, and a busy CSR writes to the support address a lot.
    """

    def __init__(
        self,
        blacklist: Blacklist,
        supervised: Iterable[str],
        *,
        rate_limit: RateLimit | None = None,
        clock: Callable[[], float] = time.monotonic,
        entries_source: EntriesSource | None = None,
        supervised_source: Callable[[], Iterable[str]] | None = None,
        refresh_interval: float = 5.0,
        refresh_timeout: float = 1.0,
        exempt_authenticated: bool = True,
    ) -> None:
        self._blacklist = blacklist
        self._addresses: set[str] = set()
        self._domains: set[str] = set()
        self._supervised_patterns: tuple[str, ...] = ()
        self._set_supervised(supervised)
        self._supervised_source = supervised_source
        for entry, why in blacklist.skipped:
            log.error("blacklist entry %r skipped: %s", entry.pattern, why)
        self._rate_limit = rate_limit
        self._window = _SlidingWindow(rate_limit, clock) if rate_limit else None
        self._clock = clock
        self._source = entries_source
        self._refresh_interval = refresh_interval
        self._refresh_timeout = refresh_timeout
        self._exempt_authenticated = exempt_authenticated
        self._next_refresh: float | None = None  # None: refresh at the first message
        self._refreshing: asyncio.Task[None] | None = None
        self._last_skipped: tuple[tuple[Entry, str], ...] = blacklist.skipped
        self.refresh_failures = 0

    @property
    def blacklist(self) -> Blacklist:
        return self._blacklist

    def _set_supervised(self, supervised: Iterable[str]) -> None:
        patterns = tuple(supervised)
        if patterns == self._supervised_patterns:
            return
        addresses: set[str] = set()
        domains: set[str] = set()
        for pattern in patterns:
            try:
                p = normalize_address(pattern, allow_domain=True, what="supervised address")
            except ValueError as exc:
                # A bad row in the store must never stop the milter (and with
                # it, all mail): leave it out and say so.
                log.error("%s: skipped; fix or remove it", exc)
                continue
            if p.startswith("@"):
                domains.add(p[1:])
            else:
                addresses.add(p)
        self._addresses, self._domains = addresses, domains
        self._supervised_patterns = patterns

    def is_supervised(self, address: str) -> bool:
        parts = canonical_address(address)
        if parts is None:
            return False
        local, domain = parts
        if domain in self._domains:
            return True
        return f"{local}@{domain}" in self._addresses or (
            f"{strip_tag(local)}@{domain}" in self._addresses
        )

    # -- refreshing -------------------------------------------------------

    async def prepare(self) -> None:
        if self._source is None:
            return
        if self._refreshing is not None:
            return  # a slow refresh is still running: use the list we have
        now = self._clock()
        if self._next_refresh is not None and now < self._next_refresh:
            return
        self._next_refresh = now + self._refresh_interval
        task = asyncio.create_task(self._refresh(), name="blacklist-refresh")
        self._refreshing = task
        try:
            async with asyncio.timeout(self._refresh_timeout):
                await asyncio.shield(task)
        except TimeoutError:
            log.warning(
                "blacklist source slower than %.1fs: using the previous list (%d entries)",
                self._refresh_timeout,
                len(self._blacklist),
            )

    async def refresh(self) -> None:
        """Reload from the source now (the CLI may call this at start-up)."""
        self._next_refresh = None
        await self.prepare()

    async def _refresh(self) -> None:
        source = self._source
        assert source is not None
        try:
            if inspect.iscoroutinefunction(source):
                entries = list(await source())
                blacklist = Blacklist(entries, strict=False)
            else:
                sync_source = cast(Callable[[], Iterable[Entry]], source)
                blacklist = await asyncio.to_thread(_load, sync_source)
        except Exception as exc:
            self.refresh_failures += 1
            log.warning(
                "blacklist source failed (%s: %s): keeping the last list (%d entries)",
                type(exc).__name__,
                exc,
                len(self._blacklist),
            )
            return
        finally:
            self._refreshing = None
        supervised_source = self._supervised_source
        if supervised_source is not None:
            # Mailboxes added since start are judged (and stamped) too.
            try:
                self._set_supervised(await asyncio.to_thread(lambda: list(supervised_source())))
            except Exception as exc:
                log.warning("supervised addresses could not be re-read (%s): keeping the last list", exc)
        if blacklist.skipped != self._last_skipped:
            for entry, why in blacklist.skipped:
                log.error("blacklist entry %r skipped: %s", entry.pattern, why)
            self._last_skipped = blacklist.skipped
        self._blacklist = blacklist

    # -- decisions --------------------------------------------------------

    def check_sender(self, message: Message) -> Decision[RejectCode] | None:
        # The sender alone decides nothing: the same sender may write to
        # anyone else on this server. The blacklist applies per recipient.
        return None

    def _rate_limited(self, message: Message) -> bool:
        return self._window is not None and not (self._exempt_authenticated and message.authen)

    def check_recipient(
        self, message: Message, recipient: str
    ) -> Decision[TempFailCode] | Decision[RejectCode] | None:
        if not self.is_supervised(recipient):
            return None
        entry = self._blacklist.match_sender(message.sender)
        if entry is not None:
            return Decision(REJECT_BLACKLIST, "blacklist", _describe(entry))
        if self._window is None or self._rate_limit is None or not self._rate_limited(message):
            return None
        key = rate_key(message.sender, message.client_addr)
        if not self._window.full(key):
            return None
        limit = self._rate_limit
        return Decision(
            RATE_LIMITED,
            "rate-limit",
            f"sender {key} over {limit.messages} messages per {limit.window:g}s"
            " to supervised addresses",
        )

    def check_headers(self, message: Message) -> Decision[RejectCode] | None:
        if not message.supervised:
            return None  # not our business (the session does not even ask)
        problem, from_addresses = parse_from(message.from_values)
        if problem is not None:
            return Decision(MULTIPLE_FROM, "multiple-from", problem)
        # An address entry also applies to the From: header, which MAIL FROM
        # could not see (forwarders and lists rewrite the envelope sender).
        entry = self._blacklist.verdict([*from_addresses, message.sender], message.subjects)
        if entry is None:
            return None
        rule = "blacklist-subject" if entry.subject else "blacklist"
        return Decision(REJECT_BLACKLIST, rule, _describe(entry))

    def accepted(self, message: Message) -> None:
        # Counted when accepted, so that rejected or abandoned attempts do not
        # use up a sender's allowance; one message counts once however many
        # supervised addresses it reaches, and not at all if it reaches none.
        if self._window is None or not self._rate_limited(message):
            return
        if message.supervised:
            self._window.record(rate_key(message.sender, message.client_addr))


def _load(source: Callable[[], Iterable[Entry]]) -> Blacklist:
    return Blacklist(list(source()), strict=False)


def _describe(entry: Entry) -> str:
    text = f"pattern {entry.pattern}"
    if entry.subject:
        text += f" subject /{entry.subject}/"
    if entry.reason:
        text += f" ({entry.reason})"
    return text
