"""Extracting the new text of a reply.

A CSR answers a case from any mail client; casegate must send the customer
what the CSR wrote, and nothing of the quoted history below it (which holds
the internal notification, and often internal notes). This module finds that
new text. It is pure: stdlib only, no I/O, never raises on odd input.

The rules, in the order they apply:

* **The reply marker.** Every notification casegate sends to a CSR starts with
  :data:`REPLY_MARKER`. An unquoted marker cuts the text there. A quoted one
  (``> ##- Please type ...``) is part of a quote, and quotes are dropped
  anyway, so text the CSR wrote *below* a quoted notification (bottom
  posting) survives.
* **Quoted lines** (``>`` at the start) are dropped wherever they are. Answers
  written between quotes (interleaved replies) are kept, in order, separated
  by a blank line: the customer gets every word the CSR wrote and none of the
  quoted words. The quote is not lost for context: casegate shows the case
  history below the answer. A message with no sign of being a reply (no
  attribution line, no header block, no marker, fewer than three quoted
  lines) keeps its ``>`` lines, so ``>>> import x`` in a one-off example
  survives; lines made only of ``>`` are always dropped.
* **Splitters** start the quoted history: "On <date>, <name> wrote:" (one to
  three lines; German, French, Spanish, Italian, Portuguese, Dutch,
  Scandinavian, Polish, Czech, Russian, Finnish, Hungarian, Turkish,
  Vietnamese and Chinese forms), "-----Original Message-----" and its
  translations, a rule of underscores or dashes followed by a header block,
  and an Outlook header block ("From: / Sent: / To: / Subject:", localized,
  also ``*From:*`` and flattened onto one line; it needs a From: and a
  Subject: or an address, so a CSR's "Date: / Subject:" appointment details
  are not one). A splitter followed by quoted lines is an attribution:
  it goes with its quote and the text after the quote is kept. A splitter
  followed by unquoted text (Outlook's unprefixed history) cuts the rest of
  the message. Weak splitters only count in front of a quote (or at the very
  end): an attribution without an address ("On 3 June at 10:00, the
  technician wrote:" may be the CSR relaying a note), "Bob wrote:", and
  "<date> <name> <email>:" (Gmail in Japanese or Russian). An unprefixed
  quoted notification is still cut at its marker.
* **Forwarded messages** ("---------- Forwarded message ---------",
  "Begin forwarded message:") are content the CSR chose to send: from there
  on only the marker cuts.
* **Trailers** at the end: the signature after a ``-- `` line (at most 15
  lines; a bare ``--`` at most 6), "Sent from my iPhone" and the usual
  device and app lines (in several languages), and a mailing-list footer.
  casegate adds the CSR's signature itself. ``keep_signature=True`` keeps
  them (the text up to the quote, as talon labels it).

HTML is cleaned structurally first (:func:`strip_quoted_html`), converted to
text (:func:`html_to_text`), then run through the same text rules, which
catch the header blocks Outlook writes as plain paragraphs.
"""

from __future__ import annotations

import functools
import html as _htmllib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import Message
from html.parser import HTMLParser

from rules import limits
from rules.inbound import children as _children
from rules.inbound import part_role

__all__ = [
    "REPLY_MARKER",
    "body_text",
    "extract_reply",
    "html_to_text",
    "strip_quoted_html",
    "strip_quoted_text",
]

REPLY_MARKER: str = "##- Please type your reply above this line -##"

# The marker as clients may mangle it: other whitespace, lost hashes.
_MARKER_RE = re.compile(
    r"(?:#{1,3}[ \t\xa0]*-?[ \t\xa0]*)?please\s+type\s+your\s+reply\s+above\s+this\s+line"
    r"(?:[ \t\xa0]*-?[ \t\xa0]*#{1,3})?",
    re.IGNORECASE,
)
_MARKER_HINT = "above this line"

# --------------------------------------------------------------------------
# Plain text
# --------------------------------------------------------------------------

_MAX_SIGNATURE_LINES = 15  # after "-- "
_MAX_BARE_SIGNATURE_LINES = 6  # after "--" (trailing space lost)
_MAX_LINE_FOR_HEADERS = 1000  # longer lines are never headers

_STRONG = 2
_WEAK = 1

# "On <date>, <name> wrote:" and its translations. Each entry: keywords that
# must occur (lowercase) before the regex is tried, and the regex, matched
# against the whole (joined, whitespace-normalized) header.
_ATTRIBUTIONS: tuple[tuple[tuple[str, ...], re.Pattern[str]], ...] = tuple(
    (keys, re.compile(rx, re.IGNORECASE))
    for keys, rx in (
        (("wrote", "writes", "sent"), r"[-\s]*on\s.{3,400}?\b(?:wrote|writes|sent)\s?:[-\s]*"),
        (("wrote",), r"-{2,}\s*on\s.{3,400}?\bwrote\s*:?\s*-{2,}"),
        (("schrieb",), r"am\s.{3,400}?\bschrieb\b.{0,300}?:"),
        (("schrieb",), r".{3,400}?\bschrieb\s+am\s.{3,200}?:"),  # Gmail: "X <x@y> schrieb am <date>:"
        (("écrit",), r"le\s.{3,400}?\ba\s+écrit\s?:"),
        (("escribió",), r"el\s.{3,400}?\bescribió\s?:"),
        (("scritto",), r"(?:il|in\s+data)\s.{3,400}?\bha\s+scritto\s?:"),
        (("escreveu",), r"em\s.{3,400}?\bescreveu\s?:"),
        (("schreef", "geschreven"), r"op\s.{3,400}?\b(?:schreef|geschreven)\b.{0,300}?:"),
        (("skrev",), r".{3,400}?\bskrev\b.{0,300}?:"),
        (("napisa", "pisze"), r".{3,400}?\b(?:napisał\w*(?:\(a\))?|pisze)\s?:"),
        (("napsal",), r".{3,400}?\bnapsal\w*(?:\(a\))?\s?:"),
        (("написал", "пишет"), r".{3,400}?\b(?:написал(?:а|\(а\))?|пишет)\s?:"),
        (("написав", "написала", "пише"), r".{3,400}?\b(?:написав|написала|написав\(ла\)|пише)\s?:"),
        (("のメッセージ", "書きました"), r".{3,400}?(?:のメッセージ|は書きました)\s?[:：]"),
        (("kirjoitti",), r".{3,400}?\bkirjoitti\s?:"),
        (("írta",), r".{3,400}?\bírta\s?:"),
        (("yazdı",), r".{3,400}?\byazdı\s?:"),
        (("đã viết",), r"vào\s.{3,400}?\bđã viết\s?:"),
        (("写道",), r".{3,400}?写道\s?[:：]"),
        (("작성",), r".{3,400}?님이\s?작성(?:하였습니다|했습니다)?\s?[:：]"),
    )
)
# Android's "---- John Smith wrote ----" carries no date.
_ANDROID_ATTRIBUTION_RE = re.compile(r"-{2,}\s*.{1,100}?\bwrote\s*-{2,}", re.IGNORECASE)
_DASHED_RE = re.compile(r"-{2,}\s*(.{3,500}?)\s*-{2,}")
# Weak forms, trusted only in front of a quote: "<name> wrote:" in any of
# the languages above, and "<date> <name> <email>:" (Gmail in Japanese,
# Russian; Android) or without the colon.
_WEAK_VERB_RE = re.compile(  # no sentence may end before the verb
    r"(?:(?![.!?]\s).){1,200}?\b(?:wrote|schrieb|a\s+écrit|escribió|ha\s+scritto|escreveu|schreef|skrev"
    r"|napisał\w*(?:\(a\))?|pisze|написал(?:а|\(а\))?|пишет|написав|написала|пише)\s?:",
    re.IGNORECASE,
)
_WEAK_EMAIL_RE = re.compile(
    r".{1,300}?(?:<\s?[^\s<>@]{1,64}@[^\s<>@]{1,255}>\s?[:：]?|[^\s<>@]{1,64}@[^\s<>@]{1,255}\s?[:：])"
)
# Cheap test before the patterns: every attribution holds one of these.
_ATTRIBUTION_HINT_RE = re.compile(
    "|".join(re.escape(k) for keys, _ in _ATTRIBUTIONS for k in keys) + "|@",
    re.IGNORECASE,
)
_DIGIT_RE = re.compile(r"\d")


