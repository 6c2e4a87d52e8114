"""Loop protection around ``rules.automatic``: our own mail coming back, hop
counts between helpdesks, and VERP envelope senders for exact bounces.

The order of the checks (each decision names its rule):

1. null sender, DSN reports, MAILER-DAEMON/postmaster (``rules.automatic``);
2. our own mail coming back: our signed loop header, our signed Message-ID,
   and the hop count carried by any casegate's loop header (another
   installation, or ours under an older secret): at ``MAX_HOPS`` it stops;
3. the remaining header and shape rules of ``rules.automatic``.

Pure: stdlib only.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass
from email.message import Message

from rules import limits, tokens
from rules.automatic import Verdict, detect_automatic

LOOP_HEADER = "Casegate-Loop"
MAX_HOPS = 3


def instance_id(secret: bytes) -> str:
    """A public name for one installation (the same on all hosts sharing a secret)."""
    return hashlib.sha256(b"casegate-instance\0" + secret).hexdigest()[:12]


def _mac(secret: bytes, text: str, length: int = 16) -> str:
    digest = hmac.new(secret, text.encode(), hashlib.sha256).digest()
    return tokens.b32_prefix(digest, length)


def make_loop_header(secret: bytes, hops: int) -> str:
    ident = instance_id(secret)
    body = f"v=1; id={ident}; hops={hops}"
    return f"{body}; sig={_mac(secret, body)}"


@dataclass(frozen=True)
class LoopInfo:
    ours: bool
    hops: int


_LOOP_RE = re.compile(r"v=1;\s*id=([0-9a-f]{12});\s*hops=(\d{1,4});\s*sig=([a-z2-7]+)", re.I)


def read_loop_headers(values: list[str], secret: bytes) -> LoopInfo | None:
    """The most telling loop header: ours if any verifies, else the highest hop count."""
    best: LoopInfo | None = None
    for value in values:
        m = _LOOP_RE.search(" ".join(str(value).split()))
        if m is None:
            continue
        ident, hops, sig = m.group(1).lower(), int(m.group(2)), m.group(3).lower()
        body = f"v=1; id={ident}; hops={hops}"
        ours = ident == instance_id(secret) and hmac.compare_digest(sig, _mac(secret, body))
        info = LoopInfo(ours, hops)
        if ours:
            return info
        if best is None or hops > best.hops:
            best = info
    return best


def _header_values(msg: Message, name: str) -> list[str]:
    """The first ``limits.MAX_VALUES_READ`` values of ``name``, each cut to
    ``limits.MAX_PARSED_CHARS``; never raises."""
    wanted = name.lower()
    values: list[str] = []
    try:
        for key, raw in msg.raw_items():
            if len(values) >= limits.MAX_VALUES_READ:
                break
            if isinstance(key, str) and key.lower() == wanted:
                values.append(str(raw)[: limits.MAX_PARSED_CHARS])
    except Exception:
        pass
    return values


def hops_of(msg: Message, secret: bytes) -> int:
    info = read_loop_headers(_header_values(msg, LOOP_HEADER), secret)
    return info.hops if info else 0


def own_mail(msg: Message, *, secret: bytes, prefix: str, max_hops: int = MAX_HOPS) -> Verdict | None:
    info = read_loop_headers(_header_values(msg, LOOP_HEADER), secret)
    if info is not None and info.ours:
        return Verdict("own_loop_header", f"our own {LOOP_HEADER} header came back", "autoreply")
    for mid in tokens.split_message_ids(" ".join(_header_values(msg, "Message-ID"))):
        if tokens.message_id_number(secret, mid, prefix):
            return Verdict("own_message_id", f"Message-ID {mid} is one we wrote", "autoreply")
    if info is not None and info.hops >= max_hops:
        return Verdict("hop_limit", f"{LOOP_HEADER} hops={info.hops} reached the limit "
                       f"of {max_hops}", "autoreply")
    return None


def detect(msg: Message, envelope_sender: str | None, *, secret: bytes, prefix: str,
           max_hops: int = MAX_HOPS) -> Verdict | None:
    """Whether ``msg`` is automatic mail: the one entry point the engine calls.

    ``rules.automatic.detect_automatic`` (the one walk of the rules) with our
    own-mail checks after its early rules (``automatic.EARLY_RULES``).
    Never raises."""
    return detect_automatic(
        msg, envelope_sender,
        own_mail=lambda m: own_mail(m, secret=secret, prefix=prefix, max_hops=max_hops),
    )


# -- VERP: the envelope sender of our mail names the case and the message ----

_VERP_RE = re.compile(r"bounce-([a-z]+\d+)-(\d+)-([a-z2-7]+)", re.I)


def verp_address(secret: bytes, mailbox: str, number: str, message_id: int) -> str:
    """``support+bounce-cs0000123-42-<hmac>@example.com``"""
    tag = f"bounce-{number.lower()}-{message_id}"
    return tokens.plus_address(mailbox, f"{tag}-{_mac(secret, tag, 10)}")


@dataclass(frozen=True)
class Verp:
    number: str
    message_id: int


def read_verp(secret: bytes, address: str, prefix: str) -> Verp | None:
    """The case and message a bounce address names, or None (not ours, forged)."""
    local = address.partition("@")[0]
    _, plus, tag = local.partition("+")
    m = _VERP_RE.fullmatch(tag) if plus else None
    if m is None:
        return None
    number, msg_id, sig = m.group(1).upper(), int(m.group(2)), m.group(3).lower()
    if not re.fullmatch(tokens.number_pattern(prefix), number):
        return None
    expected = _mac(secret, f"bounce-{number.lower()}-{msg_id}", 10)
    if not hmac.compare_digest(sig, expected):
        return None
    return Verp(number, msg_id)
