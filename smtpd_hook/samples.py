"""A sample of every template's variables: what ``casegate template check``
renders each override against, and ``template render`` shows without
``--case``. Keep it in step with docs/templates.md (a test renders every
built-in with it, so a variable missing here fails there)."""

from __future__ import annotations

from typing import Any

from markupsafe import Markup

from rules.quotes import REPLY_MARKER
from smtpd_hook.render import greeting_line

_CASE: dict[str, Any] = {"number": "CS0000042", "status": "in_progress", "customer": "john.smith@example.net",
         "customer_address": "john.smith@example.net", "customer_name": "John Smith",
         "assignee": "jane@example.com", "subject": "Printer does not print",
         "mailbox": "support@example.com", "created": "2026-11-30 09:15 UTC",
         "updated": "2026-11-30 10:02 UTC", "closed": None, "follow_up_of": None,
         "rating": None, "rating_comment": "", "answers": {}, "product": "LaserJet 2000"}
_THREAD = [
    {"date": "2026-11-30 09:15 UTC", "author": "John Smith <john.smith@example.net>",
     "text": "My printer does not print.\nWhat can I do?", "from_customer": True},
    {"date": "2026-11-30 10:02 UTC", "author": "Jane Doe",
     "text": "Please switch it off and on again.", "from_customer": False},
]
_FILES = [{"id": 7, "filename": "photo.jpg", "content_type": "image/jpeg", "size": 48213}]
_MAILTO = "mailto:support+CS0000042@example.com?subject=Re%3A%20%5BCase%20%23CS0000042%5D&body="


def customer_base(language: str = "en") -> dict[str, Any]:
    return {
        "greeting": greeting_line("John Smith", "", language),
        "case": dict(_CASE), "organization": "Example Support", "links": {},
        "customer": {"address": _CASE["customer"], "name": "John Smith", "first_name": "John"},
        "pool": {"name": "default", "language": language},
        "mailbox": {"address": "support@example.com", "display_name": "Example Support"},
        "filelist": list(_FILES), "threadcount": len(_THREAD), "threadlist": list(_THREAD),
        "threadlast": _THREAD[-1],
    }


def answer_extra() -> dict[str, Any]:
    return {
        "reply": "Please switch it off and on again.\n\nJane",
        "reply_html": Markup("<p>Please switch it <b>off and on</b> again.</p>"),
        "csr": {"name": "Jane Doe", "signature": "Jane Doe\nSupport team",
                "address": "jane@example.com"},
        "signoff": "Jane Doe\nSupport team\nExample Support",
        "footer_html": Markup('<p><img src="cid:footer.sample@casegate" alt="Example"> Example Ltd</p>'),
        "footer_text": "Example Ltd",
        "history": [dict(_THREAD[0])], "history_omitted": 0,
    }


def links(name: str) -> dict[str, Any]:
    if name == "solution":
        return {"accept": _MAILTO + "Accept", "reject": _MAILTO + "Reject"}
    if name == "survey":
        return {"grades": [{"grade": g, "url": f"{_MAILTO}{g}"} for g in range(5, 0, -1)]}
    return {}


ANSWERS = ("reply", "solution")
INTAKE = ("intake_prefix", "intake_rejected")  # no case: the sender is told how to open one


def sample(audience: str, name: str, language: str = "en") -> dict[str, Any]:
    """Every variable the template ``audience/name`` may use, with sample values."""
    if audience == "customer" and name in INTAKE:
        return {"greeting": greeting_line("John Smith", "", language),
                "organization": "Example Support", "mailbox": "orders@example.com",
                "subject_prefix": "[Order]", "subject": "Printer does not print"}
    if audience == "customer":
        context = customer_base(language)
        if name in ANSWERS:  # only these get a CSR's words (a check must fail as serving would)
            context.update(answer_extra())
        context["links"] = links(name)
        return context
    case = dict(_CASE)
    if audience == "department":
        return {"csr_name": "Jane Doe", "organization": "Example Support", "department": "Billing",
                "question": "Was invoice 2026/11/123 paid?", "case": case,
                "due": "2026-12-02 09:15 UTC", "history": [dict(_THREAD[0])], "history_omitted": 0,
                "asked": "2026-11-30 09:15 UTC", "to_department": True}
    if name == "notify":
        return {"marker": REPLY_MARKER, "headline": "New case", "note": "", "case": case,
                "assignee": "Jane Doe <jane@example.com>",
                "files": [{**_FILES[0], "attached": True}],
                "message": {"author": _THREAD[0]["author"], "date": _THREAD[0]["date"],
                            "text": _THREAD[0]["text"]},
                "history": [dict(_THREAD[1])], "history_omitted": 0,
                "actions": [{"label": "Close", "url": _MAILTO + "%23close"}],
                "participants": ["carol@example.net"], "product": _CASE["product"],
                "files_held": [{"id": 8, "filename": "video.mp4", "size": 73400320,
                                "reason": "73.4 MB is over the 5 MB a message may carry"}]}
    if name == "approval":
        return {"csr": "Jim Newbie", "draft": 3, "commands": "#solution",
                "preview": "Hello John,\n\nPlease switch it off and on again.", "case": case,
                "approve": _MAILTO + "%23approve%203", "reject": _MAILTO + "%23reject%203"}
    return {"text": "Case CS0000042 is closed.", "case": case}
