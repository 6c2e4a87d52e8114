"""rules.quotes against quotequail and mail-parser-reply, case by case.

    .venv/bin/pip install quotequail mail-parser-reply   # not dependencies of casegate
    .venv/bin/python bench/quotes_compare.py [--corpus ../shared/corpus] [--json] [--misses]

Every case is a plain-text reply and the new text it must give. The three
extractors get the same text and are judged the same way (whitespace
normalised; the email_reply_parser rows with must/must-not snippets check
those):

* **casegate**: ``rules.quotes.strip_quoted_text`` (signature kept for the
  talon rows, which label the text above the quote, signature included);
* **quotequail**: ``quotequail.quote(text, quote_intro_line=True)``, the
  parts it expands (the "On ... wrote:" line goes with the quote);
* **NAME+ours**: the library as the first pass, under our marker cut and
  our trailer handling (signature, device lines, list footers);
* **mail-parser-reply**: ``EmailReplyParser(languages=ALL).parse_reply(text)``
  with every language it knows switched on (a filter cannot know the
  customer's language in advance; one language at a time only loses more).

Sources of cases:

* ``languages``: tests/unit/test_quotes_languages.py (one row per language
  and client: attribution lines, Outlook header blocks, Original Message,
  Zoho, Zimbra, negatives);
* ``talon``: the corpus's real replies (``.eml``; the text/plain body as
  ``rules.quotes.body_text`` reads it; label ``NAME_reply_text`` or "Hello");
* ``erp``: the email_reply_parser bodies with the expectations decided in
  tests/unit/test_quotes.py (``ERP_EXPECTED``);
* ``html``: HTML-only replies from the clients CSRs use (``HTML_REPLIES`` of
  tests/unit/test_quotes.py) and the HTML alternative of each talon reply:
  ours is ``extract_reply`` on the message, quotequail ``quote_html`` then
  our ``html_to_text``, mail-parser-reply our ``html_to_text`` then its text
  parser (it has no HTML mode);
* ``plain``: the hand-written rule cases of tests/unit/test_quotes.py
  (``PLAIN_CASES``, English and a few other languages).

Prints the number right of each source, language and client for the three.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from collections.abc import Callable
from email import policy
from email.parser import BytesParser
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rules.quotes import (  # noqa: E402
    _cut_at_marker,
    _drop_signature,
    _split_lines,
    _tidy,
    body_text,
    extract_reply,
    html_to_text,
    strip_quoted_text,
)
from tests.unit.test_quotes import (  # noqa: E402
    ERP_EXPECTED,
    HTML_REPLIES,
    PLAIN_CASES,
    TALON_HTML_EXPECTED,
    html_message,
)
from tests.unit.test_quotes_languages import ROWS  # noqa: E402

Expected = str | tuple[tuple[str, ...], tuple[str, ...]]


class Case(NamedTuple):
    source: str
    name: str
    language: str
    client: str
    text: str
    expected: Expected
    keep_signature: bool = False
    html: bool = False  # ``text`` is HTML (an HTML-only reply)


def norm(text: str) -> str:
    return " ".join((text or "").split())


def _plain_language(name: str) -> str:
    for prefix, lang in (("german", "de"), ("french", "fr"), ("spanish", "es"), ("italian", "it"),
                         ("dutch", "nl"), ("russian", "ru"), ("portuguese", "pt"),
                         ("swedish", "sv"), ("outlook_german", "de"), ("outlook_french", "fr"),
                         ("outlook_italian", "it"), ("outlook_spanish", "es"),
                         ("von_meinem", "de"), ("envoye", "fr")):
        if name.startswith(prefix):
            return lang
    return "en"


def _plain_client(name: str) -> str:
    for key in ("outlook", "gmail", "android", "iphone", "marker", "mailing_list"):
        if key in name:
            return key
    return "other"


def cases(corpus: Path) -> list[Case]:
    found = [Case("languages", r.name, r.language, r.client, r.text, r.expected) for r in ROWS]
    talon = corpus / "replies" / "talon"
    if not talon.is_dir():
        talon = ROOT / "tests" / "data" / "replies" / "talon"
    for path in sorted(talon.glob("*.eml")):
        msg = BytesParser(policy=policy.default).parsebytes(path.read_bytes())
        label = path.with_name(path.stem + "_reply_text")
        expected = label.read_text(encoding="utf-8") if label.is_file() else "Hello"
        found.append(Case("talon", path.name, "en", path.stem, body_text(msg), expected,
                          keep_signature=True))
    erp = corpus / "replies" / "email_reply_parser"
    if not erp.is_dir():
        erp = ROOT / "tests" / "data" / "replies" / "email_reply_parser"
    for path in sorted(erp.glob("*.txt")):
        if path.name in ERP_EXPECTED:
            found.append(Case("erp", path.name, "en", "erp", path.read_text(encoding="utf-8"),
                              ERP_EXPECTED[path.name]))
    for name, (markup, expected, _leaks) in sorted(HTML_REPLIES.items()):
        found.append(Case("html", name, "en", name.split("_")[0], markup, expected, html=True))
    for path in sorted(talon.glob("*.eml")):
        msg = BytesParser(policy=policy.default).parsebytes(path.read_bytes())
        part = next((p for p in msg.walk() if p.get_content_type() == "text/html"), None)
        if part is None:
            continue
        label = path.with_name(path.stem + "_reply_text")
        expected = TALON_HTML_EXPECTED.get(
            path.name, label.read_text(encoding="utf-8") if label.is_file() else "Hello")
        found.append(Case("html", f"talon/{path.name}", "en", path.stem, part.get_content(),
                          expected, keep_signature=True, html=True))
    for name, (text, expected) in sorted(PLAIN_CASES.items()):
        found.append(Case("plain", name, _plain_language(name), _plain_client(name), text,
                          expected))
    return found


def casegate(case: Case) -> str:
    if case.html:
        return extract_reply(html_message(case.name, case.text), keep_signature=case.keep_signature)
    return strip_quoted_text(case.text, keep_signature=case.keep_signature)


def _quotequail() -> Callable[[Case], str]:
    import quotequail

    def run(case: Case) -> str:
        if case.html:  # quote_html, then our HTML-to-text (mail-parser-reply has no HTML)
            kept = "".join(part for keep, part in quotequail.quote_html(
                case.text, quote_intro_line=True) if keep)
            return html_to_text(kept)
        text = case.text.replace("\r\n", "\n")
        return "\n".join(part for keep, part in quotequail.quote(text, quote_intro_line=True)
                         if keep)
    return run


def _mail_parser_reply() -> Callable[[Case], str]:
    from mailparser_reply import EmailReplyParser
    from mailparser_reply.constants import MAIL_LANGUAGES

    parser = EmailReplyParser(languages=[lang for lang in MAIL_LANGUAGES if lang != "david"])

    def run(case: Case) -> str:
        text = html_to_text(case.text) if case.html else case.text  # it reads text only
        return parser.parse_reply(text) or ""
    return run


def under_ours(first_pass: Callable[[Case], str]) -> Callable[[Case], str]:
    """A library as the first pass between our marker cut and our trailers
    (signature, "Sent from my iPhone", list footers): how the issue would
    adopt one."""

    def run(case: Case) -> str:
        if case.html:
            out = first_pass(case)
            lines = _split_lines(out)
            return _tidy(lines if case.keep_signature else _drop_signature(lines))
        cut = "\n".join(_cut_at_marker(_split_lines(case.text)))
        out = first_pass(case._replace(text=cut))
        lines = _split_lines(out)
        return _tidy(lines if case.keep_signature else _drop_signature(lines))
    return run


def right(result: str, expected: Expected) -> bool:
    if isinstance(expected, str):
        return norm(result) == norm(expected)
    must, must_not = expected
    return all(s in result for s in must) and not any(s in result for s in must_not)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", type=Path, default=ROOT.parent / "shared" / "corpus")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--misses", action="store_true", help="list each extractor's wrong cases")
    args = ap.parse_args(argv)
    extractors: dict[str, Callable[[Case], str]] = {"casegate": casegate}
    for name, factory in (("quotequail", _quotequail), ("mail-parser-reply", _mail_parser_reply)):
        try:
            extractors[name] = factory()
            extractors[f"{name}+ours"] = under_ours(extractors[name])
        except ImportError as exc:
            print(f"{name} not installed ({exc}): pip install quotequail mail-parser-reply",
                  file=sys.stderr)
    all_cases = cases(args.corpus)
    # group -> extractor -> [right, total]
    tally: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(lambda: [0, 0]))
    misses: dict[str, list[str]] = defaultdict(list)
    for case in all_cases:
        groups = ("all", f"source {case.source}", f"language {case.language}",
                  f"client {case.client}" if case.source != "talon" else "client (talon) "
                  + case.client)
        for name, extract in extractors.items():
            try:
                ok = right(extract(case), case.expected)
            except Exception as exc:  # a library that raises gets the case wrong
                ok = False
                misses[name].append(f"{case.source}/{case.name}: raised {type(exc).__name__}")
            else:
                if not ok:
                    misses[name].append(f"{case.source}/{case.name}")
            for group in groups:
                tally[group][name][1] += 1
                tally[group][name][0] += ok
    if args.json:
        print(json.dumps({g: {n: {"right": r, "total": t} for n, (r, t) in v.items()}
                          for g, v in tally.items()}, indent=1))
        return 0
    names = list(extractors)
    width = max(len(g) for g in tally) + 2
    print("group".ljust(width) + "".join(n.rjust(23) for n in names))
    order = sorted(tally, key=lambda g: (g != "all", g.split()[0], g))
    for group in order:
        row = tally[group]
        print(group.ljust(width) + "".join(f"{row[n][0]:>3} / {row[n][1]:<3}".rjust(23)
                                           for n in names))
    if args.misses:
        for name in names:
            print(f"\n{name} wrong ({len(misses[name])}):")
            for line in misses[name]:
                print("  " + line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
