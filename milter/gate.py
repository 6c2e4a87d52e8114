"""The recipient gate: a Postfix policy service that lets a supervised
recipient in only while the casegate milter takes part in the SMTP session.

Why: the milter is connected per SMTP session, before Postfix knows any
recipient, so its ``default_action`` applies to *every* recipient. With
``default_action=accept`` a casegate outage touches nobody's mail, but
supervised mail would get in unchecked (no blacklist, no stamp). Postfix
consults a policy service per recipient, and only for the recipients an
access map sends to it (``check_recipient_access`` with a restriction class
naming ``check_policy_service``, docs/postfix.md). This gate answers:

* ``DUNNO`` when a milter connection from this very SMTP client (client
  address and port) is open here: the milter will judge the message;
* a ``451 4.3.0`` for that recipient otherwise (the milter is not in this
  session: it was down when the client connected, or Postfix gave up on it).

And when casegate is down, nothing answers the policy query and Postfix's
``default_action`` of the policy service (a 451 too) applies: supervised
mail waits in the client's queue, everyone else's flows.

The gate listens on the milter's own socket: :class:`milter.server.MilterServer`
tells the two protocols apart by their first bytes (a milter frame starts
with its 4-byte length, a policy request with ``name=``). Protocol: Postfix's
SMTPD_POLICY_README (``name=value`` lines, an empty line, one ``action=``
line and an empty line back; several requests per connection). Pure: no I/O.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Mapping
from typing import TypeVar

from rules.replies import Reply

__all__ = ["GATE_DEFER", "MAX_REQUEST_BYTES", "Gate", "looks_like_policy_request", "parse_request"]

log = logging.getLogger("casegate.milter.gate")

GATE_DEFER = Reply(451, "4.3.0", "casegate milter not in this session, try again later")
MAX_REQUEST_BYTES = 64 * 1024
_FIRST_ATTRIBUTE = re.compile(rb"[a-z_]{1,64}=")
K = TypeVar("K")


def _drop(counter: Counter[K], key: K) -> None:
    counter[key] -= 1
    if counter[key] <= 0:
        del counter[key]


def looks_like_policy_request(first_bytes: bytes) -> bool:
    """Whether a connection's first bytes are a policy request, not a milter frame."""
    return _FIRST_ATTRIBUTE.match(first_bytes) is not None


def parse_request(block: bytes) -> dict[str, str]:
    """``name=value`` lines (without the final empty line) as a dict; ``ValueError``
    for a line without ``=``."""
    out: dict[str, str] = {}
    for line in block.decode("utf-8", "surrogateescape").split("\n"):
        if not line:
            continue
        name, sep, value = line.partition("=")
        if not sep:
            raise ValueError(f"policy request line without '=': {line[:80]!r}")
        out[name] = value
    return out


def _client_key(address: str, port: str | int) -> tuple[str, int]:
    a = address.strip().lower()
    if a.startswith("ipv6:"):
        a = a[5:]
    try:
        p = int(port)
    except (TypeError, ValueError):
        p = 0
    return a, p


class Gate:
    """Which SMTP clients have a milter session open here, and the answer for a recipient."""

    def __init__(self) -> None:
        self._sessions: Counter[tuple[str, int]] = Counter()
        self._addresses: Counter[str] = Counter()

    def opened(self, address: str, port: int) -> tuple[str, int]:
        key = _client_key(address, port)
        self._sessions[key] += 1
        self._addresses[key[0]] += 1
        return key

    def closed(self, key: tuple[str, int]) -> None:
        _drop(self._sessions, key)
        _drop(self._addresses, key[0])

    def __len__(self) -> int:
        return sum(self._sessions.values())

    def answer(self, request: Mapping[str, str]) -> str:
        """The ``action=`` value for one policy request."""
        if request.get("request") != "smtpd_access_policy":
            return "DUNNO"
        address, port = _client_key(request.get("client_address", ""), request.get("client_port", ""))
        if port and (address, port) in self._sessions:
            return "DUNNO"
        if not port and address in self._addresses:
            return "DUNNO"  # no port to tell sessions apart: the address is enough
        log.warning(
            "gate: no milter session for client [%s]:%s (server port %s): %s for <%s>",
            address or "?",
            port or "?",
            request.get("server_port", "?"),
            GATE_DEFER.code,
            request.get("recipient", ""),
        )
        return str(GATE_DEFER)
