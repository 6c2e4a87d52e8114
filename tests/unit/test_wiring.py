"""smtpd_hook.wiring's pure parts and the DKIM check (DNS faked: the one
thing that cannot run here); the Postfix parts run against a real Postfix in
tests/system/test_check.py."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from smtpd_hook import dkim, wiring


@pytest.mark.parametrize("value, items", [
    ("hash:/a, hash:/b", ["hash:/a", "hash:/b"]),
    ("hash:/a hash:/b,,pcre:/c", ["hash:/a", "hash:/b", "pcre:/c"]),
    ("inet:localhost:8891, { inet:127.0.0.1:10027, default_action=accept }",
     ["inet:localhost:8891", "{ inet:127.0.0.1:10027, default_action=accept }"]),
    ("check_recipient_access hash:/x, permit_mynetworks", ["check_recipient_access", "hash:/x",
                                                           "permit_mynetworks"]),
    ("", []),
])
def test_split_list(value: str, items: list[str]) -> None:
    assert wiring.split_list(value) == items


@pytest.mark.parametrize("value, parsed", [
    ("casegate:[127.0.0.1]:10025", ("casegate", "127.0.0.1", 10025)),
    ("casegate:127.0.0.1:10025", ("casegate", "127.0.0.1", 10025)),
    ("smtp:[mail.example.com]", ("smtp", "mail.example.com", None)),
    ("error:", ("error", "", None)),
])
def test_nexthop(value: str, parsed: tuple) -> None:
    assert wiring._nexthop(value) == parsed


@pytest.mark.parametrize("value, endpoint", [
    ("127.0.0.1:10027", "inet:127.0.0.1:10027"),
    ("inet:[127.0.0.1]:10027", "inet:127.0.0.1:10027"),
    ("inet:localhost:10027", "inet:127.0.0.1:10027"),
    ("unix:/run/casegate/milter", "unix:/run/casegate/milter"),
])
def test_endpoint(value: str, endpoint: str) -> None:
    assert wiring._endpoint(value) == endpoint


def test_milter_entry_reads_per_milter_settings() -> None:
    assert wiring._milter_entry("{ inet:127.0.0.1:10027, default_action=accept, connect_timeout=10s }") == (
        "inet:127.0.0.1:10027", {"default_action": "accept", "connect_timeout": "10s"})


@pytest.fixture(scope="module")
def key(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    path = tmp_path_factory.mktemp("dkim") / "k.pem"
    record = dkim.keygen("example.com", "s1", path, bits=1024)
    return path, record


def _txt(record: str) -> str:
    """The TXT value of a zone-file record as DNS returns it (strings joined)."""
    return "".join(re.findall(r'"([^"]*)"', record))


def test_dkim_check(key: tuple[Path, str], tmp_path: Path) -> None:
    path, record = key
    conf = {"key": str(path), "domain": "example.com", "selector": "s1"}
    asked: list[str] = []

    def published(name: str) -> list[str]:
        asked.append(name)
        return [_txt(record)]

    assert wiring._dkim(conf, published).status == wiring.OK
    assert asked == ["s1._domainkey.example.com"]

    other = tmp_path / "other.pem"
    other_record = dkim.keygen("example.com", "s1", other, bits=1024)
    wrong = wiring._dkim(conf, lambda name: [_txt(other_record)])
    assert wrong.status == wiring.FAIL and "another key" in wrong.detail
    assert wrong.fix == (f"publish in DNS: {' '.join(record.split())}",)

    missing = wiring._dkim(conf, lambda name: [])
    assert missing.status == wiring.FAIL and "no TXT record" in missing.detail

    def unreachable(name: str) -> list[str]:
        raise wiring.DnsUnreachable("no nameservers")

    skipped = wiring._dkim(conf, unreachable)
    assert skipped.status == wiring.SKIP and "DNS not reachable" in skipped.detail
    assert wiring._dkim({}, unreachable).status == wiring.SKIP
    broken = wiring._dkim({**conf, "key": str(tmp_path / "none.pem")}, published)
    assert broken.status == wiring.FAIL and broken.fix


def test_render_says_what_to_add() -> None:
    text = wiring.render([wiring.Check("a", wiring.OK, "fine"),
                          wiring.Check("b", wiring.FAIL, "broken", ("main.cf: x = y",))])
    assert text.splitlines() == ["OK   a: fine", "FAIL b: broken", "       fix: main.cf: x = y",
                                 "1 problem(s)"]