def _hint_fold() -> dict[int, str]:
    """Every character that matches a hint's character under re.IGNORECASE
    (its case variants and sre's extra equivalences: ı/i, ſ/s, K/k, …),
    mapped to one representative of its class."""
    chars = sorted({ch for keys, _ in _ATTRIBUTIONS for k in keys for ch in k} | {"@"})
    bmp = "".join(map(chr, range(0x10000)))
    found = set(re.findall("[" + "".join(re.escape(c) for c in chars) + "]", bmp, re.IGNORECASE))
    table: dict[int, str] = {}
    for c in found:
        same = [k for k in chars if re.fullmatch(re.escape(k), c, re.IGNORECASE)]
        table[ord(c)] = min(same)
    return table


@functools.cache
def _hint_matcher() -> tuple[dict[int, str], re.Pattern[str]]:
    fold = _hint_fold()  # 20 ms: made at first use, not at import
    keys = {re.escape(k.translate(fold)) for keys, _ in _ATTRIBUTIONS for k in keys}
    return fold, re.compile("|".join(sorted(keys)) + "|@")


def _has_hint(text: str) -> bool:
    """``_ATTRIBUTION_HINT_RE.search(text)``, about 10x faster (a case-
    sensitive search of the folded text; IGNORECASE defeats sre's prefix
    scan) and true for exactly the same texts."""
    fold, rx = _hint_matcher()
    return rx.search(text.translate(fold)) is not None

_ORIGINAL_MESSAGE_RE = re.compile(
    r"[-=_*\s]*[-=_*]{2,}\s*(?:original message|reply message|original-nachricht"
    r"|ursprüngliche nachricht|originalnachricht|antwort nachricht|message d'origine"
    r"|message original|mensaje original|messaggio originale|oorspronkelijk bericht"
    r"|origineel bericht|mensagem original|oprindelig meddelelse|opprinnelig melding"
    r"|ursprungligt meddelande|originalmeddelande|alkuperäinen viesti|исходное сообщение"
    r"|wiadomość oryginalna|oryginalna wiadomość|původní zpráva|eredeti üzenet|orijinal ileti"
    r"|ursprüngliche mail|mail original|oorspronkelijk e-mailbericht|originalt meddelande"
    r"|вихідне повідомлення|原始邮件|元のメッセージ)\s*[-=_*]{2,}[-=_*\s]*",
    re.IGNORECASE,
)
_FORWARD_RE = re.compile(
    r"\s*(?:[-=_*]{2,}\s*(?:forwarded message|weitergeleitete nachricht|message transféré"
    r"|mensaje reenviado|messaggio inoltrato|doorgestuurd bericht|mensagem encaminhada"
    r"|videresendt meddelelse|vidarebefordrat meddelande|пересылаемое сообщение"
    r"|forwarded message follows)\s*[-=_*]{2,}|begin forwarded message\s?:"
    r"|début du message réexpédié\s?:|anfang der weitergeleiteten nachricht\s?:"
    r"|inicio del mensaje reenviado\s?:)\s*",
    re.IGNORECASE,
)
_RULE_RE = re.compile(r"\s*(?:_{10,}|-{10,}|={10,}|\*{10,})\s*")

# fmt: off
_HEADER_FAMILIES: dict[str, tuple[str, ...]] = {
    "from": (
        "from", "von", "de", "da", "van", "fra", "från", "od", "от", "від", "lähettäjä",
        "feladó", "kimden", "expéditeur", "remitente", "mittente", "发件人", "寄件者",
        "差出人", "보낸 사람",
    ),
    "date": (
        "date", "datum", "fecha", "data", "sent", "gesendet", "envoyé", "enviado",
        "enviado el", "enviada em", "enviada", "inviato", "verzonden", "skickat", "sendt",
        "wysłano", "отправлено", "надіслано", "дата", "lähetetty", "päivämäärä", "dátum", "tarih",
        "gönderildi", "odesláno", "发送时间", "日期", "送信日時", "날짜", "보낸 날짜",
    ),
    "to": (
        "to", "an", "à", "a", "para", "aan", "till", "til", "do", "кому",
        "vastaanottaja", "címzett", "kime", "komu", "收件人", "宛先", "받는 사람",
    ),
    "cc": ("cc", "bcc", "kopie", "kopia", "копия", "cco", "kopio", "másolat", "抄送", "참조"),
    "subject": (
        "subject", "betreff", "objet", "asunto", "oggetto", "onderwerp", "assunto",
        "ämne", "emne", "temat", "тема", "aihe", "tárgy", "konu", "předmět", "主题",
        "件名", "제목",
    ),
}
# fmt: on
_HEADER_KEY_TO_FAMILY = {key: family for family, keys in _HEADER_FAMILIES.items() for key in keys}
_HEADER_LINE_RE = re.compile(
    r"\s*\*{0,2}(?P<key>"
    + "|".join(
        re.escape(k).replace(r"\ ", r"\s")
        for k in sorted(_HEADER_KEY_TO_FAMILY, key=len, reverse=True)
    )
    + r")\*{0,2}[ \t\xa0]?(?:[:：]\*{0,2}(?:\s|$)|：)",  # "主题：x" needs no space
    re.IGNORECASE,
)
_INLINE_HEADER_RE = re.compile(
    r"\s\*{0,2}(?P<key>"
    + "|".join(
        re.escape(k).replace(r"\ ", r"\s")
        for k in sorted(_HEADER_KEY_TO_FAMILY, key=len, reverse=True)
        if len(k) > 2  # "a:", "an:", "do:" are too common inside a sentence
    )
    + r")\*{0,2}[ \t\xa0]?[:：]\*{0,2}\s",
    re.IGNORECASE,
)

_TRAILER_RES: tuple[re.Pattern[str], ...] = tuple(
    re.compile(
        rx + r"[.!]?(?:\s*[(<\[]\S{1,300}[)>\]])?\.?",
        re.IGNORECASE,
    )
    for rx in (
        r"sent from my(?:\s+[\w'’&+.-]+){1,5}",
        r"get outlook for (?:ios|android|mac|windows)",
        r"sent (?:from|with|via|using) (?:outlook(?: for \w+)?|mail for windows(?: 1[01])?"
        r"|windows mail|yahoo mail(?: for \w+| on \w+)?|aol(?: mobile mail| app)?"
        r"|sparrow|proton ?mail(?: secure email)?|proton mail(?: secure email)?"
        r"|bluemail|spark|airmail|gmail(?: mobile)?|the [\w ]{1,20} app"
        r"|samsung[\w ]{0,30}|blackberry[\w ]{0,30}|iphone|ipad|android|my mobile)",
        r"(?:von meinem|gesendet von meinem|gesendet mit(?: der)?) [^,;:!?]{1,40}?(?: gesendet)?",
        r"envoyé (?:de|depuis) (?:mon|ma) [^,;:!?]{1,40}",
        r"enviado (?:desde|do|de) (?:mi|meu|o meu|my) [^,;:!?]{1,40}",
        r"inviato da(?:l mio| il mio)? [^,;:!?]{1,40}",
        r"(?:verzonden|verstuurd) (?:vanaf|met|van) (?:mijn )?[^,;:!?]{1,40}",
        r"skickat från min [^,;:!?]{1,40}",
        r"sendt fra min [^,;:!?]{1,40}",
        r"отправлено (?:с|из) [^,;:!?]{1,40}",
        r"wysłane z [^,;:!?]{1,40}",
    )
)
_LIST_FOOTER_HINTS = ("mailing list", "listinfo", "unsubscribe", "mailman")


