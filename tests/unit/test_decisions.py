"""classify, match, assign and names: tables of cases."""

from __future__ import annotations

import pytest

from rules.assign import Candidate, least_load
from rules.classify import Role, classify, in_networks, parse_networks
from rules.match import match_case
from rules.names import first_name, greeting

TRUSTED = parse_networks(["127.0.0.1/32", "10.0.0.0/8", "2001:db8::/32"])


@pytest.mark.parametrize(
    ("kwargs", "role", "rule"),
    [
        ({"csr_known": False, "client_addr": "127.0.0.1"}, Role.CUSTOMER, "not_a_csr"),
        ({"csr_known": True, "client_addr": "127.0.0.1"}, Role.CSR, "csr_trusted_network"),
        ({"csr_known": True, "client_addr": "10.1.2.3"}, Role.CSR, "csr_trusted_network"),
        ({"csr_known": True, "client_addr": "IPv6:2001:db8::5"}, Role.CSR, "csr_trusted_network"),
        ({"csr_known": True, "client_addr": "127.0.0.2"}, Role.CUSTOMER, "csr_unauthenticated"),
        ({"csr_known": True, "client_addr": ""}, Role.CUSTOMER, "csr_unauthenticated"),
        ({"csr_known": True, "client_addr": "not-an-ip"}, Role.CUSTOMER, "csr_unauthenticated"),
        ({"csr_known": True, "client_addr": "127.0.0.2", "sasl_login": "jane@example.com",
          "sasl_login_is_csr": True}, Role.CSR, "csr_sasl"),
        ({"csr_known": True, "client_addr": "127.0.0.1", "sasl_login": "bob@example.com",
          "sasl_login_is_csr": False}, Role.CUSTOMER, "csr_sasl_mismatch"),
        ({"csr_known": True, "client_addr": "127.0.0.2", "dkim_staff_domain": "example.com"},
         Role.CSR, "csr_dkim"),
        ({"csr_known": True, "client_addr": "127.0.0.1", "automatic_reason": "x: y"},
         Role.AUTOMATIC, "automatic"),
    ],
)
def test_classify(kwargs: dict, role: Role, rule: str) -> None:
    kwargs.setdefault("automatic_reason", None)
    got = classify(from_address="jane@example.com", trusted_networks=TRUSTED, **kwargs)
    assert (got.role, got.rule) == (role, rule)


def test_parse_networks_rejects_garbage() -> None:
    with pytest.raises(ValueError, match="not a network"):
        parse_networks(["300.1.1.1/8"])
    assert in_networks("::ffff:127.0.0.1", TRUSTED)


CASES = {"CS0000001": {"john@x.org"}, "CS0000002": {"mary@y.org", "cc@y.org"}}


def participants(number: str) -> set[str] | None:
    return CASES.get(number)


def m(**kw):
    base = dict(sender="john@x.org", is_csr=False, signed_numbers=[], stored_numbers=[],
                address_number=None, subject_numbers=[], participants=participants)
    base.update(kw)
    return match_case(**base)


def test_signed_message_id_comes_first() -> None:
    got = m(sender="cc@y.org", signed_numbers=["CS0000002"], subject_numbers=["CS0000001"])
    assert (got.number, got.rule) == ("CS0000002", "signed_message_id")
    assert m(sender="jane@example.com", is_csr=True, signed_numbers=["CS0000001"]).number == "CS0000001"


def test_signed_message_id_from_a_stranger_opens_a_new_case() -> None:
    got = m(sender="eve@evil.org", signed_numbers=["CS0000001"])
    assert got.number is None and got.mentioned == ("CS0000001",)


def test_tag_joins_only_participants() -> None:
    assert m(subject_numbers=["CS0000001"]).number == "CS0000001"
    stranger = m(sender="eve@evil.org", subject_numbers=["CS0000001"])
    assert stranger.number is None and stranger.mentioned == ("CS0000001",)
    assert stranger.rule == "new_case_foreign_tag"


def test_plus_address_and_stored_ids_need_participation_too() -> None:
    assert m(address_number="CS0000001").rule == "plus_address"
    assert m(sender="eve@evil.org", address_number="CS0000001").number is None
    assert m(stored_numbers=["CS0000001"]).rule == "stored_message_id"
    assert m(sender="EVE@evil.org", stored_numbers=["CS0000001"]).number is None


def test_csr_may_use_any_tag_and_unknown_numbers_open_new_cases() -> None:
    assert m(sender="jane@example.com", is_csr=True, subject_numbers=["CS0000002"]).number == "CS0000002"
    unknown = m(subject_numbers=["CS0009999"])
    assert unknown.number is None and unknown.mentioned == ("CS0009999",)
    assert m().rule == "new_case"


def test_cc_participant_and_case_insensitive_sender() -> None:
    assert m(sender="CC@Y.ORG", subject_numbers=["CS0000002"]).number == "CS0000002"


def test_least_load() -> None:
    assert least_load([]) is None
    assert least_load([Candidate(1, 3), Candidate(2, 1), Candidate(3, 1)]) == 2
    assert least_load([Candidate(5, 0)]) == 5


@pytest.mark.parametrize(
    ("display", "first"),
    [
        ("John Smith", "John"),
        ("Smith, John", "John"),
        ("José Núñez", "José"),
        ("Dr. Ana María López", "Ana"),
        ("JOHN SMITH", "John"),
        ("田中 太郎", "田中"),
        ("john@example.com", ""),
        ("", ""),
        ("12345", ""),
        ('"Müller, Jürgen"', "Jürgen"),
    ],
)
def test_first_name(display: str, first: str) -> None:
    assert first_name(display) == first


def test_greeting() -> None:
    assert greeting("John Smith") == "Hello John,"
    assert greeting("") == "Hello,"
