"""rules.salutation: a CSR's own greeting and sign-off, one row per case."""

from __future__ import annotations

import pytest

from rules.salutation import Parts, own, split

BODY = "Your refund was issued today."

# (name, answer, expected greeting, expected body, expected sign-off)
ROWS: list[tuple[str, str, str, str, str]] = [
    ("en_hello_name", f"Hello John,\n\n{BODY}", "Hello John,", BODY, ""),
    ("en_hi", f"Hi,\n{BODY}", "Hi,", BODY, ""),
    ("en_hi_no_comma", f"Hi Anna\n\n{BODY}", "Hi Anna", BODY, ""),
    ("en_dear_title", f"Dear Mr. Smith,\n\n{BODY}", "Dear Mr. Smith,", BODY, ""),
    ("en_good_morning", f"Good morning Anna!\n\n{BODY}", "Good morning Anna!", BODY, ""),
    ("en_hi_there", f"Hi there,\n\n{BODY}", "Hi there,", BODY, ""),
    ("pl_dzien_dobry", f"Dzień dobry,\n\n{BODY}", "Dzień dobry,", BODY, ""),
    ("pl_witam", f"Witam,\n{BODY}", "Witam,", BODY, ""),
    ("pl_szanowny_panie", f"Szanowny Panie Janie,\n\n{BODY}", "Szanowny Panie Janie,", BODY, ""),
    ("pl_szanowna_pani", f"Szanowna Pani,\n\n{BODY}", "Szanowna Pani,", BODY, ""),
    ("de_hallo", f"Hallo Frau Müller,\n\n{BODY}", "Hallo Frau Müller,", BODY, ""),
    ("de_sehr_geehrte", f"Sehr geehrte Damen und Herren,\n\n{BODY}",
     "Sehr geehrte Damen und Herren,", BODY, ""),
    ("fr_bonjour", f"Bonjour Madame,\n\n{BODY}", "Bonjour Madame,", BODY, ""),
    ("es_hola", f"Hola Ana,\n\n{BODY}", "Hola Ana,", BODY, ""),
    ("en_best_regards", f"{BODY}\n\nBest regards,\nJane", "", BODY, "Best regards,\nJane"),
    ("en_best_regards_one_line", f"{BODY}\n\nBest regards, Jane", "", BODY, "Best regards, Jane"),
    ("en_thanks", f"{BODY}\n\nThanks,", "", BODY, "Thanks,"),
    ("en_kind_regards_block", f"{BODY}\n\nKind regards,\nJane Doe\nSupport lead\n+1 555 0100",
     "", BODY, "Kind regards,\nJane Doe\nSupport lead\n+1 555 0100"),
    ("pl_pozdrawiam", f"{BODY}\n\nPozdrawiam,\nJan", "", BODY, "Pozdrawiam,\nJan"),
    ("pl_z_powazaniem", f"{BODY}\n\nZ poważaniem\nJan Kowalski", "", BODY,
     "Z poważaniem\nJan Kowalski"),
    ("pl_pozdrawiam_serdecznie", f"{BODY}\n\nPozdrawiam serdecznie\nAnna", "", BODY,
     "Pozdrawiam serdecznie\nAnna"),
    ("de_mfg", f"{BODY}\n\nMit freundlichen Grüßen\nJörg", "", BODY,
     "Mit freundlichen Grüßen\nJörg"),
    ("fr_cordialement", f"{BODY}\n\nCordialement,\nMarie", "", BODY, "Cordialement,\nMarie"),
    ("es_saludos", f"{BODY}\n\nUn saludo,\nAna", "", BODY, "Un saludo,\nAna"),
    ("both", f"Hi Anna,\n\n{BODY}\n\nBest regards,\nJane", "Hi Anna,", BODY,
     "Best regards,\nJane"),
    ("both_pl", f"Dzień dobry,\n\n{BODY}\n\nPozdrawiam,\nJan", "Dzień dobry,", BODY,
     "Pozdrawiam,\nJan"),
    # negatives: sentences that start or end like a greeting or a sign-off
    ("neg_plain", BODY, "", BODY, ""),
    ("neg_greeting_then_text_on_the_line", f"Hi Anna, {BODY}\nMore.", "",
     f"Hi Anna, {BODY}\nMore.", ""),
    ("neg_hello_sentence", "Hello world program crashes on start.\nTry 2.1.", "",
     "Hello world program crashes on start.\nTry 2.1.", ""),
    ("neg_thank_you_sentence", f"{BODY}\n\nThank you for waiting.", "",
     f"{BODY}\n\nThank you for waiting.", ""),
    ("neg_thanks_lowercase_after", f"{BODY}\n\nThanks, see you soon", "",
     f"{BODY}\n\nThanks, see you soon", ""),
    ("neg_only_thanks", "Thanks!", "", "Thanks!", ""),
    ("neg_only_hello", "Hello,", "", "Hello,", ""),
    ("neg_thanks_is_the_answer", "Thanks,\nJane", "", "Thanks,\nJane", ""),
    ("neg_closing_in_the_middle", f"Regards,\nthe parcel:\n{BODY}\nline\nline\nline\nline\nline",
     "", f"Regards,\nthe parcel:\n{BODY}\nline\nline\nline\nline\nline", ""),
    ("neg_liebe_gruesse_aus", "Liebe Grüße aus Berlin sind angekommen.\nDanke.", "",
     "Liebe Grüße aus Berlin sind angekommen.", "Danke."),
    ("neg_long_signoff_tail", f"{BODY}\n\nThanks,\n" + "\n".join(["a line"] * 5), "",
     f"{BODY}\n\nThanks,\n" + "\n".join(["a line"] * 5), ""),
]