@dataclass(frozen=True)
class _Splitter:
    length: int  # lines it spans
    strength: int  # _STRONG or _WEAK
    prefix: str = ""  # reply text before the splitter on its first line


def _split_lines(text: str) -> list[str]:
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\ufeff", "")
    return text.split("\n")


def _is_quoted(line: str) -> bool:
    return line.startswith(">")


def _is_empty_quote(line: str) -> bool:
    return _is_quoted(line) and not line.replace(">", "").strip()


def _dequote(line: str) -> str:
    return line.lstrip(" >")


def _header_family(line: str) -> str | None:
    if len(line) > _MAX_LINE_FOR_HEADERS:
        return None
    m = _HEADER_LINE_RE.match(line)
    if m is None:
        return None
    return _HEADER_KEY_TO_FAMILY.get(" ".join(m.group("key").lower().split()))


def _attribution_strength(header: str) -> int:
    """How surely ``header`` (one line, or lines joined) is an attribution."""
    if len(header) > 600 or not _has_hint(header):
        return 0
    hits = {m.group(0).lower() for m in _ATTRIBUTION_HINT_RE.finditer(header)}
    if not hits:
        return 0
    has_digit = _DIGIT_RE.search(header) is not None
    for keys, rx in _ATTRIBUTIONS:
        if not hits.isdisjoint(keys) and rx.fullmatch(header):
            # Sure only when machine-made: a date and an address, or Android's
            # dashes. "On Monday at 10:00 the technician wrote:" may be the
            # CSR's own words, relaying a note.
            if has_digit and ("@" in hits or header.startswith("-")):
                return _STRONG
            return _WEAK
    if "wrote" in hits and _ANDROID_ATTRIBUTION_RE.fullmatch(header):
        return _STRONG
    dashed = _DASHED_RE.fullmatch(header)
    if dashed is not None and has_digit and "@" in hits:
        # Zoho: "---- Am Mo, 01 Jan 2024 ... schrieb X <x@y> ----", any language.
        inner = dashed.group(1) + ":"
        if any(not hits.isdisjoint(keys) and rx.fullmatch(inner) for keys, rx in _ATTRIBUTIONS):
            return _STRONG
    if hits != {"@"} and _WEAK_VERB_RE.fullmatch(header):
        return _WEAK
    if has_digit and "@" in hits and _WEAK_EMAIL_RE.fullmatch(header):
        return _WEAK
    return 0


def _attribution(lines: list[str], i: int) -> tuple[int, int] | None:
    """(lines spanned, strength) of an attribution starting at line ``i``.

    Headers wrap over up to three lines; the surest reading wins, then the
    shortest. A header that reads as surely when started on the next line
    belongs to the next line (a "Thanks!" line above a wrapped "On ...").
    """
    n = len(lines)
    if not _has_hint(" ".join(lines[i : i + 3])[:2000]):
        return None
    best: tuple[int, int] | None = None
    for k in range(1, 4):
        if i + k > n:
            break
        seg = lines[i : i + k]
        if k > 1:
            last = seg[-1]
            if not last.strip() or _is_quoted(last) or not any(c.isdigit() for c in seg[0]):
                break
        joined = " ".join(s.strip() for s in seg)
        if len(joined) > 600:
            break
        strength = _attribution_strength(joined)
        if strength and (best is None or strength > best[1]):
            best = (k, strength)
    if best is None:
        return None
    k, strength = best
    for k2 in range(1, k):
        tail = " ".join(s.strip() for s in lines[i + 1 : i + 1 + k2])
        if _attribution_strength(tail) >= strength:
            return None
    return best


_MIDLINE_ON_RE = re.compile(r"(?P<prefix>.*?\S)[\s-]+(?P<header>On\s.{3,400}?\bwrote\s?:)\s*")


def _midline_attribution(line: str) -> tuple[str, int] | None:
    """``reply On <date>, <name> wrote:`` on one line: (reply part, strength)."""
    if "wrote" not in line or len(line) > 600:
        return None
    m = _MIDLINE_ON_RE.fullmatch(line)
    if m is None:
        return None
    header = m.group("header")
    strength = _attribution_strength(header)
    if not strength:
        return None
    return m.group("prefix"), strength


def _inline_header_families(line: str) -> int:
    """How many other header families follow the first one on ``line``."""
    if len(line) > _MAX_LINE_FOR_HEADERS:
        return 0
    keys = [m.group("key") for m in _INLINE_HEADER_RE.finditer(line)]
    families = {_HEADER_KEY_TO_FAMILY.get(" ".join(k.lower().split())) for k in keys}
    first = _header_family(line)
    families.discard(None)
    families.discard(first)
    return len(families)


def _header_block(lines: list[str], i: int) -> int:
    """Length of an Outlook-style header block starting at line ``i``, or 0."""
    first = _header_family(lines[i])
    if first is None:
        return 0
    if first in ("from", "date") and _inline_header_families(lines[i]) >= 2:
        return 1  # "From: x Sent: y To: z Subject: s" flattened onto one line
    n = len(lines)
    families = [first]
    last_header = i
    gap = 0
    j = i + 1
    while j < n and j - i < 14 and lines[j].strip() and not _is_quoted(lines[j]):
        family = _header_family(lines[j])
        if family is not None:
            families.append(family)
            last_header = j
            gap = 0
        else:
            gap += 1
            if gap > 2:
                break
        j += 1
    # Clients always write From:, and a Subject: or an address. "Date: ...,
    # Subject: ..." or "From: Berlin / To: Munich" in a CSR's own text is not
    # a header block.
    if len(families) < 2 or "from" not in families:
        return 0
    if "subject" not in families and not any("@" in b for b in lines[i : last_header + 1]):
        return 0
    return last_header - i + 1


def _next_nonblank(lines: list[str], j: int, limit: int | None = None) -> int:
    n = len(lines)
    end = n if limit is None else min(n, j + limit)
    while j < end and not lines[j].strip():
        j += 1
    return j


def _match_splitter(lines: list[str], i: int) -> _Splitter | None:
    line = lines[i]
    stripped = line.strip()
    if not stripped or len(stripped) > _MAX_LINE_FOR_HEADERS:
        return None
    n = len(lines)
    if _ORIGINAL_MESSAGE_RE.fullmatch(stripped):
        j = _next_nonblank(lines, i + 1, 3)
        block = _header_block(lines, j) if j < n else 0
        return _Splitter((j - i) + block if block else 1, _STRONG)
    if _RULE_RE.fullmatch(stripped):
        j = _next_nonblank(lines, i + 1, 3)
        if j < n:
            block = _header_block(lines, j)
            if block:
                return _Splitter(j - i + block, _STRONG)
        return None
    block = _header_block(lines, i)
    if block:
        return _Splitter(block, _STRONG)
    found = _attribution(lines, i)
    if found is not None and found[1] == _STRONG:
        return _Splitter(found[0], found[1])
    # "reply On <date> ... wrote:" keeps its reply part.
    mid = _midline_attribution(stripped)
    if mid is not None:
        return _Splitter(1, mid[1], mid[0])
    if found is not None:
        return _Splitter(found[0], found[1])
    return None


