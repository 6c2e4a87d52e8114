"""The cached header registry: the same header objects as the stdlib's, one
class per field name."""

from __future__ import annotations

import email.policy
from email.message import EmailMessage

import pytest

from rules.headerclasses import CachedHeaderRegistry

CACHED = email.policy.default.clone(header_factory=CachedHeaderRegistry())


@pytest.mark.parametrize(("name", "value"), [
    ("From", "Zoë Łukasz <zoe@example.com>"),
    ("To", "a@example.com, B <b@example.net>"),
    ("Subject", "=?utf-8?q?caf=C3=A9?= printer"),
    ("Message-ID", "<x.1@example.com>"),
    ("Date", "Tue, 01 Dec 2026 01:00:00 +0000"),
    ("Content-Type", 'text/plain; charset="utf-8"'),
    ("X-Odd", "anything at all"),
    ("Received", "from a by b; Tue, 01 Dec 2026 01:00:00 +0000"),
])
def test_same_parse_as_the_stdlib(name: str, value: str) -> None:
    plain = email.policy.default.header_factory(name, value)
    cached = CACHED.header_factory(name, value)
    assert str(cached) == str(plain)
    assert type(cached).__mro__[1:] == type(plain).__mro__[1:]  # same bases, same behaviour
    assert cached.defects == plain.defects


def test_one_class_per_name_whatever_its_case() -> None:
    reg = CachedHeaderRegistry()
    assert reg["Subject"] is reg["subject"] is reg["SUBJECT"]
    assert reg["From"] is not reg["To"]


def test_map_to_type_still_applies() -> None:
    from email.headerregistry import UnstructuredHeader

    reg = CachedHeaderRegistry()
    before = reg["X-Thing"]
    reg.map_to_type("x-thing", UnstructuredHeader)
    assert reg["X-Thing"] is not before and issubclass(reg["X-Thing"], UnstructuredHeader)


def test_a_message_round_trips_the_same() -> None:
    def build(policy: email.policy.EmailPolicy) -> bytes:
        msg = EmailMessage(policy=policy)
        msg["From"] = "Zoë <zoe@example.com>"
        msg["Subject"] = "Résumé"
        msg.set_content("hello\n")
        return msg.as_bytes()

    assert build(CACHED) == build(email.policy.default)
