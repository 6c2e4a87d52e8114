from __future__ import annotations

import email
import email.policy

import pytest

from rules import automatic, loop, tokens
from rules.decision import base_address
from rules.inbound import parse

SECRET, OTHER = b"a" * 32, b"b" * 32


def msg(headers: str, body: str = "hi\n") -> email.message.EmailMessage:
    return email.message_from_string(headers + "\n" + body, policy=email.policy.default)


def test_our_loop_header_comes_back_as_own_mail() -> None:
    m = msg(f"From: x@y.test\nSubject: hi\n{loop.LOOP_HEADER}: {loop.make_loop_header(SECRET, 1)}\n")
    v = loop.detect(m, "x@y.test", secret=SECRET, prefix="CS")
    assert v is not None and v.rule == "own_loop_header"


def test_another_instances_header_counts_hops_until_the_limit() -> None:
    low = msg(f"From: x@y.test\n{loop.LOOP_HEADER}: {loop.make_loop_header(OTHER, 1)}\n")
    assert loop.detect(low, "x@y.test", secret=SECRET, prefix="CS") is None
    assert loop.hops_of(low, SECRET) == 1
    high = msg(f"From: x@y.test\n{loop.LOOP_HEADER}: {loop.make_loop_header(OTHER, loop.MAX_HOPS)}\n")
    v = loop.detect(high, "x@y.test", secret=SECRET, prefix="CS")
    assert v is not None and v.rule == "hop_limit"


def test_tampered_loop_header_is_not_ours() -> None:
    value = loop.make_loop_header(SECRET, 1).replace("hops=1", "hops=0")
    info = loop.read_loop_headers([value], SECRET)
    assert info is not None and not info.ours and info.hops == 0


def test_our_message_id_coming_back() -> None:
    mid = tokens.make_message_id(SECRET, "CS0000001", "example.com")
    v = loop.detect(msg(f"From: a@b.test\nMessage-ID: {mid}\n"), "a@b.test", secret=SECRET, prefix="CS")
    assert v is not None and v.rule == "own_message_id"
    assert loop.detect(msg("From: a@b.test\nMessage-ID: <x@b.test>\n"), "a@b.test",
                       secret=SECRET, prefix="CS") is None


def test_null_sender_is_decided_before_own_mail() -> None:
    m = msg(f"From: MAILER-DAEMON@mx.test\n{loop.LOOP_HEADER}: {loop.make_loop_header(SECRET, 1)}\n")
    assert loop.detect(m, "", secret=SECRET, prefix="CS").rule == "null_sender"


def test_verp_round_trip_and_forgery() -> None:
    addr = loop.verp_address(SECRET, "support@example.com", "CS0000123", 42)
    assert addr.startswith("support+bounce-cs0000123-42-") and addr.endswith("@example.com")
    assert base_address(addr) == "support@example.com"
    assert loop.read_verp(SECRET, addr, "CS") == loop.Verp("CS0000123", 42)
    assert loop.read_verp(SECRET, addr.upper(), "CS") == loop.Verp("CS0000123", 42)
    assert loop.read_verp(OTHER, addr, "CS") is None
    assert loop.read_verp(SECRET, addr.replace("-42-", "-43-"), "CS") is None
    assert loop.read_verp(SECRET, "support+CS0000123@example.com", "CS") is None
    assert loop.read_verp(SECRET, "support@example.com", "CS") is None


# -- loop.detect is the one entry point: rules.automatic's walk with our checks --

OWN = f"{loop.LOOP_HEADER}: {loop.make_loop_header(SECRET, 1)}\n"
ORDER_CASES = [
    # (headers, envelope sender, rule that decides)
    (f"From: x@y.test\n{OWN}", "x@y.test", "own_loop_header"),
    (f"From: x@y.test\nAuto-Submitted: auto-replied\n{OWN}", "x@y.test", "own_loop_header"),
    (f"From: x@y.test\nContent-Type: multipart/report; report-type=delivery-status\n{OWN}", "x@y.test",
     "multipart_report"),
    (f"From: MAILER-DAEMON@mx.test\n{OWN}", "x@y.test", "mailer_daemon"),
    ("From: x@y.test\nAuto-Submitted: auto-replied\n", "x@y.test", "auto_submitted"),
    ("From: x@y.test\nPrecedence: bulk\n", "x@y.test", "precedence"),
    ("From: x@y.test\nSubject: hello\n", "x@y.test", None),
]


@pytest.mark.parametrize(("headers", "envelope", "rule"), ORDER_CASES)
def test_detect_puts_our_checks_after_the_early_rules(headers: str, envelope: str, rule: str | None) -> None:
    m = parse(headers.encode()).msg
    v = loop.detect(m, envelope, secret=SECRET, prefix="CS")
    assert (v.rule if v else None) == rule
    if rule not in ("own_loop_header", "own_message_id", "hop_limit"):
        assert automatic.detect_automatic(m, envelope) == v  # the same walk without our checks


def test_a_rule_that_raises_does_not_stop_the_others() -> None:
    def broken(m: email.message.Message) -> None:
        raise RuntimeError("a bug")

    m = parse(b"From: x@y.test\nPrecedence: bulk\n\nhi\n").msg
    v = automatic.detect_automatic(m, "x@y.test", own_mail=broken)
    assert v is not None and v.rule == "precedence"
