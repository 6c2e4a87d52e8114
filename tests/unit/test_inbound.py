"""rules.inbound: parse never raises and stays cheap whatever the shape
(issue 8), and every MIME part is the text or a file, never neither (issue 7)."""

from __future__ import annotations

import email
import email.policy
import sys
import time
from collections.abc import Callable

import pytest

from rules import automatic, limits, loop
from rules.inbound import Inbound, attachments, comment_depth, parse, part_role, strip_comments
from rules.quotes import body_text, extract_reply
from tests.support import poison

SECRET = b"s" * 32


def run_all(inbound: Inbound) -> tuple[str, str]:
    """Everything the engine does with a parsed message; returns the texts."""
    msg = inbound.msg
    loop.detect(msg, "ana@customer.test", secret=SECRET, prefix="CS")
    loop.hops_of(msg, SECRET)
    automatic.suppresses_autoreply(msg)
    for part in msg.walk():  # as the engine's _dsn_status does
        part.get_content_type()
        part.get_payload()
    msg.get_all("X-Casegate-Auth", [])
    return extract_reply(msg), body_text(msg)


# -- poison messages: scaled just past each limit, so the suite stays fast ------

POISON: list[tuple[str, Callable[[], bytes], bool]] = [
    # (shape, builder, opaque); the sender is ana@customer.test unless said
    ("From: 1,000 nested comments", lambda: poison.nested_comments_from(1000), False),
    ("From: 100,000 nested comments", lambda: poison.nested_comments_from(100_000), False),
    ("Content-Type: 1,000 nested comments", lambda: poison.nested_comments_content_type(1000), False),
    ("Content-Type: 1,000 unclosed comments",
     lambda: poison.nested_comments_content_type(1000, closed=False), False),
    ("a part's Content-Type: 1,000 nested comments", lambda: poison.nested_comments_in_part(1000), False),
    ("multipart nested 1,000 deep", lambda: poison.nested_multipart(1000), True),
    ("multipart nested past the depth limit", lambda: poison.nested_multipart(limits.MAX_MIME_DEPTH + 2), True),
    ("message/rfc822 nested 1,000 deep", lambda: poison.nested_messages(1000), True),
    ("message/rfc822 nested past the depth limit",
     lambda: poison.nested_messages(limits.MAX_MIME_DEPTH + 2), True),
    ("attachments past the part limit", lambda: poison.many_attachments(limits.MAX_MIME_PARTS + 10), True),
    ("delivery-status blocks past the part limit", lambda: poison.dsn_blocks(limits.MAX_MIME_PARTS + 10), True),
    ("Subject of 50,000 words", lambda: poison.long_subject(50_000), False),
    ("95 Subject fields of 100 KB", lambda: poison.repeated_subjects(95, 100_000), False),
    ("20,000 header fields", lambda: poison.many_fields(20_000), False),
    ("HTML-only reply of 3 MB", lambda: poison.html_only(3_000_000), False),
    ("plain reply of 3 MB", lambda: poison.long_plain(3_000_000), False),
]


@pytest.mark.parametrize(("shape", "build", "opaque"), POISON, ids=[p[0] for p in POISON])
def test_poison_messages_parse_cheaply_and_never_raise(shape: str, build: Callable[[], bytes],
                                                       opaque: bool) -> None:
    data = build()
    start = time.process_time()
    inbound = parse(data)
    reply, text = run_all(inbound)
    spent = time.process_time() - start
    assert inbound.opaque is opaque, inbound.defects
    if opaque:
        assert any(d.startswith("opaque: ") for d in inbound.defects)
        assert inbound.attachments == ()
    # A From: address 200 KB into its field is past the field limit: none.
    expected = {"From: 100,000 nested comments": "", "delivery-status blocks past the part limit":
                "mailer-daemon@mx.test"}.get(shape, "ana@customer.test")
    assert inbound.from_address == expected
    assert len(text) <= limits.MAX_TEXT_CHARS + 200 and len(reply) <= limits.MAX_TEXT_CHARS
    assert spent < 10, f"{shape}: {spent:.1f} s of CPU"  # bench/fuzz.py measures precisely


def test_parse_survives_a_small_recursion_budget() -> None:
    """The engine may call parse from deep in a stack: no RecursionError leaks."""
    data = poison.nested_comments_content_type(300)

    def deep(n: int) -> Inbound:
        return parse(data) if n == 0 else deep(n - 1)

    limit = sys.getrecursionlimit()
    inbound = deep(limit - 200)
    assert inbound.from_address == "ana@customer.test"
    assert inbound.msg.get_content_type() == "text/plain"


