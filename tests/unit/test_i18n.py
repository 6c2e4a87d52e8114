"""The table of words the executor writes into CSR notifications itself."""

from __future__ import annotations

import re

import pytest

from smtpd_hook.i18n import PL, say, translate


def test_every_polish_entry_keeps_the_placeholders() -> None:
    for english, polish in PL.items():
        assert sorted(re.findall(r"\{(\w+)\}", english)) == sorted(re.findall(r"\{(\w+)\}", polish)), english


@pytest.mark.parametrize(("english", "polish"), [
    ("New case", "Nowa sprawa"),
    ("New case (follow-up of CS0000007)", "Nowa sprawa (kontynuacja sprawy CS0000007)"),
    ("Assigned to you by jane@example.com", "Przypisana do Ciebie przez: jane@example.com"),
    ("The customer wrote again (for Jane Doe, who is away; the case stays theirs)",
     "Klient napisał ponownie (zastępstwo: Jane Doe jest nieobecny/a; sprawa zostaje przy tej osobie)"),
    ("Something new nobody translated", "Something new nobody translated"),
])
def test_translate_headlines(english: str, polish: str) -> None:
    assert translate("pl", english) == polish
    assert translate("en", english) == english


def test_say() -> None:
    assert say("pl", "Blacklist {address}", address="a@b.test") == "Czarna lista: a@b.test"
    assert say("en", "Blacklist {address}", address="a@b.test") == "Blacklist a@b.test"


def test_every_key_the_executor_says_is_in_the_table() -> None:
    from smtpd_hook import executor

    source = open(executor.__file__, encoding="utf-8").read()
    # Every literal key the executor passes to say() is in the Polish table.
    keys = re.findall(r'say\(\s*\w+,\s*((?:"[^"]*"\s*)+)', source)
    assert keys
    for literal in keys:
        key = "".join(re.findall(r'"([^"]*)"', literal)).encode().decode("unicode_escape")
        assert key in PL, key


def test_a_placeholder_used_twice() -> None:
    english = ("Case CS1 in pool p found no available CSR (least_load).\nIt waits; the scheduler tries "
               "again every 5 minutes. `casegate case assign CS1 ADDRESS` assigns it now.")
    assert translate("pl", english).startswith("Sprawa CS1 w puli p nie znalazła")
