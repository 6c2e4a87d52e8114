"""The ``X-Casegate-Auth`` stamp: who authenticated, signed by the milter.

The milter deletes every incoming ``X-Casegate-*`` header and adds one stamp
per message; the content filter trusts a SASL identity only from a stamp that
:func:`verify_stamp` accepts. Pure and stdlib only.

Wire form (one line, fields in this order, values percent-encoded)::

    v=1; authen=alice@example.com; addr=127.0.0.2; qid=4AbC; t=1700000000; sig=...

``sig`` is the unpadded base64url HMAC-SHA256, keyed with the shared secret,
over ``b"X-Casegate-Auth\\0"`` followed by the text before ``; sig=`` exactly as
:func:`make_stamp` writes it. Verification parses the fields, rebuilds that
text from the parsed values and compares signatures in constant time, so any
change to a field, to the order, or to the version fails.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass
from urllib.parse import quote, unquote

__all__ = ["STAMP_HEADER", "STAMP_VERSION", "Stamp", "make_stamp", "verify_stamp"]

STAMP_HEADER = "X-Casegate-Auth"
STAMP_VERSION = 1
# How far in the future a stamp's time may be (clock skew between hosts).
MAX_FUTURE_SKEW = 300

_FIELDS = ("v", "authen", "addr", "qid", "t")
_CONTEXT = STAMP_HEADER.encode("ascii") + b"\0"
_SAFE = "@.:+-_!~*'()"
_SIG_LEN = 43  # 32 bytes in unpadded base64url


@dataclass(frozen=True)
class Stamp:
    authen: str
    client_addr: str
    queue_id: str
    timestamp: int
    version: int = STAMP_VERSION

    @property
    def authenticated(self) -> bool:
        return bool(self.authen)


def _enc(value: str) -> str:
    return quote(value, safe=_SAFE, errors="surrogateescape")


def _canonical(authen: str, client_addr: str, queue_id: str, timestamp: int) -> str:
    return (
        f"v={STAMP_VERSION}; authen={_enc(authen)}; addr={_enc(client_addr)}; "
        f"qid={_enc(queue_id)}; t={timestamp}"
    )


def _sign(secret: bytes, text: str) -> str:
    mac = hmac.new(secret, _CONTEXT + text.encode("utf-8", "surrogateescape"), hashlib.sha256)
    return base64.urlsafe_b64encode(mac.digest()).rstrip(b"=").decode("ascii")


def make_stamp(
    *, secret: bytes, authen: str, client_addr: str, queue_id: str, timestamp: int
) -> str:
    """The header value (without the name) for one message."""
    if not secret:
        raise ValueError("the stamp secret must not be empty")
    if timestamp < 0:
        raise ValueError("the stamp timestamp must not be negative")
    text = _canonical(authen, client_addr, queue_id, int(timestamp))
    return f"{text}; sig={_sign(secret, text)}"


def verify_stamp(value: str, *, secret: bytes, max_age: int | None, now: int) -> Stamp | None:
    """The stamp when ``value`` is a genuine, fresh stamp; None for anything else.

    ``max_age`` (seconds) bounds how old the stamp may be; None disables the age
    check. A stamp more than :data:`MAX_FUTURE_SKEW` seconds in the future is
    refused either way.
    """
    if not secret:
        return None
    # Header folding may have inserted CRLF + whitespace between fields.
    parts = [p.strip() for p in value.replace("\r", " ").replace("\n", " ").split(";")]
    if len(parts) != len(_FIELDS) + 1:
        return None
    fields: dict[str, str] = {}
    for expected, part in zip((*_FIELDS, "sig"), parts, strict=True):
        name, eq, raw = part.partition("=")
        if not eq or name != expected or any(c.isspace() for c in raw):
            return None
        fields[name] = raw
    if fields["v"] != str(STAMP_VERSION):
        return None
    t = fields["t"]
    if not t.isascii() or not t.isdigit() or len(t) > 12 or (len(t) > 1 and t[0] == "0"):
        return None
    timestamp = int(t)
    authen = unquote(fields["authen"], errors="surrogateescape")
    client_addr = unquote(fields["addr"], errors="surrogateescape")
    queue_id = unquote(fields["qid"], errors="surrogateescape")
    sig = fields["sig"]
    if len(sig) != _SIG_LEN or not sig.isascii():  # compare_digest wants ASCII str
        return None
    text = _canonical(authen, client_addr, queue_id, timestamp)
    if not hmac.compare_digest(_sign(secret, text), sig):
        return None
    # The rebuilt text must be what was signed, byte for byte: this refuses
    # alternative encodings of the same values ("%61" for "a").
    rebuilt = "; ".join(f"{n}={fields[n]}" for n in _FIELDS)
    if rebuilt != text:
        return None
    if timestamp > now + MAX_FUTURE_SKEW:
        return None
    if max_age is not None and now - timestamp > max_age:
        return None
    return Stamp(authen=authen, client_addr=client_addr, queue_id=queue_id, timestamp=timestamp)
