"""The CSR's HTML: sanitised by nh3 (allow-list), quoted history cut by
rules.quotes, command lines dropped, inline pictures found by Content-ID."""

from __future__ import annotations

import email
import email.policy

import pytest

from smtpd_hook.sanitize import csr_html, drop_command_lines, footer_cid, footer_html, sanitize
from tests.support.htmlmail import PNG, QUOTED_MARKER, outlook_answer

KEPT = [
    ("bold", "<b>bold</b> and <strong>strong</strong>", "<b>bold</b> and <strong>strong</strong>"),
    ("italic", "<i>a</i><em>b</em><u>c</u>", "<i>a</i><em>b</em><u>c</u>"),
    ("list", "<ul><li>one</li><li>two</li></ul><ol start=\"3\"><li>x</li></ol>",
     "<ul><li>one</li><li>two</li></ul><ol start=\"3\"><li>x</li></ol>"),
    ("table", "<table border=\"1\"><tr><td colspan=\"2\">c</td></tr></table>",
     "<table border=\"1\"><tbody><tr><td colspan=\"2\">c</td></tr></tbody></table>"),
    ("link", '<a href="https://example.com/faq">FAQ</a>',
     '<a href="https://example.com/faq" rel="noopener noreferrer">FAQ</a>'),
    ("mailto", '<a href="mailto:a@example.com">mail</a>',
     '<a href="mailto:a@example.com" rel="noopener noreferrer">mail</a>'),
    ("cid image", '<img src="cid:image001.png@01D" alt="shot" width="20">',
     '<img src="cid:image001.png@01D" alt="shot" width="20">'),
    ("safe style", '<span style="color: red; font-weight: bold">x</span>',
     '<span style="color:red;font-weight:bold">x</span>'),
    ("font", '<font color="#ff0000" face="Arial">x</font>', '<font color="#ff0000" face="Arial">x</font>'),
]
REMOVED = [
    ("script", "<p>hi</p><script>alert(1)</script>", "<p>hi</p>"),
    ("onclick", '<b onclick="steal()">x</b>', "<b>x</b>"),
    ("onerror", '<img src="cid:a" onerror="x()">', '<img src="cid:a">'),
    ("remote img", '<img src="https://tracker.example/p.gif" alt="t">', '<img alt="t">'),
    ("http img", '<img src="http://tracker.example/p.gif">', "<img>"),
    ("data img", '<img src="data:image/png;base64,AAAA">', "<img>"),
    ("javascript link", '<a href="javascript:alert(1)">x</a>', '<a rel="noopener noreferrer">x</a>'),
    ("vbscript link", '<a href="vbscript:x">x</a>', '<a rel="noopener noreferrer">x</a>'),
    ("style tag", "<style>body{background:url(https://t.example/x)}</style><p>a</p>", "<p>a</p>"),
    ("style url", '<p style="color:red;background:url(https://t.example/x)">a</p>', "<p>a</p>"),
    ("style position", '<p style="position:fixed;color:red">a</p>', '<p style="color:red">a</p>'),
    ("iframe", '<iframe src="https://x.example">f</iframe><p>a</p>', "<p>a</p>"),
    ("form", '<form action="https://x.example"><input name="q">a</form>', "a"),
    ("object", '<object data="x.swf">o</object>b', "b"),
    ("svg", '<svg onload="x()"><script>y()</script></svg>z', "z"),
    ("comment", "<!-- secret --><p>a</p>", "<p>a</p>"),
    ("cid link", '<a href="cid:x">c</a>', '<a rel="noopener noreferrer">c</a>'),
    ("meta refresh", '<meta http-equiv="refresh" content="0;url=https://x">a', "a"),
    ("base", '<base href="https://x.example/">a', "a"),
    ("link css", '<link rel="stylesheet" href="https://x.example/a.css">a', "a"),
]


@pytest.mark.parametrize(("case", "html", "expected"), KEPT + REMOVED, ids=[c[0] for c in KEPT + REMOVED])
def test_sanitize(case: str, html: str, expected: str) -> None:
    assert sanitize(html) == expected


@pytest.mark.parametrize(("html", "reply", "expected"), [
    ("<div>#solution</div><div><b>Hello</b> world</div>", "Hello world", "<div><b>Hello</b> world</div>"),
    ("<p>#close<br>#note done<br>Thanks <b>a lot</b></p>", "Thanks a lot", "<p>Thanks <b>a lot</b></p>"),
    ("<p>#1 in our list</p>", "#1 in our list", "<p>#1 in our list</p>"),
    ("<p>No commands</p>", "No commands", "<p>No commands</p>"),
])
def test_drop_command_lines(html: str, reply: str, expected: str) -> None:
    assert drop_command_lines(html, reply) == expected


