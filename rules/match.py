"""Which case a message belongs to.

Order (DESIGN.md, "Case tags cannot be hijacked"): our own signed
Message-IDs in In-Reply-To/References first; then Message-IDs of messages we
stored, the case number in a plus-address (``support+CS0000123@``) and tags
in the subject. Each joins a case only when the sender already takes part in
it (customer or CC) or is an authenticated CSR: a signed Message-ID proves
the number, not the sender (a notification forwarded, a forged CSR quoting
one), so it gets no pass.
From anyone else, or with an unknown number, a new case opens; it notes the
number it mentioned and the stranger never joins the old case.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

Participants = Callable[[str], "set[str] | None"]  # number -> addresses, None if no such case


@dataclass(frozen=True)
class Match:
    number: str | None  # None: open a new case
    rule: str
    reason: str
    mentioned: tuple[str, ...] = ()  # numbers mentioned but not joined
    participants: frozenset[str] | None = None  # of the matched case, when the caller knows them
    signed: bool = False  # the message referred to mail we wrote (our signed Message-IDs)


def match_case(
    *,
    sender: str,
    is_csr: bool,
    signed_numbers: Sequence[str],
    stored_numbers: Sequence[str],
    address_number: str | None,
    subject_numbers: Sequence[str],
    participants: Participants,
) -> Match:
    """``signed_numbers``: from our HMAC-signed Message-IDs (newest first);
    ``stored_numbers``: cases of other referenced Message-IDs we stored."""
    sender = sender.lower()
    weak: list[tuple[str, str]] = [(n, "signed_message_id") for n in signed_numbers]
    weak += [(n, "stored_message_id") for n in stored_numbers]
    if address_number:
        weak.append((address_number, "plus_address"))
    weak += [(n, "subject_tag") for n in subject_numbers]
    mentioned: list[str] = []
    for number, rule in weak:
        people = participants(number)
        if people is None:
            if number not in mentioned:
                mentioned.append(number)
            continue
        if is_csr or sender in people:
            return Match(number, rule, f"{rule.replace('_', ' ')} {number}, sender takes part")
        if number not in mentioned:
            mentioned.append(number)
    if mentioned:
        return Match(
            None,
            "new_case_foreign_tag",
            f"mentions {', '.join(mentioned)} but the sender takes no part: new case",
            tuple(mentioned),
        )
    return Match(None, "new_case", "no case referenced")
