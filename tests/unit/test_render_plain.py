"""build_message's fast path (ASCII headers, no files) writes exactly what
the email package writes, byte for byte but the boundary."""

from __future__ import annotations

import datetime as dt
import re

import pytest

from smtpd_hook import render
from smtpd_hook.render import build_message, format_address

WHEN = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
BOUNDARY = re.compile(rb"={15}\d+==")


def slow(monkeypatch: pytest.MonkeyPatch, **kw: object) -> bytes:
    with monkeypatch.context() as m:
        m.setattr(render, "_plain_field", lambda name, value: False)
        return build_message(**kw)  # type: ignore[arg-type]


CASES = [
    {},
    {"html": "<p>Hello</p>\n"},
    {"html": "<p>Zażółć gęślą jaźń</p>\n" + "x" * 1200 + "\n"},
    {"body": "Dzień dobry,\n\nżółw =3D\r\nline\rend", "html": "<p>é</p>"},
    {"body": "no final newline", "html": "<p>x</p>"},
    {"body": "", "html": ""},
    {"body": "long " * 300 + "\n", "html": None},
    {"body": "=?utf-8?q?x?=\n.\n..\nFrom me\n"},
    {"subject": "=?utf-8?q?Zaz=C3=B3=C5=82=C4=87?="},
    {"subject": "Zażółć"},
    {"subject": "two  spaces", "html": "<b>x</b>"},
    {"subject": " leading", "html": "<b>x</b>"},
    {"subject": "x" * 870},
    {"subject": "y" * 990},
    {"subject": "tab\there"},
    {"from_": format_address("Jane Q. Doe", "jane@example.com")},
    {"from_": format_address('Doe, "Jane"', "jane@example.com")},
    {"from_": format_address("Józef", "j@example.com")},
    {"from_": format_address("C 12 via Example Support", "support+CS0000012@example.com")},
    {"to": ["a@example.com", "B B <b@example.com>"], "cc": ["c@example.com", "d.e@example.com"]},
    {"to": ["\"q\"@example.com"]},
    {"to": ["józef@example.com"]},
    {"to": ["x@[192.0.2.1]"]},
    {"references": [f"<r{i}.abc@example.com>" for i in range(30)], "in_reply_to": "<r29.abc@example.com>"},
    {"references": ["<a b@x>", "<c@d>"]},
    {"headers": {"Auto-Submitted": "auto-replied", "X-Auto-Response-Suppress": "All",
                 "Precedence": "auto_reply", "X-Loop": "abc123.def", "X-Casegate-Rules": "r " * 440}},
    {"headers": {"X-Casegate-Rules": "customer: new case; open_case (opened) " * 20}},
    {"headers": {"X-Other": "kept", "Casegate-Loop": "v=1; id=e798e6c9abe9; hops=1; sig=tseinmvdarpprntv"}},
    {"headers": {"Sender": "x@example.com", "Content-Language": "en"}},
    {"date": dt.datetime(2026, 6, 1, 12, 0, tzinfo=dt.timezone(dt.timedelta(hours=2)))},
    {"reply_to": None, "in_reply_to": None},
]


@pytest.mark.parametrize("case", CASES)
def test_the_fast_path_writes_what_the_email_package_writes(case: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    kw: dict[str, object] = {
        "from_": format_address("Example Support", "support@example.com"), "to": ["c1@customer.test"],
        "subject": "[CS0000001] printer", "body": "Hello C,\n\nwe got it.\n",
        "message_id": "<CS0000001.abc.def@example.com>", "date": WHEN,
        "reply_to": "support+CS0000001@example.com", "in_reply_to": "<x@y.test>",
        "references": ["<x@y.test>"], "html": None}
    kw.update(case)
    fast = build_message(**kw)  # type: ignore[arg-type]
    assert BOUNDARY.sub(b"B", fast) == BOUNDARY.sub(b"B", slow(monkeypatch, **kw))


def test_common_mail_takes_the_fast_path(monkeypatch: pytest.MonkeyPatch) -> None:
    taken: list[int] = []
    real = render._build_plain
    monkeypatch.setattr(render, "_build_plain", lambda *a: taken.append(1) or real(*a))
    for case in CASES:
        kw: dict[str, object] = {
            "from_": "Example Support <support@example.com>", "to": ["c1@customer.test"],
            "subject": "[CS0000001] printer", "body": "Hello\n", "message_id": "<a.b@example.com>",
            "date": WHEN, **case}
        build_message(**kw)  # type: ignore[arg-type]
    assert len(taken) >= 12, len(taken)
