from __future__ import annotations

import pytest

from rules import tokens
from rules.decision import base_address

SECRET = b"k" * 32


@pytest.mark.parametrize(
    ("subject", "expected"),
    [
        ("[Case #CS0000123] Printer on fire", ["CS0000123"]),
        ("Re: [case #cs0000123] Printer", ["CS0000123"]),
        ("RE: [CS0000123] x", ["CS0000123"]),
        ("About Case:CS0000042 and [Case #CS0000043]", ["CS0000043", "CS0000042"]),
        ("Case: CS0000042", ["CS0000042"]),
        ("CS0000123 without brackets", []),
        ("[Case #CS123] too short", []),
        ("[Case #XX0000123] other prefix", []),
        ("", []),
    ],
)
def test_subject_numbers(subject: str, expected: list[str]) -> None:
    assert sorted(tokens.subject_numbers(subject, "CS")) == sorted(expected)


@pytest.mark.parametrize(
    ("subject", "clean"),
    [
        ("Re: [Case #CS0000123] Printer on fire", "Printer on fire"),
        ("AW: WG: Re: Rechnung", "Rechnung"),
        ("Fwd: [CS0000001]   spaced   out", "spaced out"),
        ("Re:", ""),
        ("Résumé reçu", "Résumé reçu"),
    ],
)
def test_clean_subject(subject: str, clean: str) -> None:
    assert tokens.clean_subject(subject, "CS") == clean


def test_tagged_subject() -> None:
    assert tokens.tagged_subject("CS0000123", "Re: Hi", "CS") == "[Case #CS0000123] Hi"
    assert tokens.tagged_subject("CS0000123", "", "CS", reply=True) == "Re: [Case #CS0000123] (no subject)"


def test_signed_message_id_round_trip() -> None:
    mid = tokens.make_message_id(SECRET, "CS0000123", "example.com")
    assert mid.startswith("<cs0000123.") and mid.endswith("@example.com>")
    assert tokens.message_id_number(SECRET, mid, "CS") == "CS0000123"
    # Case-insensitive on the way back (some MTAs fold case).
    assert tokens.message_id_number(SECRET, mid.upper(), "CS") == "CS0000123"


def test_forged_message_ids_are_not_ours() -> None:
    mid = tokens.make_message_id(SECRET, "CS0000123", "example.com")
    forged_number = mid.replace("cs0000123", "cs0000124")
    assert tokens.message_id_number(SECRET, forged_number, "CS") is None
    assert tokens.message_id_number(b"other" * 8, mid, "CS") is None
    assert tokens.message_id_number(SECRET, "<abc@example.com>", "CS") is None
    assert tokens.message_id_number(SECRET, "garbage", "CS") is None


def test_addresses() -> None:
    assert tokens.plus_address("support@example.com", "CS0000001") == "support+CS0000001@example.com"
    assert tokens.address_number("support+cs0000001@example.com", "CS") == "CS0000001"
    assert tokens.address_number("support+bounce-x@example.com", "CS") is None
    assert tokens.address_number("support@example.com", "CS") is None
    assert base_address("Support+CS0000001@Example.com") == "support@example.com"
    assert tokens.split_message_ids("<a@b> junk <c@d>") == ["<a@b>", "<c@d>"]
