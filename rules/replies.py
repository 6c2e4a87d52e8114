"""SMTP replies as values.

Call sites name a constant (``OK``, ``TEMPFAIL``) or build one with a reason;
they never write reply strings by hand. After the queue (the content filter)
only ``OK`` and the 4xx family are allowed: a 5xx there makes Postfix bounce
to a sender who is often forged (backscatter).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace


@dataclass(frozen=True)
class Reply:
    code: int
    enhanced: str
    text: str

    def __post_init__(self) -> None:
        if not 200 <= self.code <= 599:
            raise ValueError(f"SMTP reply code out of range: {self.code}")
        if "\r" in self.text or "\n" in self.text:
            raise ValueError("SMTP reply text must be one line")

    @property
    def is_temporary(self) -> bool:
        return 400 <= self.code < 500

    @property
    def is_permanent(self) -> bool:
        return self.code >= 500

    def because(self, text: str) -> Reply:
        """The same reply with another text (kept to one printable line)."""
        clean = " ".join(text.split())[:200] or self.text
        return replace(self, text=clean)

    def __str__(self) -> str:
        return f"{self.code} {self.enhanced} {self.text}"


OK = Reply(250, "2.0.0", "Ok: queued by casegate")
OK_DUPLICATE = Reply(250, "2.0.0", "Ok: already stored")
OK_DISCARDED = Reply(250, "2.0.0", "Ok: discarded")
OK_QUARANTINED = Reply(250, "2.0.0", "Ok: held in casegate's quarantine")
TEMPFAIL = Reply(451, "4.3.0", "Temporary failure, try again later")
TEMPFAIL_POLICY = Reply(451, "4.7.1", "Rate limit exceeded, try again later")
REJECT_POLICY = Reply(550, "5.7.1", "Message rejected")


# -- the 250 that names the case --------------------------------------------
# Postfix logs the filter's reply text in ``status=sent (…)``: a sysadmin
# following a message in mail.log sees which case it went to.

_STORED = re.compile(r"Ok: [A-Z]{1,8}[0-9]+")


def stored(number: str | None) -> Reply:
    """The 250 for a message stored on case ``number`` (new or appended):
    ``250 2.0.0 Ok: CS0000123``; the plain :data:`OK` when it made no case."""
    return Reply(250, "2.0.0", f"Ok: {number}") if number else OK


def duplicate(number: str | None) -> Reply:
    """A delivery seen before: ``250 2.0.0 Ok: CS0000123 (already stored)``."""
    return Reply(250, "2.0.0", f"Ok: {number} (already stored)") if number else OK_DUPLICATE


def is_stored(reply: Reply) -> bool:
    """True for a plain "stored" 250 (:data:`OK` or :func:`stored`), false
    for a duplicate, a discard, a quarantine or a failure."""
    return reply == OK or _STORED.fullmatch(reply.text) is not None