@pytest.mark.parametrize(
    ("data", "from_address", "subject"),
    [
        (b"", "", ""),
        (b"\x00\xff\xfe", "", ""),
        (b"From: ana@customer.test", "ana@customer.test", ""),
        (b"From: =?bogus?Q?x?= <a@b.test>\r\nSubject: =?utf-8?B?!!!?=\r\n\r\n", "a@b.test", ""),
        (b"From: \xe4\xf6 <a@b.test>\r\nSubject: \xff\xfe\r\n\r\nx", "a@b.test", "\ufffd\ufffd"),
        (b"From: a@b.test\rSubject: bare cr\r\rbody", "a@b.test", "bare cr"),  # bare CRs end lines
        (b"Subject: x\r\nFrom: " + b"(" * 5000 + b"a@b.test", "", "x"),  # all in an unclosed comment
        (b"Subject: x\r\nFrom: " + b"(" * 5000 + b")" * 5000 + b"<a@b.test>", "a@b.test", "x"),
        (b"From: <" + b"a" * 100_000 + b"@b.test>\r\n\r\n", "", ""),  # no valid address
        (b"Content-Type: multipart/mixed; boundary=\r\n\r\n--\r\n--\r\n", "", ""),
    ],
)
def test_odd_bytes_parse(data: bytes, from_address: str, subject: str) -> None:
    inbound = parse(data)
    run_all(inbound)
    assert (inbound.from_address, inbound.subject) == (from_address, subject)


# -- comments -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "depth", "stripped"),
    [
        ("Ana <a@b.test>", 0, "Ana <a@b.test>"),
        ("a@b.test (Ana (the (real) one))", 3, "a@b.test  "),
        ('"Ana (not a comment)" <a@b.test>', 0, '"Ana (not a comment)" <a@b.test>'),
        (r"a@b.test (a \) escaped)", 1, "a@b.test  "),
        ("(" * 50 + "x" + ")" * 50 + "a@b.test", 50, " a@b.test"),
        ("(((unclosed a@b.test", 3, " "),
    ],
)
def test_comments(value: str, depth: int, stripped: str) -> None:
    # Exact past the limit; below it an upper bound is enough (and cheaper).
    found = comment_depth(value)
    assert found == depth if depth > limits.MAX_COMMENT_DEPTH else depth <= found <= limits.MAX_COMMENT_DEPTH
    assert strip_comments(value) == stripped


# -- header limits ----------------------------------------------------------------


def test_header_fields_over_the_limit_keep_the_essential_ones() -> None:
    inbound = parse(poison.many_fields(limits.MAX_HEADER_FIELDS + 500))
    names = [k.lower() for k, _ in inbound.msg.raw_items()]
    assert len(names) == limits.MAX_HEADER_FIELDS + 2  # the first fields, then From:, Subject:
    assert (inbound.from_address, inbound.subject) == ("ana@customer.test", "after many fields")
    assert any(d.startswith("headers: kept") for d in inbound.defects)


def test_a_field_is_cut_at_the_field_limit() -> None:
    inbound = parse(poison.long_subject(100_000))
    (value,) = [v for k, v in inbound.msg.raw_items() if k == "Subject"]
    assert len(value) == limits.MAX_FIELD_CHARS
    assert inbound.subject.startswith("word word") and len(inbound.subject) <= limits.MAX_PARSED_CHARS


def test_cc_list_of_a_thousand_addresses_is_read() -> None:
    cc = ", ".join(f"p{i}@customer.test" for i in range(1000)).encode()
    inbound = parse(b"From: a@b.test\r\nCc: " + cc + b"\r\nSubject: many\r\n\r\nhi\r\n")
    assert len(inbound.cc) == 1000 and inbound.cc[-1] == ("", "p999@customer.test")


# -- body or file: one decision (issue 7) -------------------------------------------


def mime(*parts: bytes, root: bytes = b"multipart/mixed; boundary=B") -> bytes:
    body = b"".join(b"--B\r\n" + p + b"\r\n" for p in parts) + b"--B--\r\n"
    return b"From: a@b.test\r\nSubject: parts\r\nMIME-Version: 1.0\r\nContent-Type: " + root + b"\r\n\r\n" + body


