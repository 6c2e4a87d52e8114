"""Templates: every built-in pair renders in every language; overrides per
pool and per mailbox; a broken override is found by check and falls back at
run time; the greeting line."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from smtpd_hook.render import LANGUAGES, Renderer, greeting_line, paragraphs
from smtpd_hook.samples import INTAKE, sample

BUILTINS = Renderer().builtin_names()


def test_every_event_has_a_builtin_pair() -> None:
    root = Path(__file__).parents[2] / "smtpd_hook" / "templates"
    names = {f"{a}/{n}" for a, n in BUILTINS}
    assert names == {
        "customer/ack", "customer/closed", "customer/escalated", "customer/reminder",
        "customer/reply", "customer/solution", "customer/survey", "customer/thanks",
        "customer/intake_prefix", "customer/intake_rejected",
        "csr/approval", "csr/notice", "csr/notify", "department/consult", "department/overdue"}
    for lang in LANGUAGES:
        base = root if lang == "en" else root / lang
        for name in names:
            for ext in ("txt", "html"):
                assert (base / f"{name}.{ext}.j2").is_file(), (lang, name, ext)


# Words each language's text must show: the template really is in that language.
MARKERS = {"en": {"customer": "hello john,", "csr": "case", "department": "case"},
           "pl": {"customer": "dzień dobry john,", "csr": "spraw", "department": "spraw"}}


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize(("audience", "name"), BUILTINS)
def test_builtin_renders(audience: str, name: str, language: str) -> None:
    renderer = Renderer()
    context = sample(audience, name, language)
    out = renderer.render(audience, name, context, language=language)
    prefix = f"builtin/{language}/" if language != "en" else "builtin/"
    assert out.sources == (f"{prefix}{audience}/{name}.txt.j2", f"{prefix}{audience}/{name}.html.j2")
    assert out.text.strip() and out.html is not None
    assert out.html.lstrip().startswith("<!DOCTYPE html>") and f'<html lang="{language}">' in out.html
    assert MARKERS[language][audience] in out.text.lower()
    if name in INTAKE:  # no case yet: the sender is told how to open one
        assert "Printer does not print" in out.text and "Printer does not print" in out.html
        evil = {**context, "subject": "<script>x</script> & co"}
    else:
        assert "CS0000042" in out.text and "CS0000042" in out.html
        # Escaping: a subject with markup never becomes markup.
        evil = {**context, "case": {**context["case"], "subject": "<script>x</script> & co"}}
    html = renderer.render(audience, name, evil, language=language).html or ""
    assert "<script>x" not in html


def test_text_only_has_no_html() -> None:
    out = Renderer().render("customer", "ack", sample("customer", "ack"), html=False)
    assert out.html is None and "CS0000042" in out.text


def test_english_text_kept() -> None:
    """The text part of the acknowledgement is what it was before HTML came."""
    out = Renderer().render("customer", "ack", sample("customer", "ack"))
    assert out.text.startswith("Hello John,\n\nThank you for contacting Example Support.")
    assert out.text == Renderer().text("customer/ack.txt.j2", sample("customer", "ack"))


def test_product_shown_when_present_only() -> None:
    ctx = sample("csr", "notify")
    assert "Product:   LaserJet 2000" in Renderer().render("csr", "notify", ctx).text
    without = {**ctx, "case": {k: v for k, v in ctx["case"].items() if k != "product"}}
    assert "Product" not in Renderer().render("csr", "notify", without).text


def _write(root: Path, rel: str, text: str) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


@pytest.mark.parametrize(("pool", "mailbox", "expected"), [
    ("default", "support@example.com", "global"),
    ("billing", "support@example.com", "pool billing"),
    ("billing", "vip@example.com", "mailbox vip"),
    ("other", "vip@example.com", "mailbox vip"),
    ("other", "VIP@Example.com", "mailbox vip"),
])
def test_override_order(tmp_path: Path, pool: str, mailbox: str, expected: str) -> None:
    _write(tmp_path, "customer/ack.txt.j2", "global {{ case.number }}\n")
    _write(tmp_path, "billing/customer/ack.txt.j2", "pool billing {{ case.number }}\n")
    _write(tmp_path, "billing/customer/ack.html.j2", "<p>pool billing html</p>\n")
    _write(tmp_path, "vip@example.com/customer/ack.txt.j2", "mailbox vip {{ threadcount }}\n")
    out = Renderer(tmp_path).render("customer", "ack", sample("customer", "ack"), pool=pool,
                                    mailbox=mailbox)
    assert out.text.startswith(expected)
    if expected == "pool billing":
        assert out.html == "<p>pool billing html</p>\n"
    else:  # no HTML twin at that level: the HTML says the text's words
        assert expected in (out.html or "") and "Thank you" not in (out.html or "")


def test_override_extends_builtin_layout(tmp_path: Path) -> None:
    _write(tmp_path, "customer/closed.html.j2",
           '{% extends "builtin/_layout.html.j2" %}{% block body %}<p>Bye {{ customer.first_name }}'
           '</p>{% endblock %}')
    _write(tmp_path, "customer/closed.txt.j2", "Bye {{ customer.first_name }}\n")
    out = Renderer(tmp_path).render("customer", "closed", sample("customer", "closed"))
    assert "<p>Bye John</p>" in (out.html or "") and "<!DOCTYPE html>" in (out.html or "")


@pytest.mark.parametrize(("source", "line", "message"), [
    ("Hello\n{{ case.numbr }}\n", 2, "numbr"),
    ("Hello\n\n{% if %}\n", 3, "Expected an expression"),
    ("{{ reply.__class__.__mro__ }}\n", 1, "unsafe"),
    ("{{ nosuch }}\n", 1, "'nosuch' is undefined"),
    ("A closing note from\n{{ csr.name }}\n", 2, "'csr' is undefined"),  # answers only
])
def test_broken_override_check_and_fallback(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                            source: str, line: int, message: str) -> None:
    _write(tmp_path, "billing/customer/closed.txt.j2", source)
    renderer = Renderer(tmp_path)
    problems = renderer.check(lambda a, n: sample(a, n))
    assert len(problems) == 1
    assert problems[0].file == str(tmp_path / "billing/customer/closed.txt.j2")
    assert problems[0].line == line and message in problems[0].message, problems[0]
    assert str(problems[0]).startswith(f"{tmp_path}/billing/customer/closed.txt.j2:{line}: ")
    with caplog.at_level(logging.ERROR, logger="casegate.render"):
        out = renderer.render("customer", "closed", sample("customer", "closed"), pool="billing")
    assert out.text.startswith("Hello John,\n\nYour case CS0000042")  # the built-in
    assert out.sources[0] == "builtin/customer/closed.txt.j2"
    assert any("billing/customer/closed.txt.j2" in r.getMessage() and "built-in" in r.getMessage()
               for r in caplog.records)


def test_check_names_misplaced_and_unknown(tmp_path: Path) -> None:
    _write(tmp_path, "customer/ackk.txt.j2", "x\n")
    _write(tmp_path, "billing/ack.txt.j2", "x\n")
    _write(tmp_path, "customer/ack.txt.j2", "fine {{ case.number }}\n")
    problems = {Path(p.file).relative_to(tmp_path).as_posix(): p.message
                for p in Renderer(tmp_path).check(lambda a, n: sample(a, n))}
    assert set(problems) == {"customer/ackk.txt.j2", "billing/ack.txt.j2"}
    assert "no built-in template customer/ackk" in problems["customer/ackk.txt.j2"]
    assert "not where casegate looks" in problems["billing/ack.txt.j2"]


def test_builtin_failure_is_not_hidden() -> None:
    """A built-in that fails is a bug: it raises (and the delivery gets a 451)."""
    with pytest.raises(Exception, match="undefined"):
        Renderer().render("customer", "ack", {"case": {"number": "CS1"}})


@pytest.mark.parametrize(("name", "template", "language", "expected"), [
    ("John Smith", "", "en", "Hello John,"),
    ("", "", "en", "Hello,"),
    ("john@example.com", "", "en", "Hello,"),
    ("Anna Nowak", "", "pl", "Dzień dobry Anna,"),
    ("", "", "pl", "Dzień dobry,"),
    ("John Smith", "Dear {name},", "en", "Dear John Smith,"),
    ("", "Dear {name},", "en", "Dear,"),
    ("John Smith", "Hi {first name}!", "en", "Hi John!"),
    ("Smith, John", "Szanowni Państwo,", "pl", "Szanowni Państwo,"),
    ("John", "", "xx", "Hello John,"),
])
def test_greeting_line(name: str, template: str, language: str, expected: str) -> None:
    assert greeting_line(name, template, language) == expected


@pytest.mark.parametrize(("text", "html"), [
    ("a & b", "<p>a &amp; b</p>"),
    ("one\ntwo\n\nthree", "<p>one<br>\ntwo</p>\n<p>three</p>"),
    ("<script>", "<p>&lt;script&gt;</p>"),
    ("see <https://x.test/a?b=1&c=2>", '<p>see &lt;<a href="https://x.test/a?b=1&amp;c=2">'
                                       'https://x.test/a?b=1&amp;c=2</a>&gt;</p>'),
])
def test_paragraphs(text: str, html: str) -> None:
    assert str(paragraphs(text)) == html