class _Splitters:
    """``_match_splitter`` for each line, computed once."""

    def __init__(self, lines: list[str]) -> None:
        self.lines = lines
        self.found: dict[int, _Splitter | None] = {}

    def at(self, i: int) -> _Splitter | None:
        if i not in self.found:
            self.found[i] = _match_splitter(self.lines, i)
        return self.found[i]


def _has_reply_evidence(lines: list[str], splitters: _Splitters) -> bool:
    """Whether the text looks like a reply, so that ``>`` lines are quotes."""
    quoted = 0
    for i, line in enumerate(lines):
        if _MARKER_HINT in line.lower() and _MARKER_RE.search(line):
            return True
        if not _is_quoted(line):
            splitter = splitters.at(i)
            if splitter is not None:
                if splitter.strength == _STRONG:
                    return True
                k = _next_nonblank(lines, i + splitter.length)
                if k < len(lines) and _is_quoted(lines[k]):
                    return True
            continue
        quoted += 1
        if quoted >= 3:
            return True
        inner = _dequote(line).strip()
        if (
            inner
            and len(inner) <= _MAX_LINE_FOR_HEADERS
            and (
                _header_family(inner) is not None
                or _ORIGINAL_MESSAGE_RE.fullmatch(inner)
                or _attribution_strength(inner)
            )
        ):
            return True
    return False


def _quote_run_end(lines: list[str], i: int, evidence: bool) -> int:
    """Index just past the run of quoted lines starting at ``i``."""

    def droppable(line: str) -> bool:
        return _is_quoted(line) and (evidence or _is_empty_quote(line))

    n = len(lines)
    j = i
    while j < n:
        if droppable(lines[j]):
            j += 1
            continue
        if not lines[j].strip():
            k = _next_nonblank(lines, j)
            if k < n and droppable(lines[k]):
                j = k
                continue
        break
    return j


def _drop_trailing_separator(out: list[str]) -> None:
    while out and not out[-1].strip():
        out.pop()
    if out and (_RULE_RE.fullmatch(out[-1]) or _ORIGINAL_MESSAGE_RE.fullmatch(out[-1])):
        out.pop()


def _cut_at_marker(lines: list[str]) -> list[str]:
    for idx, line in enumerate(lines):
        if _MARKER_HINT not in line.lower() or _is_quoted(line):
            continue
        m = _MARKER_RE.search(line)
        if m is None:
            continue
        before = line[: m.start()]
        return lines[:idx] + ([before] if before.strip() else [])
    return lines


def _drop_quotes(lines: list[str]) -> list[str]:
    splitters = _Splitters(lines)
    evidence = _has_reply_evidence(lines, splitters)
    out: list[str] = []
    n = len(lines)
    i = 0
    forwarded = False
    while i < n:
        line = lines[i]
        if _is_quoted(line) and (evidence or _is_empty_quote(line)):
            i = _quote_run_end(lines, i, evidence)
            out.append("")
            continue
        if forwarded or _is_quoted(line):
            out.append(line)
            i += 1
            continue
        if len(line) <= _MAX_LINE_FOR_HEADERS and _FORWARD_RE.fullmatch(line):
            forwarded = True
            out.append(line)
            i += 1
            continue
        splitter = splitters.at(i)
        if splitter is not None:
            k = _next_nonblank(lines, i + splitter.length)
            if k >= n or _is_quoted(lines[k]):
                # An attribution: it goes with its quote (or ends the text).
                if splitter.prefix:
                    out.append(splitter.prefix)
                out.append("")
                i = k
                continue
            if splitter.strength == _STRONG:
                # Unquoted history follows: the rest is not new.
                if splitter.prefix:
                    out.append(splitter.prefix)
                _drop_trailing_separator(out)
                break
        out.append(line)
        i += 1
    return out


def _trim_blank_tail(lines: list[str]) -> list[str]:
    end = len(lines)
    while end and not lines[end - 1].strip():
        end -= 1
    return lines[:end]


def _drop_signature(lines: list[str]) -> list[str]:
    lines = _trim_blank_tail(lines)
    for idx, line in enumerate(lines):
        if line.strip() != "--":
            continue
        standard = line.replace("\xa0", " ").startswith("-- ")
        limit = _MAX_SIGNATURE_LINES if standard else _MAX_BARE_SIGNATURE_LINES
        tail = [t for t in lines[idx + 1 :] if t.strip()]
        if len(tail) <= limit:
            lines = lines[:idx]
            break
    while True:
        lines = _trim_blank_tail(lines)
        if not lines:
            return lines
        last = lines[-1].strip()
        if len(last) <= 400 and any(rx.fullmatch(last) for rx in _TRAILER_RES):
            lines.pop()
            continue
        footer = _list_footer_start(lines)
        if footer is not None:
            lines = lines[:footer]
            continue
        return lines


def _list_footer_start(lines: list[str]) -> int | None:
    """Start of a mailing-list footer (a rule, then a few lines) at the end."""
    for idx in range(len(lines) - 1, max(-1, len(lines) - 7), -1):
        if _RULE_RE.fullmatch(lines[idx]):
            rest = " ".join(lines[idx + 1 :]).lower()
            if rest.strip() and any(h in rest for h in _LIST_FOOTER_HINTS):
                return idx
            return None
    return None


def _tidy(lines: list[str]) -> str:
    out: list[str] = []
    for line in lines:
        line = line if line == "-- " else line.rstrip()
        if not line and (not out or not out[-1]):
            continue
        out.append(line)
    while out and not out[-1]:
        out.pop()
    return "\n".join(out)


def strip_quoted_text(text: str, *, keep_signature: bool = False) -> str:
    """The new text of a plain-text reply: quotes, history and trailers removed.

    See the module documentation for the rules. With ``keep_signature`` the
    signature and device trailers ("Sent from my iPhone") stay.
    """
    lines = _cut_at_marker(_split_lines(text))
    kept = _drop_quotes(lines)
    if not keep_signature:
        kept = _drop_signature(kept)
    return _tidy(kept)


# --------------------------------------------------------------------------
# HTML: a small tolerant tree
# --------------------------------------------------------------------------

_VOID = frozenset(
    "area base basefont bgsound br col embed frame hr img input keygen link meta param "
    "source track wbr".split()
)
_BLOCK = frozenset(
    "address article aside blockquote body center dd details dialog dir div dl dt fieldset "
    "figcaption figure footer form h1 h2 h3 h4 h5 h6 header hgroup hr html li main menu nav "
    "ol p pre section summary table tbody tfoot thead tr ul caption".split()
)
_PARAGRAPH = frozenset("p h1 h2 h3 h4 h5 h6 table dl pre".split())
_LISTS = frozenset("ul ol menu dir".split())
_DROPPED = frozenset("head style script title template xml noscript object applet".split())
_CLOSES_P = frozenset(
    "address article aside blockquote center details dialog dir div dl fieldset figcaption "
    "figure footer form h1 h2 h3 h4 h5 h6 header hgroup hr main menu nav ol p pre section "
    "summary table ul li dd dt".split()
)
_SCOPE = frozenset("html body table td th caption marquee object applet template button".split())
_PRE = frozenset("pre textarea listing plaintext xmp".split())
_BAD_MARKED_SECTION = re.compile(
    r"<!\[(?!\s*(?:if|else|endif|cdata|temp|ignore|include|rcdata)\b)", re.IGNORECASE
)
_TAG_RE = re.compile(r"<[^>]{0,2000}>")
_MAX_IMPLICIT_SCAN = 256


