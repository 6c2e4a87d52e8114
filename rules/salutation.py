"""A CSR's own greeting and sign-off, recognised so the customer never gets two.

casegate wraps a CSR's answer in a greeting ("Hello John,") and a sign-off
(the CSR's name, signature, organisation). CSRs type their own anyway. This
module finds, in the new text of an answer:

* a **greeting**: the first non-blank line, when it is only a greeting
  ("Hello John,", "Hi,", "Dear Mr. Smith,", "Dzień dobry,", "Witam,",
  "Szanowny Panie Janie,", "Hallo Frau Müller,", "Bonjour Madame,",
  "Hola Ana,"): a greeting word, at most four more words, and a comma,
  "!" or nothing after it. Without punctuation the words after the greeting
  word must be capitalised (names), so "Hello world program crashes" is not
  one, nor is "Hi there, the parcel left today." (text after the comma);
* a **sign-off**: a closing phrase among the last lines ("Best regards,",
  "Thanks,", "Pozdrawiam,", "Z poważaniem", "Mit freundlichen Grüßen",
  "Cordialement", "Saludos") on a line of its own or followed by a name
  ("Best regards, Jane"), then at most four short lines (name, title,
  phone). "Thank you for waiting." is a sentence, not a sign-off.

Neither is recognised when nothing else would remain: "Thanks!" alone is
the answer. English, Polish, German, French and Spanish. Pure: stdlib only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["Parts", "own", "split", "split_greeting", "split_signoff"]

# fmt: off
_GREETINGS = (
    # English
    "hello", "hi", "hey", "dear", "good morning", "good afternoon", "good evening",
    "greetings",
    # Polish
    "dzień dobry", "dzien dobry", "dobry wieczór", "witam", "witaj", "witajcie", "cześć",
    "szanowny", "szanowna", "szanowni", "drogi", "droga", "drodzy",
    # German
    "hallo", "guten tag", "guten morgen", "guten abend", "sehr geehrte", "sehr geehrter",
    "sehr geehrtes", "liebe", "lieber", "moin", "servus", "grüß gott",
    # French
    "bonjour", "bonsoir", "salut", "cher", "chère", "chers", "madame", "monsieur",
    # Spanish
    "hola", "buenos días", "buenos dias", "buenas tardes", "buenas noches", "estimado",
    "estimada", "estimados", "querido", "querida",
)
_CLOSINGS = (
    # English
    "best regards", "kind regards", "warm regards", "warmest regards", "regards",
    "best wishes", "all the best", "best", "cheers", "thanks", "thank you", "many thanks",
    "thanks again", "thanks a lot", "sincerely", "yours sincerely", "sincerely yours",
    "yours faithfully", "yours truly", "take care", "with kind regards", "with best regards",
    # Polish
    "pozdrawiam", "pozdrawiam serdecznie", "serdecznie pozdrawiam", "z poważaniem",
    "z powazaniem", "z wyrazami szacunku", "łączę pozdrowienia", "pozdrowienia",
    "dziękuję", "dziekuje", "dzięki", "miłego dnia", "z pozdrowieniami",
    # German
    "mit freundlichen grüßen", "mit freundlichen grüssen", "freundliche grüße",
    "freundliche grüsse", "viele grüße", "viele grüsse", "beste grüße", "beste grüsse",
    "liebe grüße", "liebe grüsse", "herzliche grüße", "gruß", "gruss", "grüße", "mfg",
    "danke", "vielen dank",
    # French
    "cordialement", "bien cordialement", "bien à vous", "salutations",
    "sincères salutations", "merci", "merci beaucoup", "bonne journée",
    # Spanish
    "saludos", "un saludo", "saludos cordiales", "un cordial saludo", "atentamente",
    "gracias", "muchas gracias",
)
# fmt: on


def _alternation(words: tuple[str, ...]) -> str:
    return "|".join(re.escape(w).replace(r"\ ", r"\s+") for w in sorted(words, key=len, reverse=True))


_NAME = r"[^\s,!?:;]+"  # a word of a name: "Mr.", "Müller", "O'Neil", "Jean-Luc"
_GREETING_RE = re.compile(
    rf"(?P<word>{_alternation(_GREETINGS)})(?P<rest>(?:\s+{_NAME}){{0,4}})\s*(?P<end>[,!:.]|—|-)?",
    re.IGNORECASE,
)
_CLOSING_RE = re.compile(
    rf"(?P<word>{_alternation(_CLOSINGS)})\s*(?P<end>[,!.]|—|-)?(?P<rest>(?:\s*{_NAME}){{0,3}})",
    re.IGNORECASE,
)
_MAX_GREETING = 80
_MAX_SIGNOFF_LINES = 4  # after the closing phrase
_MAX_SIGNOFF_LINE = 60
_SIGNOFF_WINDOW = 6  # the closing phrase is among the last lines


def _capitalised(words: str) -> bool:
    return all(w[:1].isupper() for w in words.split())


def _is_greeting(line: str) -> bool:
    line = line.strip()
    if not line or len(line) > _MAX_GREETING:
        return False
    m = _GREETING_RE.fullmatch(line)
    if m is None:
        return False
    rest = m.group("rest")
    return bool(m.group("end")) or not rest.strip() or _capitalised(rest)


def _is_closing(line: str) -> bool:
    line = line.strip()
    if not line or len(line) > _MAX_SIGNOFF_LINE:
        return False
    m = _CLOSING_RE.fullmatch(line)
    if m is None:
        return False
    rest = m.group("rest").strip()
    # "Thanks, Jane" / "Best regards Jane Doe": a name; "Thank you for waiting": a sentence.
    return not rest or _capitalised(rest)


def _nonblank(lines: list[str]) -> list[int]:
    return [i for i, line in enumerate(lines) if line.strip()]


def split_greeting(text: str) -> tuple[str, str]:
    """(the CSR's greeting line, the rest); ("", text) when there is none."""
    lines = (text or "").replace("\r\n", "\n").split("\n")
    filled = _nonblank(lines)
    if len(filled) < 2 or not _is_greeting(lines[filled[0]]):
        return "", text
    first = filled[0]
    return lines[first].strip(), "\n".join(lines[first + 1 :]).strip("\n")


def split_signoff(text: str) -> tuple[str, str]:
    """(the text before the CSR's sign-off, the sign-off); (text, "") when none."""
    lines = (text or "").replace("\r\n", "\n").split("\n")
    filled = _nonblank(lines)
    for pos in range(max(1, len(filled) - _SIGNOFF_WINDOW), len(filled)):
        idx = filled[pos]
        tail = filled[pos + 1 :]
        if len(tail) > _MAX_SIGNOFF_LINES:
            continue
        if any(len(lines[i].strip()) > _MAX_SIGNOFF_LINE for i in tail):
            continue
        if _is_closing(lines[idx]):
            body = "\n".join(lines[:idx]).rstrip()
            signoff = "\n".join(line.strip() for line in lines[idx:]).strip()
            return body, signoff
    return text, ""


@dataclass(frozen=True)
class Parts:
    greeting: str  # the CSR's own greeting line, or ""
    body: str  # what is between
    signoff: str  # the CSR's own sign-off (closing phrase and the lines after it), or ""


def split(text: str) -> Parts:
    """An answer's own greeting, body and sign-off."""
    greeting, rest = split_greeting(text)
    body, signoff = split_signoff(rest)
    return Parts(greeting, body.strip("\n"), signoff)


def own(text: str, name: str, our_signoff: str) -> dict[str, str]:
    """What of the template's ``greeting``, ``reply`` and ``signoff`` the CSR's
    own words replace ({} when they typed neither).

    Their greeting line becomes ``greeting`` and leaves ``reply``. After their
    sign-off come only the lines of ``our_signoff`` they did not already write:
    not their name again (a line starting with their first name, when the
    sign-off holds it), but the signature's other lines and the organisation.
    """
    parts = split(text)
    if not parts.greeting and not parts.signoff:
        return {}
    out = {"reply": parts.body}
    if parts.greeting:
        out["greeting"] = parts.greeting
    if parts.signoff:
        theirs = parts.signoff.casefold()
        words = name.split()
        first = words[0].casefold() if words else ""
        ours = [line.strip() for line in our_signoff.splitlines()
                if line.strip() and line.strip().casefold() not in theirs
                and not (first and line.strip().casefold().startswith(first) and first in theirs)]
        out["signoff"] = "\n".join([parts.signoff, *ours])
    return out