@pytest.mark.parametrize("row", ROWS, ids=[r[0] for r in ROWS])
def test_split(row: tuple[str, str, str, str, str]) -> None:
    _, text, greeting, body, signoff = row
    assert split(text) == Parts(greeting, body, signoff)


def test_split_never_raises_on_odd_input() -> None:
    for text in ("", "\n\n", "\r\n", ",", "Hi" * 10_000, "Hello\n" * 10_000, "\x00"):
        assert isinstance(split(text), Parts)


def test_salutation_imports_only_the_standard_library() -> None:
    import ast
    import sys
    from pathlib import Path

    import rules.salutation

    tree = ast.parse(Path(rules.salutation.__file__).read_text(encoding="utf-8"))
    names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    names |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert names and all(n.split(".")[0] in sys.stdlib_module_names | {"__future__"} for n in names)


OURS = "Jane Doe\nSupport Team\nExample Support"
OWN_ROWS = [
    # (answer, name, what replaces the template's variables)
    ("Plain answer.", "Jane Doe", {}),
    ("Hi Anna,\n\nPlain answer.", "Jane Doe", {"greeting": "Hi Anna,", "reply": "Plain answer."}),
    ("Plain answer.\n\nBest regards,\nJane", "Jane Doe",
     {"reply": "Plain answer.", "signoff": "Best regards,\nJane\nSupport Team\nExample Support"}),
    ("Plain answer.\n\nThanks,", "Jane Doe",
     {"reply": "Plain answer.", "signoff": "Thanks,\nJane Doe\nSupport Team\nExample Support"}),
    ("Plain answer.\n\nRegards,\nJane Doe\nSupport Team", "Jane Doe",
     {"reply": "Plain answer.", "signoff": "Regards,\nJane Doe\nSupport Team\nExample Support"}),
    ("Dzień dobry,\nTreść.\n\nPozdrawiam,\nJan", "Jan Kowalski",
     {"greeting": "Dzień dobry,", "reply": "Treść.",
      "signoff": "Pozdrawiam,\nJan\nSupport Team\nExample Support"}),
]


@pytest.mark.parametrize("row", OWN_ROWS, ids=range(len(OWN_ROWS)))
def test_own_replaces_ours_never_both(row: tuple[str, str, dict[str, str]]) -> None:
    text, name, expected = row
    ours = OURS.replace("Jane Doe", name)
    assert own(text, name, ours) == expected