TEXT = b"Content-Type: text/plain\r\n\r\nthe body"

ROLES: list[tuple[str, bytes, list[str]]] = [
    # (case, message, roles of the root's leaves in order)
    ("text and a named PDF", mime(TEXT, b"Content-Type: application/pdf; name=a.pdf\r\n\r\n%PDF"),
     ["text", "file"]),
    ("inline text/plain with a file name is a file",
     mime(TEXT, b"Content-Type: text/plain\r\nContent-Disposition: inline; filename=notes.txt\r\n\r\nnotes"),
     ["text", "file"]),
    ("text/plain with an attachment disposition",
     mime(TEXT, b"Content-Type: text/plain\r\nContent-Disposition: attachment\r\n\r\nlog"), ["text", "file"]),
    ("text/html with a file name", mime(TEXT, b"Content-Type: text/html; name=page.html\r\n\r\n<p>x</p>"),
     ["text", "file"]),
    ("an image without a name", mime(TEXT, b"Content-Type: image/png\r\n\r\nPNG"), ["text", "file"]),
    ("text/calendar without a name", mime(TEXT, b"Content-Type: text/calendar\r\n\r\nBEGIN:VCALENDAR"),
     ["text", "file"]),
    ("a forwarded message", mime(TEXT, b"Content-Type: message/rfc822\r\n\r\nSubject: fw\r\n\r\ninner text"),
     ["text", "file"]),
    ("two inline text parts", mime(TEXT, b"Content-Type: text/plain\r\n\r\nsecond"), ["text", "text"]),
]


def leaves(msg: email.message.Message) -> list[str]:
    out = []
    for part in msg.get_payload():
        out.append(part_role(part))
    return out


@pytest.mark.parametrize(("case", "data", "roles"), ROLES, ids=[r[0] for r in ROLES])
def test_each_part_is_text_or_file(case: str, data: bytes, roles: list[str]) -> None:
    inbound = parse(data)
    assert leaves(inbound.msg) == roles
    files = {p.filename for p in inbound.attachments}
    assert len(inbound.attachments) == roles.count("file"), files
    text = body_text(inbound.msg)
    assert "the body" in text
    for part in inbound.msg.get_payload():  # what is a file is not in the text, and the reverse
        payload = part.get_payload()
        if isinstance(payload, str) and part_role(part) == "file":
            assert payload not in text
        elif isinstance(payload, str):
            assert payload in text


def test_inline_text_file_is_no_longer_lost() -> None:
    """The issue-7 case: an inline text/plain part with a file name reached
    neither the CSR's text nor the files."""
    data = mime(TEXT, b"Content-Type: text/plain\r\nContent-Disposition: inline; filename=notes.txt\r\n\r\nnotes")
    inbound = parse(data)
    assert [(p.filename, p.content_type, p.data) for p in inbound.attachments] == [
        ("notes.txt", "text/plain", b"notes")]
    assert "notes" not in extract_reply(inbound.msg)


def test_a_forwarded_message_is_one_file_with_its_bytes() -> None:
    inbound = parse(mime(TEXT, b"Content-Type: message/rfc822\r\n\r\nSubject: fw\r\n\r\ninner text"))
    (part,) = inbound.attachments
    assert (part.filename, part.content_type) == ("message.eml", "message/rfc822")
    assert b"Subject: fw" in part.data and b"inner text" in part.data


@pytest.mark.parametrize(
    ("root", "role"),
    [
        (b"text/plain", "text"),
        (b"text/html", "text"),
        (b"application/pdf", "file"),
        (b"multipart/mixed", "text"),  # no boundary: shown as text
    ],
)
def test_the_message_itself(root: bytes, role: str) -> None:
    data = (b"From: a@b.test\r\nContent-Type: " + root + b"\r\nContent-Disposition: attachment; filename=x\r\n"
            b"\r\nbody\r\n")
    inbound = parse(data)
    assert part_role(inbound.msg, root=True) == role
    assert (role == "file") == bool(attachments(inbound.msg))
    assert (role == "text") == ("body" in body_text(inbound.msg))


def test_stdlib_policy_messages_still_work() -> None:
    """Functions of rules/ take messages parsed elsewhere (tests, the CLI)."""
    msg = email.message_from_bytes(mime(TEXT, b"Content-Type: image/png\r\n\r\nPNG"), policy=email.policy.default)
    assert [p.content_type for p in attachments(msg)] == ["image/png"]
