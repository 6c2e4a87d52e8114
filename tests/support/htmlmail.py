"""HTML-only answers as Outlook writes them: multipart/related with the HTML
and its pictures (Content-ID, inline), the quoted history under a header
block in a border-top div. For the tests of the CSR's formatting."""

from __future__ import annotations

import email.policy
import email.utils
from collections.abc import Iterable
from email.message import EmailMessage

# A real 1x1 PNG with a few more bytes, so "same bytes" means something.
PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d4944415478da63f8cfc0f01f0005000201a5b1d8b70000000049454e44ae426082")

QUOTED_MARKER = "QUOTED-HISTORY-MUST-GO"


def outlook_html(answer_html: str, *, quoted: str = QUOTED_MARKER) -> str:
    return f"""<html xmlns:o="urn:schemas-microsoft-com:office:office">
<head><meta http-equiv="Content-Type" content="text/html; charset=utf-8">
<style><!-- p.MsoNormal {{margin:0cm; font-size:11.0pt; font-family:"Calibri",sans-serif;}} --></style>
</head>
<body lang="EN-GB" link="#0563C1">
<div class="WordSection1">
{answer_html}
<p class="MsoNormal">&nbsp;</p>
<div style="border:none;border-top:solid #E1E1E1 1.0pt;padding:3.0pt 0cm 0cm 0cm">
<p class="MsoNormal"><b>From:</b> Example Support &lt;support+CS0000001@example.com&gt;<br>
<b>Sent:</b> Monday, November 30, 2026 10:00<br>
<b>To:</b> Jane Doe &lt;jane@example.com&gt;<br>
<b>Subject:</b> [Case #CS0000001] Printer</p>
</div>
<p class="MsoNormal">{quoted}</p>
<p class="MsoNormal">##- Please type your reply above this line -##</p>
</div>
</body>
</html>
"""


def outlook_answer(*, from_: str, to: str, subject: str, answer_html: str,
                   images: Iterable[tuple[str, bytes]] = (), in_reply_to: str | None = None,
                   quoted: str = QUOTED_MARKER) -> bytes:
    """An HTML-only Outlook message; ``images`` are (content-id, PNG bytes)."""
    msg = EmailMessage(policy=email.policy.SMTP)
    msg["From"] = from_
    msg["To"] = to
    msg["Subject"] = subject
    msg["Date"] = email.utils.formatdate(localtime=False)
    msg["Message-ID"] = email.utils.make_msgid(domain="outlook.test")
    if in_reply_to:
        msg["In-Reply-To"] = in_reply_to
        msg["References"] = in_reply_to
    msg.set_content(outlook_html(answer_html, quoted=quoted), subtype="html")
    for n, (cid, data) in enumerate(images, start=1):
        msg.add_related(data, maintype="image", subtype="png", cid=f"<{cid}>",
                        filename=f"image{n:03}.png", disposition="inline")
    return msg.as_bytes()
