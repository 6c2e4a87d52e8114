"""One hand-over from Postfix: the envelope, the bytes, XFORWARD's attributes."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass


@dataclass(frozen=True)
class Delivery:
    mail_from: str
    rcpt_tos: tuple[str, ...]
    data: bytes
    client_addr: str = ""
    client_name: str = ""
    helo: str = ""
    queue_id: str = ""
    # DKIM results, verified before the engine runs: (domain, passed, reason)
    dkim: tuple[tuple[str, bool, str], ...] = ()

    def key(self, rcpt: str) -> str:
        """Idempotency key: the same envelope and bytes give the same key."""
        digest = hashlib.sha256()
        for part in (self.mail_from.encode(), rcpt.lower().encode(), self.data):
            digest.update(len(part).to_bytes(8, "big"))
            digest.update(part)
        return digest.hexdigest()
