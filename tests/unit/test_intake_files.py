"""Every part that is not the body is a file, named, with its placement
(inline or attached) and Content-ID (issue 10, section 4): a table of shapes."""

from __future__ import annotations

import pytest

from rules.inbound import parse

HEAD = ("From: ann@customer.test\r\nTo: support@example.com\r\nSubject: s\r\n"
        "Message-ID: <m1@customer.test>\r\nMIME-Version: 1.0\r\n")


def mime(*parts: str, kind: str = "mixed") -> bytes:
    body = "".join(f"--B\r\n{p}\r\n" for p in parts)
    return (HEAD + f'Content-Type: multipart/{kind}; boundary="B"\r\n\r\n' + body + "--B--\r\n").encode()


TEXT = "Content-Type: text/plain; charset=utf-8\r\n\r\nHello, see the picture."
HTML = 'Content-Type: text/html\r\n\r\n<p>Hello <img src="cid:logo@x"></p>'
PNG_B64 = "iVBORw0KGgo="  # \x89PNG\r\n\x1a\n
EVENT = "BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nSUMMARY:Call\r\nEND:VEVENT\r\nEND:VCALENDAR"
INNER = "From: x@y.test\r\nSubject: inner\r\n\r\nforwarded body"

CASES = [
    # (what, message, [(name, type, inline, content_id, data)])
    ("named attachment", mime(TEXT, "Content-Type: application/pdf\r\nContent-Disposition: attachment; "
                                    'filename="bill.pdf"\r\nContent-Transfer-Encoding: base64\r\n\r\nJVBERg=='),
     [("bill.pdf", "application/pdf", False, "", b"%PDF")]),
    ("cid-only image, no name, no disposition",
     mime("Content-Type: multipart/alternative; boundary=A\r\n\r\n--A\r\n" + TEXT + "\r\n--A\r\n" + HTML
          + "\r\n--A--", "Content-Type: image/png\r\nContent-ID: <logo@x>\r\n"
          "Content-Transfer-Encoding: base64\r\n\r\n" + PNG_B64, kind="related"),
     [("logo.png", "image/png", True, "logo@x", b"\x89PNG\r\n\x1a\n")]),
    ("inline disposition with a name and Content-ID",
     mime(TEXT, "Content-Type: image/jpeg\r\nContent-Disposition: inline; filename=\"p.jpg\"\r\n"
                "Content-ID: <p1@mail>\r\nContent-Transfer-Encoding: base64\r\n\r\n/9j/"),
     [("p.jpg", "image/jpeg", True, "p1@mail", b"\xff\xd8\xff")]),
    ("attachment disposition wins over a Content-ID",
     mime(TEXT, "Content-Type: image/gif\r\nContent-Disposition: attachment\r\nContent-ID: <g@x>\r\n"
                "Content-Transfer-Encoding: base64\r\n\r\nR0lGODlh"),
     [("g.gif", "image/gif", False, "g@x", b"GIF89a")]),
    ("cid with an extension already", mime(TEXT, "Content-Type: image/png\r\nContent-ID: <image001.png@01D>\r\n"
                                                 "Content-Transfer-Encoding: base64\r\n\r\n" + PNG_B64),
     [("image001.png", "image/png", True, "image001.png@01D", b"\x89PNG\r\n\x1a\n")]),
    ("calendar invitation inside the alternative",
     mime("Content-Type: multipart/alternative; boundary=A\r\n\r\n--A\r\n" + TEXT
          + "\r\n--A\r\nContent-Type: text/calendar; method=REQUEST\r\n\r\n" + EVENT + "\r\n--A--"),
     [("invite.ics", "text/calendar", False, "", EVENT.encode())]),
    ("forwarded message", mime(TEXT, "Content-Type: message/rfc822\r\n\r\n" + INNER),
     [("message.eml", "message/rfc822", False, "", None)]),
    ("unnamed binary, nothing else", mime(TEXT, "Content-Type: application/octet-stream\r\n"
                                                "Content-Transfer-Encoding: base64\r\n\r\nAAEC"),
     [("attachment", "application/octet-stream", False, "", b"\x00\x01\x02")]),
    ("a crafted Content-ID is cleaned into a safe name",
     mime(TEXT, "Content-Type: image/png\r\nContent-ID: <../../etc/passwd@x>\r\n"
                "Content-Transfer-Encoding: base64\r\n\r\n" + PNG_B64),
     [("etc_passwd.png", "image/png", True, "../../etc/passwd@x", b"\x89PNG\r\n\x1a\n")]),
    ("plain text only: no file", (HEAD + "Content-Type: text/plain\r\n\r\nhi\r\n").encode(), []),
]


@pytest.mark.parametrize("raw, expected", [(c[1], c[2]) for c in CASES], ids=[c[0] for c in CASES])
def test_every_non_body_part_is_a_named_file(raw: bytes, expected: list) -> None:
    files = parse(raw).attachments
    got = [(f.filename, f.content_type, f.inline, f.content_id) for f in files]
    assert got == [e[:4] for e in expected]
    for f, e in zip(files, expected, strict=True):
        if e[4] is not None:
            assert f.data == e[4]
        else:
            assert b"forwarded body" in f.data
