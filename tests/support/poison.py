"""Messages whose shape once cost seconds, gigabytes or a RecursionError
(issue 8), built at any scale: shared by the unit tests, the fuzz test and
``bench/fuzz.py``. Each builder returns the message's bytes."""

from __future__ import annotations

from collections.abc import Callable

_HEAD = b"From: Ana <ana@customer.test>\r\nTo: support@example.com\r\nMessage-ID: <poison@customer.test>\r\n"


def nested_comments_from(n: int = 1000) -> bytes:
    """A 2 KB From: of ``n`` nested comments before the address."""
    return (b"From: " + b"(" * n + b")" * n + b" ana@customer.test\r\nTo: support@example.com\r\n"
            b"Subject: comments\r\n\r\nHello\r\n")


def nested_comments_content_type(n: int = 1000, closed: bool = True) -> bytes:
    """A Content-Type: with ``n`` nested comments (closed or left open)."""
    comment = b"(" * n + (b")" * n if closed else b"")
    return (_HEAD + b"Subject: content type\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; " + comment
            + b"\r\n\r\nHello\r\n")


def nested_comments_in_part(n: int = 1000) -> bytes:
    """A nested part whose Content-Type has ``n`` nested comments."""
    return (_HEAD + b"Subject: part comments\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=B\r\n"
            b"\r\n--B\r\nContent-Type: text/plain\r\n\r\nHello\r\n--B\r\nContent-Type: text/plain; "
            + b"(" * n + b")" * n + b"\r\n\r\nsecond\r\n--B--\r\n")


def nested_multipart(depth: int = 1000) -> bytes:
    """Multiparts nested ``depth`` deep, a text part at the bottom."""
    head: list[bytes] = []
    tail: list[bytes] = []
    for i in range(depth):
        head.append(b'Content-Type: multipart/mixed; boundary="b%d"\r\n\r\n--b%d\r\n' % (i, i))
        tail.append(b"\r\n--b%d--\r\n" % i)
    return (_HEAD + b"Subject: deep\r\nMIME-Version: 1.0\r\n" + b"".join(head)
            + b"Content-Type: text/plain\r\n\r\nHello from the bottom\r\n" + b"".join(reversed(tail)))


def nested_messages(depth: int = 1000) -> bytes:
    """message/rfc822 nested ``depth`` deep (no boundary at all)."""
    return (_HEAD + b"Subject: deep messages\r\nMIME-Version: 1.0\r\n"
            + b"Content-Type: message/rfc822\r\n\r\n" * depth + b"Subject: inner\r\n\r\nHello\r\n")


def html_only(size: int = 30_000_000) -> bytes:
    """An HTML-only reply of about ``size`` bytes, quotes in it."""
    para = (b"<div><p>Some text <b>bold</b> and <a href='http://x.test/'>a link</a></p>"
            b"<blockquote>quoted text here</blockquote></div>\r\n")
    html = b"<html><body><p>My answer.</p>" + para * max(1, size // len(para)) + b"</body></html>\r\n"
    return (_HEAD + b"Subject: Re: html\r\nMIME-Version: 1.0\r\nContent-Type: text/html; charset=utf-8\r\n\r\n"
            + html)


def long_subject(words: int = 200_000) -> bytes:
    """A Subject: of ``words`` words (200,000 is about 1 MB)."""
    return _HEAD + b"Subject: " + b" ".join(b"word" for _ in range(words)) + b"\r\n\r\nHello\r\n"


def many_attachments(count: int = 10_000) -> bytes:
    """A text part and ``count`` small attachments."""
    parts = b"".join(
        b"--B\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment; "
        b'filename="f%d.bin"\r\nContent-Transfer-Encoding: base64\r\n\r\nAAAA\r\n' % i
        for i in range(count)
    )
    return (_HEAD + b"Subject: many files\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=B\r\n\r\n"
            b"--B\r\nContent-Type: text/plain\r\n\r\nsee the files\r\n" + parts + b"--B--\r\n")


def repeated_subjects(count: int = 95, size: int = 100_000) -> bytes:
    """``count`` Subject: fields of ``size`` bytes each."""
    return (_HEAD + b"".join(b"Subject: " + b"x" * size + b"\r\n" for _ in range(count))
            + b"\r\nHello\r\n")


def many_fields(count: int = 100_000) -> bytes:
    """``count`` distinct header fields before From:, Subject:."""
    fields = b"".join(b"X-F%d: v\r\n" % i for i in range(count))
    return fields + b"From: ana@customer.test\r\nSubject: after many fields\r\n\r\nHello\r\n"


def long_plain(size: int = 30_000_000) -> bytes:
    """A plain-text reply of about ``size`` bytes of quoted history."""
    line = b"> quoted history line of a very long thread\r\n"
    return (_HEAD + b"Subject: Re: long\r\n\r\nMy answer.\r\n\r\nOn Mon, 1 Jan 2024, Bob <b@x.test> wrote:\r\n"
            + line * max(1, size // len(line)))


def dsn_blocks(count: int = 100_000) -> bytes:
    """A message/delivery-status part of ``count`` header blocks."""
    blocks = b"".join(b"Final-Recipient: rfc822; r%d@x.test\r\nStatus: 5.1.1\r\n\r\n" % i for i in range(count))
    return (b"From: MAILER-DAEMON@mx.test\r\nTo: support@example.com\r\nSubject: Undelivered Mail\r\n"
            b"MIME-Version: 1.0\r\nContent-Type: multipart/report; report-type=delivery-status; boundary=R\r\n\r\n"
            b"--R\r\nContent-Type: text/plain\r\n\r\nfailed\r\n--R\r\nContent-Type: message/delivery-status\r\n\r\n"
            + blocks + b"--R--\r\n")


#: name -> builder at the scale the issue reported.
SHAPES: dict[str, Callable[[], bytes]] = {
    "from: 1,000 nested comments": nested_comments_from,
    "content-type: 1,000 nested comments": nested_comments_content_type,
    "content-type: 1,000 open comments": lambda: nested_comments_content_type(1000, closed=False),
    "part content-type: 1,000 nested comments": nested_comments_in_part,
    "multipart nested 1,000 deep": nested_multipart,
    "message/rfc822 nested 1,000 deep": nested_messages,
    "30 MB HTML-only reply": html_only,
    "1 MB Subject of 200,000 words": long_subject,
    "10,000 attachments": many_attachments,
    "95 x 100 KB Subject": repeated_subjects,
    "100,000 header fields": many_fields,
    "30 MB plain-text reply": long_plain,
    "100,000 delivery-status blocks": dsn_blocks,
}
