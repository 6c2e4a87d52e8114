"""Who joins a case as a participant (issue 10, section 5). Pure.

The Cc: addresses of a customer's (or a participant's) message to a case
become participants of it: they may write on the case, and a CSR's answer
goes to them in Cc when the pool says so. Only the Cc: of a message that
joined the case (the match rules: the sender already takes part) counts,
never a tag in a stranger's subject; never our own addresses (CSRs,
supervised addresses, departments, any +tag of them), never role addresses
that must not get mail from us (noreply@, mailer-daemon@ …), and never more
than the pool's cap per case.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass

from rules.automatic import never_autoreply_to
from rules.decision import Directory, base_address


@dataclass(frozen=True)
class Joining:
    added: tuple[str, ...]
    refused: tuple[tuple[str, str], ...]  # (address, why not)


def joining(cc: Iterable[str], *, sender: str, known: Collection[str], directory: Directory,
            limit: int) -> Joining:
    """The Cc's that become participants, in order, and those refused with why.

    ``known``: the case's participants now (the customer included); ``limit``
    caps the participants other than the customer."""
    have = {a.lower() for a in known}
    # the customer is one of ``known`` and does not count against the cap
    room = max(0, limit - max(0, len(have) - 1))
    added: list[str] = []
    refused: list[tuple[str, str]] = []
    for address in dict.fromkeys(a.strip().lower() for a in cc if a and a.strip()):
        if address == sender.lower() or address in have or base_address(address) in {
                base_address(h) for h in have}:
            continue
        if directory.is_ours(address):
            refused.append((address, "one of our own addresses"))
            continue
        why = never_autoreply_to(address)
        if why:
            refused.append((address, why))
            continue
        if address.rpartition("@")[2].startswith("["):
            refused.append((address, "an address literal"))
            continue
        if len(added) >= room:
            refused.append((address, f"the case has {limit} participants already (the cap)"))
            continue
        added.append(address)
    return Joining(tuple(added), tuple(refused))