class _Element:
    __slots__ = ("attrs", "children", "parent", "tag")

    def __init__(self, tag: str, attrs: dict[str, str], parent: _Element | None) -> None:
        self.tag = tag
        self.attrs = attrs
        self.parent = parent
        self.children: list[_Element | _Text] = []

    def classes(self) -> set[str]:
        return set(self.attrs.get("class", "").lower().split())

    def style(self) -> str:
        return "".join(self.attrs.get("style", "").lower().split())


class _Text:
    __slots__ = ("parent", "text")

    def __init__(self, text: str, parent: _Element) -> None:
        self.text = text
        self.parent = parent


_Node = _Element | _Text


class _TreeBuilder(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = _Element("#root", {}, None)
        self.stack: list[_Element] = [self.root]
        self.open: dict[str, int] = {}

    def _push(self, el: _Element) -> None:
        self.stack.append(el)
        self.open[el.tag] = self.open.get(el.tag, 0) + 1

    def _close_to(self, idx: int) -> None:
        for el in self.stack[idx:]:
            self.open[el.tag] -= 1
        del self.stack[idx:]

    def _scan(self) -> range:
        """Stack indexes to search for an implicitly closed element, bounded so
        that pathological nesting stays linear."""
        top = len(self.stack) - 1
        return range(top, max(0, top - _MAX_IMPLICIT_SCAN), -1)

    def _implicit_close(self, tag: str) -> None:
        stack = self.stack
        if tag in _CLOSES_P and self.open.get("p"):
            for idx in self._scan():
                t = stack[idx].tag
                if t == "p":
                    self._close_to(idx)
                    break
                if t in _SCOPE:
                    break
        if tag in ("li", "dd", "dt"):
            stops = {"ul", "ol", "dl", "menu", "dir"} | _SCOPE
            closes = ("li",) if tag == "li" else ("dd", "dt")
            if not any(self.open.get(c) for c in closes):
                return
            for idx in self._scan():
                t = stack[idx].tag
                if t in closes:
                    self._close_to(idx)
                    break
                if t in stops:
                    break
        elif tag in ("td", "th", "tr", "tbody", "thead", "tfoot"):
            closes_by = {
                "td": ("td", "th"),
                "th": ("td", "th"),
                "tr": ("tr", "td", "th"),
                "tbody": ("tbody", "thead", "tfoot", "tr", "td", "th"),
                "thead": ("tbody", "thead", "tfoot", "tr", "td", "th"),
                "tfoot": ("tbody", "thead", "tfoot", "tr", "td", "th"),
            }[tag]
            if not any(self.open.get(c) for c in closes_by):
                return
            for idx in self._scan():
                t = stack[idx].tag
                if t == "table":
                    break
                if t in closes_by:
                    self._close_to(idx)
                    break

    def _element(self, tag: str, attrs: list[tuple[str, str | None]]) -> _Element:
        self._implicit_close(tag)
        values: dict[str, str] = {}
        for key, value in attrs:
            values.setdefault(key.lower(), value or "")
        parent = self.stack[-1]
        el = _Element(tag, values, parent)
        parent.children.append(el)
        return el

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        el = self._element(tag, attrs)
        if tag not in _VOID:
            self._push(el)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._element(tag, attrs)

    def handle_endtag(self, tag: str) -> None:
        if tag == "br":
            self._element("br", [])
            return
        if tag in _VOID or not self.open.get(tag):
            return
        for idx in range(len(self.stack) - 1, 0, -1):
            if self.stack[idx].tag == tag:
                self._close_to(idx)
                return

    def handle_data(self, data: str) -> None:
        parent = self.stack[-1]
        if parent.children and isinstance(parent.children[-1], _Text):
            parent.children[-1].text += data
        else:
            parent.children.append(_Text(data, parent))


def _escape_after(markup: str, closer: str, opener: str) -> str:
    """Every ``opener`` after the last ``closer`` escaped (it can never close)."""
    end = markup.rfind(closer)
    cut = end + len(closer) if end >= 0 else 0
    tail = markup[cut:]
    if opener not in tail:
        return markup
    return markup[:cut] + tail.replace(opener, "&lt;" + opener[1:])


def _defuse(markup: str) -> str:
    """``markup`` without constructs that can never close: html.parser (before
    CPython 3.13.4, gh-135462) rescans to the end of the text for each
    unclosed comment, marked section or tag, which is quadratic. Escaped,
    they read as the text they are. Linear."""
    markup = _escape_after(markup, ">", "<")
    markup = _escape_after(markup, "-->", "<!--")
    return _escape_after(markup, "]>", "<![")


def _parse_html(markup: str) -> _Element:
    builder = _TreeBuilder()
    try:
        builder.feed(_defuse(_BAD_MARKED_SECTION.sub("&lt;![", markup)))
        builder.close()
    except Exception:  # html.parser still asserts on some broken declarations
        root = _Element("#root", {}, None)
        text = _htmllib.unescape(_TAG_RE.sub(" ", markup))
        root.children.append(_Text(text, root))
        return root
    return builder.root


def _text_of(node: _Node, limit: int = 100_000) -> str:
    if isinstance(node, _Text):
        return node.text[:limit]
    parts: list[str] = []
    size = 0
    stack: list[_Node] = list(reversed(node.children))
    while stack and size < limit:
        cur = stack.pop()
        if isinstance(cur, _Text):
            parts.append(cur.text)
            size += len(cur.text)
        elif cur.tag not in _DROPPED:
            if cur.tag == "br" or cur.tag in _BLOCK:
                parts.append("\n")
            stack.extend(reversed(cur.children))
    return "".join(parts)


def _normalized(text: str) -> str:
    return " ".join(text.split())


def _hollow(node: _Node) -> None:
    """Empty ``node`` in place (indexes of its siblings stay valid)."""
    if isinstance(node, _Text):
        node.text = ""
    else:
        node.children = []
        node.attrs = {}


def _cut_from(node: _Node, *, keep_node: bool = False) -> None:
    """Remove ``node`` and everything after it in document order."""
    cur: _Node = node
    first = True
    while cur.parent is not None:
        parent = cur.parent
        idx = next(i for i, c in enumerate(parent.children) if c is cur)
        start = idx + 1 if (keep_node and first) or not first else idx
        del parent.children[start:]
        cur = parent
        first = False


def _is_forward_text(text: str) -> bool:
    return any(_FORWARD_RE.fullmatch(line) for line in text.splitlines() if line.strip())


def _is_quote_element(el: _Element) -> bool:
    """Elements that hold quoted history and nothing new."""
    tag = el.tag
    classes = el.classes()
    ident = el.attrs.get("id", "")
    if tag == "blockquote":
        if el.attrs.get("type", "").lower() == "cite":
            return True
        if classes & {"gmail_quote", "tutanota_quote", "yahoo_quoted"}:
            return True
    if "gmail_attr" in classes or "moz-cite-prefix" in classes:
        return not _is_forward_text(_text_of(el, 500))
    if any("yahoo_quoted" in c for c in classes) or "yahoo_quoted" in ident:
        return True
    if classes & {"protonmail_quote", "zmail_extra", "zmail_extra_hr", "reply-intro"}:
        return True
    if ident in ("reply-intro", "OLK_SRC_BODY_SECTION"):
        return True
    marker = el.attrs.get("data-marker", "")
    return marker in ("__QUOTED_TEXT__", "__HEADERS__")


def _is_history_start(el: _Element) -> bool:
    """Elements from which everything to the end is quoted history."""
    ident = el.attrs.get("id", "")
    if ident.endswith(("divRplyFwdMsg", "appendonsend", "stopSpelling")):
        return True
    if ident in ("zwchr", "mail-editor-reference-message-container"):
        return True
    if el.attrs.get("data-marker", "") == "__DIVIDER__":
        return True
    if "outlookmessageheader" in el.classes():
        return True
    if el.tag == "hr":
        a = el.attrs
        return (
            a.get("size") == "3"
            and a.get("width") == "100%"
            and a.get("align", "").lower() == "center"
            and a.get("tabindex") == "-1"
        )
    if el.tag == "div":
        style = el.style()
        outlook = "border-top:solid" in style and (
            "padding:3.0pt0" in style or "padding:3pt0" in style
        )
        windows_mail = "border-top-style:solid" in style and "padding-top:5px" in style
        if outlook or windows_mail:
            head = _normalized(_text_of(el, 300))
            return bool(_HEADER_LINE_RE.match(head))
    return False


def _trailing_line(container: _Element, before: int) -> list[_Node]:
    """The nodes forming the last visual line of ``container.children[:before]``."""
    children = container.children
    idx = before - 1
    skipped_br = 0
    while idx >= 0:
        c = children[idx]
        if isinstance(c, _Text) and not c.text.strip():
            idx -= 1
            continue
        if isinstance(c, _Element) and c.tag == "br" and skipped_br < 2:
            skipped_br += 1
            idx -= 1
            continue
        break
    if idx < 0:
        return []
    last = children[idx]
    if isinstance(last, _Element) and last.tag in _BLOCK:
        return [last]
    group: list[_Node] = []
    while idx >= 0 and len(group) < 50:
        c = children[idx]
        if isinstance(c, _Element) and (c.tag == "br" or c.tag in _BLOCK):
            break
        group.append(c)
        idx -= 1
    group.reverse()
    return group


def _only_blank_before(parent: _Element, idx: int) -> bool:
    for c in parent.children[:idx]:
        if isinstance(c, _Text):
            if c.text.strip():
                return False
        elif c.tag != "br" and _text_of(c, 10).strip():
            return False
    return True


def _hollow_if_attribution(nodes: list[_Node]) -> bool:
    text = _normalized("".join(_text_of(n, 2000) for n in nodes))
    if text and _attribution_strength(text):
        for n in nodes:
            _hollow(n)
        return True
    return False


def _remove_attribution_before(parent: _Element, idx: int) -> None:
    """Hollow out an "On ... wrote:" line right before ``parent.children[idx]``."""
    for _ in range(3):  # the attribution may sit before an ancestor
        group = _trailing_line(parent, idx)
        if group:
            if len(group) == 1 and isinstance(group[0], _Element):
                block = group[0]
                if not _hollow_if_attribution([block]):
                    inner = _trailing_line(block, len(block.children))
                    if inner:
                        _hollow_if_attribution(inner)
            else:
                _hollow_if_attribution(group)
            return
        if not _only_blank_before(parent, idx) or parent.parent is None:
            return
        node, parent = parent, parent.parent
        idx = next(i for i, c in enumerate(parent.children) if c is node)


def _cut_at_marker_html(root: _Element) -> None:
    stack: list[_Node] = list(reversed(root.children))
    while stack:
        node = stack.pop()
        if isinstance(node, _Element):
            if node.tag not in _DROPPED:
                stack.extend(reversed(node.children))
            continue
        if _MARKER_HINT not in node.text.lower():
            continue
        m = _MARKER_RE.search(node.text)
        if m is None:
            continue
        before = node.text[: m.start()]
        line_start = before.rfind("\n") + 1
        if not before[line_start:].strip(" \t\xa0>-*#"):
            before = before[:line_start]
        node.text = before
        _cut_from(node, keep_node=True)
        return


def _walk(root: _Element) -> Iterator[tuple[_Element, int, _Element]]:
    """(parent, index, element) in document order.

    The consumer may replace ``parent.children[index]`` (its subtree is then
    not visited) or hollow out earlier nodes; nothing else.
    """
    frames: list[tuple[_Element, int]] = [(root, 0)]
    while frames:
        parent, idx = frames[-1]
        if idx >= len(parent.children):
            frames.pop()
            continue
        frames[-1] = (parent, idx + 1)
        child = parent.children[idx]
        if isinstance(child, _Element):
            yield parent, idx, child
            if parent.children[idx] is child:
                frames.append((child, 0))


def _strip_tree(root: _Element) -> None:
    for parent, idx, el in _walk(root):
        if _is_quote_element(el):
            if el.tag == "blockquote":
                _remove_attribution_before(parent, idx)
            # A paragraph break keeps the text around the quote apart.
            parent.children[idx] = _Element("p", {}, parent)
    _cut_at_marker_html(root)
    for _parent, _idx, el in _walk(root):
        if _is_history_start(el):
            _cut_from(el)
            break


def _serialize(root: _Element) -> str:
    out: list[str] = []
    stack: list[tuple[_Node, bool]] = [(c, False) for c in reversed(root.children)]
    while stack:
        node, closing = stack.pop()
        if isinstance(node, _Text):
            raw = node.parent.tag in ("script", "style")
            out.append(node.text if raw else _htmllib.escape(node.text, quote=False))
            continue
        if closing:
            out.append(f"</{node.tag}>")
            continue
        attrs = "".join(f' {k}="{_htmllib.escape(v, quote=True)}"' for k, v in node.attrs.items())
        out.append(f"<{node.tag}{attrs}>")
        if node.tag in _VOID:
            continue
        stack.append((node, True))
        stack.extend((c, False) for c in reversed(node.children))
    return "".join(out)


def strip_quoted_html(html: str) -> str:
    """``html`` without its quoted history (still HTML).

    Removes Gmail, Thunderbird, Apple Mail, iOS, Yahoo, Roundcube, Zimbra,
    ProtonMail and Zoho quote elements (with the "On ... wrote:" line before
    a ``blockquote type=cite``), and cuts everything from Outlook's reply
    header (``divRplyFwdMsg``, ``appendonsend``, ``stopSpelling``, the
    ``border-top`` header div, Outlook 2003's rule), Zimbra's divider, or the
    line holding :data:`REPLY_MARKER` to the end. Never raises.
    """
    try:
        root = _parse_html(html)
        _strip_tree(root)
        return _serialize(root)
    except Exception:  # a last resort: never fail a message on its HTML
        return html


# --------------------------------------------------------------------------
# HTML to text
# --------------------------------------------------------------------------


class _Writer:
    """Builds lines of text: quote prefixes, indents, collapsed whitespace."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.prefix = ""  # of the open line
        self.cur = ""  # text of the open line
        self.open = False
        self.content = False  # the open line has text (a lone &nbsp; counts)
        self.space = False  # a space is due before the next word
        self.quote = 0
        self.block_indent = ""
        self.list_indent = ""
        self.bullet = ""
        self.blank_depth: int | None = None  # a blank line is due, at this quote depth

    def _start(self) -> None:
        if self.open:
            return
        if self.blank_depth is not None:
            if self.lines and self.lines[-1].strip(" >"):
                self.lines.append("> " * min(self.blank_depth, self.quote))
            self.blank_depth = None
        self.prefix = "> " * self.quote + self.block_indent + self.list_indent + self.bullet
        self.bullet = ""
        self.open = True
        self.cur = ""
        self.content = False
        self.space = False

    def _emit(self) -> None:
        if self.cur == "--" and self.space:
            self.cur = "-- "  # the signature delimiter keeps its space
        self.lines.append(self.prefix + self.cur)
        self.open = False
        self.content = False
        self.space = False

    def end_line(self) -> None:
        """A hard break (``<br>``): ends the line, even an empty one."""
        self._start()
        self._emit()

    def soft_break(self) -> None:
        """A block boundary: ends the line if anything is on it."""
        if self.open and self.content:
            self._emit()
        else:
            self.open = False

    def paragraph(self) -> None:
        """A paragraph boundary: a blank line before the next text."""
        self.soft_break()
        depth = self.quote if self.blank_depth is None else min(self.blank_depth, self.quote)
        self.blank_depth = depth

    def text(self, data: str, pre: bool) -> None:
        data = data.replace("\u200b", "").replace("\ufeff", "")
        if pre:
            parts = data.replace("\r\n", "\n").replace("\r", "\n").split("\n")
            for n, part in enumerate(parts):
                if n:
                    self.end_line()
                if part:
                    self._start()
                    self.cur += part.replace("\xa0", " ")
                    self.content = True
            return
        words = data.split()
        if not words:
            if "\xa0" in data:  # &nbsp; holds a line open, as in Outlook's blank lines
                self._start()
                self.content = True
            if data and self.open and self.cur:
                self.space = True
            return
        if data[0].isspace() and self.open and self.cur:
            self.space = True
        self._start()
        if self.space and self.cur:
            self.cur += " "
        self.cur += " ".join(words)
        self.content = True
        self.space = data[-1].isspace()

    def finish(self) -> str:
        self.soft_break()
        out: list[str] = []
        for line in self.lines:
            if not line.endswith("-- "):
                line = line.rstrip()
            blank = not line.strip(" >")
            if blank:
                line = line.rstrip()
                if out and not out[-1].strip(" >"):
                    continue
            out.append(line)
        while out and not out[0].strip(" >"):
            out.pop(0)
        while out and not out[-1].strip(" >"):
            out.pop()
        return "\n".join(out)


def _same_target(text: str, href: str) -> bool:
    t = text.strip().lower().rstrip("/")
    h = href.strip().lower().rstrip("/")
    if h.startswith("mailto:"):
        h = h[7:].split("?", 1)[0]
    for scheme in ("https://", "http://"):
        if h.startswith(scheme):
            h = h[len(scheme) :]
        if t.startswith(scheme):
            t = t[len(scheme) :]
    return t == h or t == h.removeprefix("www.") or t.removeprefix("www.") == h


def _is_indent_blockquote(el: _Element) -> bool:
    """Gmail's "indent more" is a borderless blockquote, not a quote."""
    return (
        "border:none" in el.style()
        and el.attrs.get("type", "").lower() != "cite"
        and not el.classes()
    )


def _is_paragraph(el: _Element) -> bool:
    if el.tag not in _PARAGRAPH:
        return False
    if el.tag == "p":
        if any(c.startswith("mso") for c in el.classes()):
            return False
        style = el.style()
        if "margin:0" in style or "margin-top:0" in style:
            return False
    return True


def _link_note(el: _Element) -> str:
    """The ' (url)' note after a link whose text is not its address."""
    href = el.attrs.get("href", "").strip()
    label = _normalized(_text_of(el, 2000))
    if (
        not label
        or not href
        or href.startswith("#")
        or href.lower().startswith(("javascript:", "cid:", "data:"))
        or _same_target(label, href)
    ):
        return ""
    return f" ({href})"


def _tree_to_text(root: _Element) -> str:
    w = _Writer()
    pre = 0
    lists = 0
    stack: list[tuple[_Node, bool]] = [(c, False) for c in reversed(root.children)]
    while stack:
        node, closing = stack.pop()
        if isinstance(node, _Text):
            w.text(node.text, pre > 0)
            continue
        tag = node.tag
        if closing:
            if tag in _PRE:
                pre -= 1
            if tag == "a":
                note = _link_note(node)
                if note:
                    w.text(note, False)
            if tag in _LISTS:
                lists -= 1
                w.list_indent = "  " * max(0, lists - 1)
                if lists:
                    w.soft_break()
                else:
                    w.paragraph()
            elif tag == "blockquote":
                w.soft_break()
                if _is_indent_blockquote(node):
                    w.block_indent = w.block_indent[:-4]
                else:
                    w.quote -= 1
            elif _is_paragraph(node):
                w.paragraph()
            elif tag in _BLOCK:
                w.soft_break()
            continue
        if tag in _DROPPED or "display:none" in node.style():
            continue
        if tag == "br":
            w.end_line()
            continue
        if tag in ("td", "th") and w.open and w.cur:
            w.space = True
        if tag in _LISTS:
            if lists:
                w.soft_break()
            else:
                w.paragraph()
            lists += 1
            w.list_indent = "  " * (lists - 1)
        elif tag == "blockquote":
            w.soft_break()
            if _is_indent_blockquote(node):
                w.block_indent += "    "
            else:
                w.quote += 1
        elif _is_paragraph(node):
            w.paragraph()
        elif tag in _BLOCK:
            w.soft_break()
        if tag == "li":
            w.bullet = "- "
        if tag in _PRE:
            pre += 1
        if tag in _VOID:
            continue
        stack.append((node, True))
        stack.extend((c, False) for c in reversed(node.children))
    return w.finish()


def _fallback_text(markup: str) -> str:
    text = _htmllib.unescape(_TAG_RE.sub(" ", markup))
    return _tidy([" ".join(line.split()) for line in _split_lines(text)])


def html_to_text(html: str) -> str:
    """Readable plain text from HTML mail. Never raises.

    Block elements end lines (paragraphs and headings also leave a blank
    line, except Outlook's margin-less ``MsoNormal`` ones), ``<br>`` is a
    newline, ``<li>`` a "- " bullet, links keep their text and add the URL in
    parentheses when it differs, ``<blockquote>`` lines get "> " (Gmail's
    borderless indent blockquote is indented instead), ``<pre>`` keeps its
    spacing; ``<head>``, ``<style>``, ``<script>`` and ``display:none``
    elements are dropped; runs of blank lines collapse to one.
    """
    try:
        return _tree_to_text(_parse_html(html))
    except Exception:  # a last resort: never fail a message on its HTML
        return _fallback_text(html)


def _html_reply_text(html: str) -> str:
    try:
        root = _parse_html(html)
        _strip_tree(root)
        return _tree_to_text(root)
    except Exception:
        return _fallback_text(html)


# --------------------------------------------------------------------------
# Messages
# --------------------------------------------------------------------------

_CHARSET_ALIASES = {
    "iso-8859-1": "cp1252",
    "iso8859-1": "cp1252",
    "iso_8859-1": "cp1252",
    "latin1": "cp1252",
    "latin-1": "cp1252",
    "l1": "cp1252",
    "us-ascii": "ascii",
    "ansi_x3.4-1968": "ascii",
    "gb2312": "gb18030",
    "gbk": "gb18030",
    "ks_c_5601-1987": "cp949",
    "x-sjis": "shift_jis",
}
_DECODED_CTE = ("base64", "quoted-printable", "x-uuencode", "uuencode", "x-uue", "uue")


@dataclass
class _Segment:
    plain: str | None
    html: str | None


def _decode_bytes(payload: bytes, charset: str) -> str:
    charset = charset.strip().strip("\"'").lower() or "us-ascii"
    charset = _CHARSET_ALIASES.get(charset, charset)
    candidates = [charset, "utf-8"]
    if charset == "ascii":
        candidates.append("cp1252")
    for enc in candidates:
        try:
            return payload.decode(enc)
        except Exception:
            continue
    try:
        return payload.decode(charset, "replace")
    except Exception:
        return payload.decode("utf-8", "replace")


def _param(part: Message, name: str) -> str:
    try:
        value = part.get_param(name)
    except Exception:
        return ""
    if isinstance(value, tuple):  # RFC 2231: (charset, language, value)
        value = value[2]
    return value if isinstance(value, str) else ""


def _unflow(text: str, delsp: bool) -> str:
    """Undo RFC 3676 format=flowed: join soft-broken lines, unstuff spaces."""
    out: list[str] = []
    para: list[str] = []
    para_depth = -1
    for line in text.split("\n"):
        depth = len(line) - len(line.lstrip(">"))
        content = line[depth:]
        if content.startswith(" ") and (depth or not content.startswith(" >")):
            content = content[1:]  # unstuff, but " >x" stays unquoted text
        if para and depth != para_depth:
            out.append(">" * para_depth + (" " if para_depth else "") + "".join(para))
            para = []
        flowed = content.endswith(" ") and content != "-- "
        if flowed and delsp:
            content = content[:-1]
        para.append(content)
        para_depth = depth
        if not flowed:
            out.append(">" * depth + (" " if depth else "") + "".join(para))
            para = []
    if para:
        out.append(">" * para_depth + (" " if para_depth else "") + "".join(para))
    return "\n".join(out)


def _cut_bytes(payload: bytes, limit: int) -> bytes:
    """At most ``limit`` bytes, not ending inside a UTF-8 sequence."""
    if len(payload) <= limit:
        return payload
    cut = payload[:limit]
    end = len(cut)
    while end and end > limit - 4 and (cut[end - 1] & 0xC0) == 0x80:
        end -= 1
    if end and cut[end - 1] >= 0xC0:
        end -= 1
    return cut[:end]


def _part_text(part: Message, limit: int = limits.MAX_TEXT_CHARS) -> str:
    """The decoded text of a leaf part, at most ``limit`` characters; never raises."""
    try:
        cte = str(part.get("content-transfer-encoding", "")).strip().lower()
        charset = part.get_content_charset("us-ascii") or "us-ascii"
    except Exception:
        cte, charset = "", "us-ascii"
    text: str
    byte_limit = limit * 4  # a character is at most 4 bytes in any charset we decode
    try:
        if cte in _DECODED_CTE:
            payload = part.get_payload(decode=True)
            if not isinstance(payload, bytes):
                return ""
            text = _decode_bytes(_cut_bytes(payload, byte_limit), charset)
        else:
            # The stored payload: 8-bit bytes as surrogate escapes (parsed from
            # bytes) or real text (built from str). get_payload() would decode
            # the escapes itself, with "replace" on an unknown charset.
            raw = getattr(part, "_payload", None)
            if not isinstance(raw, str):
                return ""
            raw = raw[:byte_limit]
            try:
                data = raw.encode("ascii", "surrogateescape")
            except UnicodeEncodeError:
                text = raw
            else:
                text = _decode_bytes(_cut_bytes(data, byte_limit), charset)
    except Exception:
        return ""
    text = text[:limit].replace("\r\n", "\n").replace("\r", "\n")
    if part.get_content_type() == "text/plain" and _param(part, "format").lower() == "flowed":
        text = _unflow(text, _param(part, "delsp").lower() == "yes")
    return text


def _is_file(part: Message, root: bool = False) -> bool:
    return part_role(part, root=root) == "file"


def _segments(part: Message, depth: int = 0) -> list[_Segment]:
    """The text of ``part``: ``rules.inbound.part_role``'s text parts, one of
    each multipart/alternative, the root of a multipart/related."""
    if depth > limits.MAX_MIME_DEPTH:
        return []
    role = part_role(part, root=depth == 0)
    if role == "file":
        return []  # an attachment, a forwarded or bounced message: a file
    subtype = part.get_content_subtype()
    if role == "container":
        kids = _children(part)
        if subtype == "alternative":
            plain: str | None = None
            html: str | None = None
            for child in kids:
                if _is_file(child):
                    continue
                segs = _segments(child, depth + 1)
                plains = [s.plain for s in segs if s.plain]
                htmls = [s.html for s in segs if s.html]
                if plain is None and plains and "".join(plains).strip():
                    plain = "\n".join(plains)
                if htmls:
                    html = "\n".join(htmls)
            return [_Segment(plain, html)] if plain is not None or html is not None else []
        if subtype == "related" and kids:
            start = _param(part, "start").strip("<> ")
            root = kids[0]
            if start:
                for child in kids:
                    if str(child.get("content-id", "")).strip("<> ") == start:
                        root = child
                        break
            return _segments(root, depth + 1)
        found: list[_Segment] = []
        for child in kids:
            found.extend(_segments(child, depth + 1))
        return found
    if part.get_content_type() == "text/html":
        return [_Segment(None, _part_text(part, limits.MAX_HTML_CHARS + limits.MAX_TEXT_CHARS))]
    return [_Segment(_part_text(part), None)]  # text/plain, or a broken multipart shown as text


def _html_text(html: str, strip: bool) -> str:
    """HTML as text: the first ``limits.MAX_HTML_CHARS`` through the tree
    builder (quotes stripped when ``strip``), the rest by stripping tags."""
    head, rest = html[: limits.MAX_HTML_CHARS], html[limits.MAX_HTML_CHARS :]
    text = _html_reply_text(head) if strip else html_to_text(head)
    if rest and not strip:  # the history below a reply is not new text
        text += "\n" + _fallback_text(rest[: limits.MAX_TEXT_CHARS])
    return text


_CUT_NOTE = "[casegate: the text is cut here; the whole message is stored as received]"


def _readable(msg: Message, strip_html: bool) -> str:
    """The text parts of ``msg``, at most ``limits.MAX_TEXT_CHARS`` characters
    (``body_text`` ends a cut text with a note saying so)."""
    texts: list[str] = []
    size = 0
    for seg in _segments(msg):
        if size >= limits.MAX_TEXT_CHARS:
            break
        if seg.plain is not None and seg.plain.strip():
            texts.append(seg.plain)
        elif seg.html is not None and seg.html.strip():
            texts.append(_html_text(seg.html, strip_html))
        else:
            continue
        size += len(texts[-1]) + 1
    text = "\n".join(texts)
    if len(text) > limits.MAX_TEXT_CHARS:
        cut = text.rfind("\n", 0, limits.MAX_TEXT_CHARS)
        text = text[: cut if cut > 0 else limits.MAX_TEXT_CHARS]
        if not strip_html:  # the stored text says so; a reply is sent as it is
            text += "\n" + _CUT_NOTE
    return text


def body_text(msg: Message) -> str:
    """The full readable text of ``msg`` (history included), for storing.

    Same part selection as :func:`extract_reply`: text/plain preferred, HTML
    converted when it is the only text or the text/plain part is empty;
    attachments and attached messages skipped; charsets decoded leniently.
    """
    try:
        return _tidy(_split_lines(_readable(msg, strip_html=False)))
    except Exception:
        return ""


def extract_reply(msg: Message, *, keep_signature: bool = False) -> str:
    """The new text of a reply, ready to send on: quotes, history, marker,
    signature and device trailers removed (see the module documentation).

    Returns "" when the message holds nothing new. Never raises.
    """
    try:
        return strip_quoted_text(_readable(msg, strip_html=True), keep_signature=keep_signature)
    except Exception:
        return ""
