"""The few words casegate writes into a CSR's notification itself, outside
the templates: the headline (from the rules: "New case", "The customer wrote
again" …), the labels of the one-click actions ("Close …", "Assign to …"),
and the authors of the history ("Internal note by …"). English is what the
code says; this table turns them into the mailbox's language (its pool's
unless it has one of its own). One place: add a language here and in
``templates/<language>/``.

Each key is an English template with ``{name}`` placeholders, exactly as the
code formats it. ``say`` formats a key in a language; ``translate`` takes a
finished English string (a rule's headline) and finds the key it came from.
A string with no key stays English (a new headline shows, untranslated,
rather than not at all)."""

from __future__ import annotations

import re
from functools import cache

PL: dict[str, str] = {
    # headlines (rules/life.py, rules/commands.py)
    "New case": "Nowa sprawa",
    "New case (follow-up of {number})": "Nowa sprawa (kontynuacja sprawy {number})",
    "New case (automatic mail)": "Nowa sprawa (wiadomość automatyczna)",
    "New case (assigned on retry)": "Nowa sprawa (przypisana przy ponownej próbie)",
    "New case, held: the sender is new to this mailbox. #accept opens it (they get the "
    "acknowledgement); #reject refuses it politely":
        "Nowa sprawa, wstrzymana: nadawca pisze na ten adres pierwszy raz. #accept ją otwiera "
        "(nadawca dostanie potwierdzenie); #reject grzecznie odmawia",
    "The customer wrote again": "Klient napisał ponownie",
    "The customer wrote to a closed case: it is reopened":
        "Klient napisał w zamkniętej sprawie: sprawa jest ponownie otwarta",
    "The customer accepted your solution: the case is closed":
        "Klient przyjął Twoje rozwiązanie: sprawa jest zamknięta",
    "The customer rejected your solution": "Klient odrzucił Twoje rozwiązanie",
    "{headline} (for {name}, who is away; the case stays theirs)":
        "{headline} (zastępstwo: {name} jest nieobecny/a; sprawa zostaje przy tej osobie)",
    "Assigned to you by {who}": "Przypisana do Ciebie przez: {who}",
    "Escalated to you by {who}": "Przekazana do Ciebie (eskalacja) przez: {who}",
    "Your next case, {name}": "Twoja następna sprawa, {name}",
    "{department} answered your consultation (internal: the customer does not see it)":
        "{department} odpowiada na Twoje pytanie (wewnętrzne: klient tego nie widzi)",
    # one-click actions (executor._actions)
    "Reopen": "Otwórz ponownie",
    "Close (text below goes to the customer first)":
        "Zamknij (tekst poniżej najpierw trafi do klienta)",
    "; answer {questions}": "; odpowiedz: {questions}",
    "Propose a solution": "Zaproponuj rozwiązanie",
    "Add an internal note": "Dodaj notatkę wewnętrzną",
    "Take it (for a colleague this is forwarded to)":
        "Przejmij ją (dla osoby, której przekazano tę wiadomość)",
    "Set a status": "Ustaw status",
    "Assign to {csr} (level {level}, {state})": "Przypisz do: {csr} (poziom {level}, {state})",
    "Escalate to {csr} (level {level}, {state})":
        "Przekaż wyżej do: {csr} (poziom {level}, {state})",
    "available": "dostępność: tak",
    "away": "nieobecność",
    "Escalate to the second level": "Przekaż na drugi poziom",
    "Blacklist {address}": "Czarna lista: {address}",
    "Blacklist {address} for this subject only": "Czarna lista: {address}, tylko ten temat",
    # the notice to the pool's fallback address (executor._unassigned)
    "Nobody could take it": "Nikt nie mógł przejąć sprawy",
    "Case {number} in pool {pool} found no available CSR ({rule}).\nIt waits; the scheduler tries "
    "again every {minutes} minutes. `casegate case assign {number} ADDRESS` assigns it now.":
        "Sprawa {number} w puli {pool} nie znalazła dostępnego konsultanta ({rule}).\nCzeka; "
        "kolejna próba co {minutes} min. `casegate case assign {number} ADRES` przypisuje ją "
        "od razu.",
    # the history (executor._history, executor._author)
    "Internal note by {actor}": "Notatka wewnętrzna, autor: {actor}",
    "{sender} (department, internal)": "{sender} (dział, wewnętrzne)",
    "(no text)": "(bez treści)",
}

TABLES: dict[str, dict[str, str]] = {"pl": PL}


def say(language: str, template: str, **values: str | int) -> str:
    """``template`` (an English key) in ``language``, formatted."""
    return TABLES.get(language, {}).get(template, template).format(**values)


_FIELD = re.compile(r"\{(\w+)\}")


@cache
def _patterns(language: str) -> list[tuple[re.Pattern[str], str]]:
    out = []
    for key in TABLES.get(language, {}):
        parts = _FIELD.split(key)  # literal, name, literal, name, ...
        seen: set[str] = set()
        regex = ""
        for i, part in enumerate(parts):
            if i % 2 == 0:
                regex += re.escape(part)
            else:  # a name used twice must match the same text twice
                regex += f"(?P={part})" if part in seen else f"(?P<{part}>.+?)"
                seen.add(part)
        try:
            out.append((re.compile(regex, re.S), key))
        except re.error:  # a key the table cannot match stays untranslated, never a 451
            continue
    return out


def translate(language: str, text: str) -> str:
    """A finished English string (a headline) in ``language``, when the table
    knows the template it was made from; a ``{headline}`` inside is
    translated too. Else ``text`` as it is."""
    if not text or language not in TABLES:
        return text
    for pattern, key in _patterns(language):
        m = pattern.fullmatch(text)
        if m is None:
            continue
        values = m.groupdict()
        if "headline" in values:
            values["headline"] = translate(language, values["headline"])
        try:
            return say(language, key, **values)
        except (KeyError, IndexError, ValueError):  # a broken entry: the English, not a 451
            return text
    return text
