"""rules.stamp: the signed X-Casegate-Auth header."""

from __future__ import annotations

import pytest

from rules.stamp import STAMP_HEADER, Stamp, make_stamp, verify_stamp

SECRET = b"s3cret-for-tests"
NOW = 1_700_000_000


def stamp(**overrides: object) -> str:
    fields: dict[str, object] = {
        "secret": SECRET,
        "authen": "alice@example.com",
        "client_addr": "127.0.0.2",
        "queue_id": "4AbC",
        "timestamp": NOW,
    }
    fields.update(overrides)
    return make_stamp(**fields)  # type: ignore[arg-type]


def test_header_name() -> None:
    assert STAMP_HEADER == "X-Casegate-Auth"


def test_round_trip() -> None:
    value = stamp()
    assert value.startswith(
        "v=1; authen=alice@example.com; addr=127.0.0.2; qid=4AbC; t=1700000000; sig="
    )
    assert verify_stamp(value, secret=SECRET, max_age=60, now=NOW + 10) == Stamp(
        authen="alice@example.com", client_addr="127.0.0.2", queue_id="4AbC", timestamp=NOW
    )


def test_no_authentication_is_an_empty_authen() -> None:
    value = stamp(authen="")
    got = verify_stamp(value, secret=SECRET, max_age=None, now=NOW)
    assert got is not None
    assert got.authen == ""
    assert not got.authenticated


@pytest.mark.parametrize(
    ("authen", "addr"),
    [
        ("a b;c=d", "2001:db8::1"),
        ("j\u00f6rg@example.com", "IPv6:2001:db8::1"),
        ("50%@x", "127.0.0.1"),
        ("raw\udcffbyte", "127.0.0.1"),
    ],
)
def test_awkward_values_round_trip(authen: str, addr: str) -> None:
    value = stamp(authen=authen, client_addr=addr)
    assert " " not in value.split("; ")[1]
    got = verify_stamp(value, secret=SECRET, max_age=None, now=NOW)
    assert got is not None
    assert (got.authen, got.client_addr) == (authen, addr)


def test_folded_header_still_verifies() -> None:
    value = stamp().replace("; qid=", ";\r\n\tqid=")
    assert verify_stamp(value, secret=SECRET, max_age=None, now=NOW) is not None


@pytest.mark.parametrize(
    ("field", "forged"),
    [
        ("authen=alice@example.com", "authen=mallory@example.com"),
        ("authen=alice@example.com", "authen="),
        ("addr=127.0.0.2", "addr=127.0.0.1"),
        ("qid=4AbC", "qid=4AbD"),
        ("t=1700000000", "t=1700000001"),
        ("v=1", "v=2"),
    ],
)
def test_tampering_with_any_field_fails(field: str, forged: str) -> None:
    value = stamp()
    assert field in value
    assert verify_stamp(value.replace(field, forged), secret=SECRET, max_age=None, now=NOW) is None


def test_tampered_signature_fails() -> None:
    value = stamp()
    head, sig = value.rsplit("sig=", 1)
    flipped = ("A" if sig[0] != "A" else "B") + sig[1:]
    assert verify_stamp(head + "sig=" + flipped, secret=SECRET, max_age=None, now=NOW) is None


def test_other_secret_fails() -> None:
    assert verify_stamp(stamp(), secret=b"another", max_age=None, now=NOW) is None
    assert verify_stamp(stamp(), secret=b"", max_age=None, now=NOW) is None


def test_signature_from_another_stamp_fails() -> None:
    mine = stamp(authen="")
    theirs = stamp(authen="alice@example.com")
    forged = theirs.rsplit("sig=", 1)[0] + "sig=" + mine.rsplit("sig=", 1)[1]
    assert verify_stamp(forged, secret=SECRET, max_age=None, now=NOW) is None


def test_old_stamp_fails_with_max_age() -> None:
    value = stamp()
    assert verify_stamp(value, secret=SECRET, max_age=3600, now=NOW + 3600) is not None
    assert verify_stamp(value, secret=SECRET, max_age=3600, now=NOW + 3601) is None
    assert verify_stamp(value, secret=SECRET, max_age=None, now=NOW + 10**6) is not None


def test_stamp_from_the_future_fails() -> None:
    value = stamp()
    assert verify_stamp(value, secret=SECRET, max_age=None, now=NOW - 10) is not None
    assert verify_stamp(value, secret=SECRET, max_age=None, now=NOW - 3600) is None


@pytest.mark.parametrize(
    "value",
    [
        "",
        "garbage",
        "v=1",
        "v=1; authen=a; addr=b; qid=c; t=1; sig=",
        "v=1; authen=a; addr=b; qid=c; t=x; sig=" + "A" * 43,
        "v=1; authen=a; addr=b; qid=c; t=-1; sig=" + "A" * 43,
        "v=1; authen=a; addr=b; qid=c; t=01; sig=" + "A" * 43,
        "v=1; addr=b; authen=a; qid=c; t=1; sig=" + "A" * 43,
        "v=1; authen=a; addr=b; qid=c; t=1; sig=" + "\u00e9" * 43,
        "v=1; authen=a; addr=b; qid=c; t=1; extra=1; sig=" + "A" * 43,
    ],
)
def test_malformed_values_fail(value: str) -> None:
    assert verify_stamp(value, secret=SECRET, max_age=None, now=NOW) is None


def test_alternative_encoding_of_the_same_value_fails() -> None:
    value = stamp()
    assert (
        verify_stamp(
            value.replace("authen=alice@", "authen=%61lice@"), secret=SECRET, max_age=None, now=NOW
        )
        is None
    )


def test_make_stamp_refuses_an_empty_secret() -> None:
    with pytest.raises(ValueError):
        stamp(secret=b"")
