"""rules.blacklist: patterns, address and domain matching, subject patterns."""

from __future__ import annotations

import pytest

from rules.blacklist import (
    Blacklist,
    Entry,
    canonical_address,
    decode_subject,
    normalize_address,
    normalize_pattern,
)


@pytest.mark.parametrize(
    ("raw", "normalized"),
    [
        ("John@Example.COM", "john@example.com"),
        ("  john@example.com  ", "john@example.com"),
        ("<john@example.com>", "john@example.com"),
        ("@Example.com", "@example.com"),
        ("@example.com.", "@example.com"),
        ("john+tag@example.com", "john+tag@example.com"),
        ("@b\u00fccher.example", "@xn--bcher-kva.example"),
        ('"john doe"@example.com', '"john doe"@example.com'),
    ],
)
def test_normalize_pattern(raw: str, normalized: str) -> None:
    assert normalize_pattern(raw) == normalized


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("john", "no '@'"),
        ("example.com", "no '@'"),
        ("john@", "no domain"),
        ("@", "no domain"),
        ("@localhost", "no dot"),
        ("a@b@example.com", "more than one '@'"),
        ("john doe@example.com", "spaces"),
        ("john@exa mple.com", "invalid characters"),
        ("john@example..com", "empty label"),
        ("john@.example.com", "empty label"),
        ("@" + "a" * 64 + ".com", "longer than 63"),
        ("x" * 65 + "@example.com", "local part longer"),
    ],
)
def test_normalize_pattern_refuses_with_a_clear_message(raw: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        normalize_pattern(raw)


@pytest.mark.parametrize(
    ("address", "parts"),
    [
        ("<John@Example.com>", ("john", "example.com")),
        ("john@example.com", ("john", "example.com")),
        ("<@relay.example:john@example.com>", ("john", "example.com")),
        ("<>", None),
        ("", None),
        ("postmaster", None),
        ("john@", None),
    ],
)
def test_canonical_address(address: str, parts: tuple[str, str] | None) -> None:
    assert canonical_address(address) == parts


BLACKLIST = Blacklist(
    [
        Entry("spammer@example.com", reason="sends junk"),
        Entry("@spam.example"),
        Entry("tagged+only@example.org"),
        Entry("@example.net", subject=r"\bviagra\b", reason="pills"),
        Entry("boss@example.com", subject="^urgent"),
    ]
)


@pytest.mark.parametrize(
    ("sender", "pattern"),
    [
        ("spammer@example.com", "spammer@example.com"),
        ("<SPAMMER@Example.Com>", "spammer@example.com"),
        ("spammer+anything@example.com", "spammer@example.com"),
        ("anyone@spam.example", "@spam.example"),
        ("Anyone+x@SPAM.example", "@spam.example"),
        ("tagged+only@example.org", "tagged+only@example.org"),
        # no match:
        ("other@example.com", None),
        ("spammer@example.org", None),
        ("tagged@example.org", None),  # the pattern's tag is not optional
        ("tagged+other@example.org", None),
        ("anyone@mail.spam.example", None),  # subdomains do not match a domain entry
        ("anyone@notspam.example", None),
        ("<>", None),
        ("", None),
        ("spam.example", None),
        # subject entries never match at MAIL FROM:
        ("anyone@example.net", None),
        ("boss@example.com", None),
    ],
)
def test_match_sender(sender: str, pattern: str | None) -> None:
    entry = BLACKLIST.match_sender(sender)
    assert (entry.pattern if entry else None) == pattern


@pytest.mark.parametrize(
    ("sender", "subject", "pattern"),
    [
        ("x@example.net", "Cheap VIAGRA here", "@example.net"),
        ("x+tag@Example.NET", "viagra", "@example.net"),
        ("x@example.net", "viagrafalls", None),  # \b in the pattern
        ("x@example.net", "hello", None),
        ("x@sub.example.net", "viagra", None),
        ("boss@example.com", "URGENT: wire money", "boss@example.com"),
        ("boss@example.com", "re: urgent", None),  # anchored by the pattern itself
        ("boss+x@example.com", "urgent", "boss@example.com"),
        # entries without a subject are for match_sender only:
        ("spammer@example.com", "anything", None),
        ("<>", "viagra", None),
    ],
)
def test_match_with_subject(sender: str, subject: str, pattern: str | None) -> None:
    entry = BLACKLIST.match(sender, subject)
    assert (entry.pattern if entry else None) == pattern


def test_match_returns_the_entry_with_its_reason() -> None:
    entry = BLACKLIST.match_sender("spammer@example.com")
    assert entry == Entry("spammer@example.com", reason="sends junk")


def test_invalid_subject_regex_names_the_error() -> None:
    with pytest.raises(ValueError, match=r"invalid subject pattern '\(unclosed'.*missing \)"):
        Blacklist([Entry("@example.com", subject="(unclosed")])


def test_invalid_pattern_raises_when_strict() -> None:
    with pytest.raises(ValueError, match="no '@'"):
        Blacklist([Entry("nonsense")])


def test_lenient_blacklist_skips_and_reports_bad_entries() -> None:
    good = Entry("@spam.example")
    bl = Blacklist(
        [Entry("nonsense"), good, Entry("@x.example", subject="[")],
        strict=False,
    )
    assert len(bl) == 1
    assert bl.match_sender("a@spam.example") == good
    assert [e.pattern for e, _ in bl.skipped] == ["nonsense", "@x.example"]
    assert "no '@'" in bl.skipped[0][1]


def test_empty_subject_means_no_subject_pattern() -> None:
    bl = Blacklist([Entry("@spam.example", subject="")])
    assert bl.match_sender("a@spam.example") is not None


def test_idn_domain_matches_its_ascii_form() -> None:
    bl = Blacklist([Entry("@b\u00fccher.example")])
    assert bl.match_sender("a@xn--bcher-kva.example") is not None
    assert bl.match_sender("a@B\u00dcCHER.example") is not None


def test_very_long_subject_is_cut_before_matching() -> None:
    bl = Blacklist([Entry("@example.net", subject="needle")])
    assert bl.match("a@example.net", "x" * 5000 + "needle") is None
    assert bl.match("a@example.net", "needle" + "x" * 5000) is not None


def test_empty_blacklist() -> None:
    bl = Blacklist()
    assert len(bl) == 0
    assert bl.match_sender("a@b.example") is None
    assert bl.match("a@b.example", "s") is None


def test_has_subject_entries() -> None:
    assert BLACKLIST.has_subject_entries
    assert not Blacklist([Entry("@spam.example")]).has_subject_entries
    assert not Blacklist([Entry("@spam.example", subject="")]).has_subject_entries


# --------------------------------------------------------------------------
# One address validator for everything the CLI stores (issue 8)


@pytest.mark.parametrize(
    ("raw", "normalized"),
    [
        ("Support@Example.COM", "support@example.com"),
        (" <help@example.com> ", "help@example.com"),
        ("jane+x@example.com", "jane+x@example.com"),
        ("info@b\u00fccher.example", "info@xn--bcher-kva.example"),
    ],
)
def test_normalize_address(raw: str, normalized: str) -> None:
    assert normalize_address(raw) == normalized


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("help@example", "supervised address 'help@example': domain 'example' has no dot"),
        ("@example.com", "has no local part"),  # a mailbox is not a domain
        ("help", "no '@'"),
        ("", "empty supervised address"),
        ("a b@example.com", "spaces"),
    ],
)
def test_normalize_address_refuses(raw: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        normalize_address(raw, what="supervised address")


def test_normalize_address_allows_a_domain_on_request() -> None:
    assert normalize_address("@Example.com", allow_domain=True) == "@example.com"
    with pytest.raises(ValueError, match="domain 'example' has no dot"):
        normalize_address("@example", allow_domain=True)


def test_what_the_validator_accepts_the_blacklist_accepts() -> None:
    # The CLI validates with normalize_address; the milter builds from the
    # stored rows with the same rules, so nothing the CLI stored is skipped.
    for raw in ("a@example.com", "@example.com", '"a b"@example.com', "x+y@b\u00fccher.example"):
        assert not Blacklist([Entry(normalize_address(raw, allow_domain=True))]).skipped


# --------------------------------------------------------------------------
# One verdict for the milter and the filter (issue 8)


@pytest.mark.parametrize(
    ("raw", "decoded"),
    [
        ("plain subject", "plain subject"),
        ("folded\r\n subject", "folded subject"),
        ("=?utf-8?q?cheap_VIAGRA?=", "cheap VIAGRA"),
        ("=?utf-8?b?Q0FTSU5PIHdpbg==?=", "CASINO win"),
        ("Re: =?iso-8859-1?q?caf=E9?=  now", "Re: caf\u00e9 now"),
        ("  many   spaces\there ", "many spaces here"),
        ("=?bogus?q?x?=", "x"),  # an unknown charset: the bytes as they come
        ("", ""),
    ],
)
def test_decode_subject(raw: str, decoded: str) -> None:
    assert decode_subject(raw) == decoded
    assert decode_subject(decoded) == decoded  # decoded text stays as it is


@pytest.mark.parametrize(
    ("senders", "subject", "pattern"),
    [
        (["spammer@example.com"], "anything", "spammer@example.com"),
        (["srs0=x@fwd.example", "Spammer+x@example.com"], "", "spammer@example.com"),
        (["x@example.net"], "=?utf-8?q?cheap_VIAGRA?=", "@example.net"),
        (["x@example.net"], "cheap VIAGRA", "@example.net"),  # decoded already: same verdict
        (["x@example.net"], ["hello", "=?utf-8?q?viagra?="], "@example.net"),  # two Subject:
        (["boss@example.com"], "  URGENT:\r\n wire", "boss@example.com"),
        (["boss@example.com"], "re: urgent", None),
        (["x@example.net"], "hello", None),
        (["", "<>"], "viagra", None),
        ([], "viagra", None),
        # An address entry wins over a subject entry of an earlier address.
        (["x@example.net", "anyone@spam.example"], "viagra", "@spam.example"),
    ],
)
def test_verdict(senders: list[str], subject: str | list[str], pattern: str | None) -> None:
    entry = BLACKLIST.verdict(senders, subject)
    assert (entry.pattern if entry else None) == pattern


def test_verdict_without_a_subject_matches_an_empty_subject() -> None:
    bl = Blacklist([Entry("@example.net", subject="^$")])
    assert bl.verdict(["a@example.net"]) is not None
    assert bl.verdict(["a@example.net"], "hi") is None