def test_outlook_html_answer_keeps_formatting_and_picture() -> None:
    raw = outlook_answer(
        from_="jane@example.com", to="support@example.com", subject="Re: x",
        answer_html='<p class="MsoNormal"><b>Turn it off</b> and <a href="https://example.com/k">read'
                    ' this</a>:</p><ul><li>one</li></ul><p><img src="cid:image001.png@01DA" '
                    'width="1"><img src="https://tracker.example/t.gif"></p>',
        images=[("image001.png@01DA", PNG), ("unused@01DA", b"\x89PNGother")])
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    got = csr_html(msg, "Turn it off and read this:")
    assert got is not None
    html, images = got
    assert "<b>Turn it off</b>" in html and "<li>one</li>" in html
    assert 'href="https://example.com/k"' in html
    assert QUOTED_MARKER not in html and "From:" not in html and "Please type" not in html
    assert "tracker.example" not in html and "<style" not in html and "MsoNormal" not in html
    assert [(i.cid, i.data, i.content_type) for i in images] == [("image001.png@01DA", PNG, "image/png")]


def test_text_only_message_has_no_html() -> None:
    msg = email.message_from_bytes(b"From: a@b\r\nSubject: x\r\n\r\nplain\r\n",
                                   policy=email.policy.default)
    assert csr_html(msg, "plain") is None


def test_footer_image_by_cid() -> None:
    html = footer_html('<p><b>Jane</b> <img src="cid:footer"> <img src="https://x/y.png"></p>'
                       "<script>x</script>", PNG)
    assert html == f'<p><b>Jane</b> <img src="cid:{footer_cid(PNG)}"> <img></p>'


def _multipart(html: str, text: str = "Answer text") -> email.message.EmailMessage:
    msg = email.message.EmailMessage(policy=email.policy.SMTP)
    msg["From"], msg["Subject"] = "jane@example.com", "Re: x"
    msg.set_content(text)
    msg.add_alternative(html, subtype="html")
    return email.message_from_bytes(msg.as_bytes(), policy=email.policy.default)


# (client, the CSR's HTML with its quoted history) -> what must stay, what must go.
CLIENTS = [
    ("gmail", '<div dir="ltr"><b>Kept answer</b><br><ul><li>item</li></ul></div><br>'
              '<div class="gmail_quote"><div dir="ltr" class="gmail_attr">On Mon, Nov 30, 2026 at 10:00'
              ' Support &lt;support@example.com&gt; wrote:<br></div><blockquote class="gmail_quote">'
              f"{QUOTED_MARKER}</blockquote></div>"),
    ("thunderbird", '<p><b>Kept answer</b></p><ul><li>item</li></ul><div class="moz-cite-prefix">On '
                    '30.11.2026 10:00, Support wrote:<br></div><blockquote type="cite">'
                    f"{QUOTED_MARKER}</blockquote>"),
    ("outlook web", '<div><b>Kept answer</b></div><ul><li>item</li></ul><hr><div id="divRplyFwdMsg">'
                    "<b>From:</b> Support<br><b>Sent:</b> Monday<br><b>Subject:</b> x</div>"
                    f"<div>{QUOTED_MARKER}</div>"),
    ("apple mail", '<div><b>Kept answer</b><ul><li>item</li></ul><div><br><blockquote type="cite">'
                   f"<div>On 30 Nov 2026, Support wrote:</div>{QUOTED_MARKER}</blockquote></div></div>"),
]


@pytest.mark.parametrize(("client", "html"), CLIENTS, ids=[c[0] for c in CLIENTS])
def test_csr_html_per_client(client: str, html: str) -> None:
    got = csr_html(_multipart(html), "Kept answer\n\n- item")
    assert got is not None
    kept, images = got
    assert "<b>Kept answer</b>" in kept and "<li>item</li>" in kept and images == []
    assert QUOTED_MARKER not in kept and "wrote:" not in kept and "From:" not in kept


@pytest.mark.parametrize(("html", "expected"), [
    ("<div><b>Answer</b></div><div>-- </div><div>Jane Doe<br>ACME</div>", "<div><b>Answer</b></div>"),
    ('<p>Answer <i>here</i><br>-- <br>Jane<br>ACME</p>', "<p>Answer <i>here</i><br></p>"),
    ("<p>Answer</p><p>--&nbsp;</p><p>Jane</p>", "<p>Answer</p>"),
    ("<p>a -- b<br>c</p>", "<p>a -- b<br>c</p>"),  # a dash in a sentence is not a delimiter
    ("<p>x--<br>y</p>", "<p>x--<br>y</p>"),
    ("<p>-- <br>only a signature</p>", "<p>-- <br>only a signature</p>"),  # nothing before it
    ("<p>Answer</p><p>--</p>" + "<p>line</p>" * 20, "<p>Answer</p><p>--</p>" + "<p>line</p>" * 20),
])
def test_drop_signature(html: str, expected: str) -> None:
    from smtpd_hook.sanitize import drop_signature

    assert drop_signature(html) == expected
