"""smtpd_hook.dkim: sign, verify, keys -- with the DNS answers injected.

One 2048-bit key is made per module with ``keygen``; the fake resolver
serves the TXT record exactly as ``keygen`` printed it, read back with
dnspython's zone-file parser, so the printed record is what is tested.
No test touches the network: dkimpy's own resolver is replaced by one that
fails the test.
"""

from __future__ import annotations

import base64
import email.policy
import re
import shutil
import stat
import subprocess
from collections.abc import Callable
from email.message import EmailMessage
from pathlib import Path

import dkim as dkimpy
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
    load_pem_private_key,
)

from smtpd_hook import dkim
from smtpd_hook.dkim import DkimResult, Signer, aligned_pass, keygen, passing_domains, verify

HERE = Path(__file__).resolve()
DATA = HERE.parents[1] / "data"
CORPUS = HERE.parents[2].parent / "shared" / "corpus"
OPENSSL = shutil.which("openssl")

DOMAIN, SELECTOR = "example.com", "cg2024"
KEY_NAME = b"cg2024._domainkey.example.com."

#: A 512-bit RSA key (PKCS#1), too small to use: cryptography refuses to
#: make one, so it is fixed here (made with openssl genpkey). Test data only.
SMALL_KEY = b"""-----BEGIN RSA PRIVATE KEY-----
MIIBPAIBAAJBAOR5toiy98bN059dC+n6+bwIDrsS7pYX/9sERWsUAbaPwHljoJdR
YSMzkC6TrTRSsx8WFD4WZJ6uPqbzNHEJtI0CAwEAAQJBAOENTxLqDw1B86F3uuOY
d2STH0eAx4kLTNhFJcfq5iEXLffv6B6qDcLN/Y0B6Qj39jyWw34vA6iGWk7gcdrN
ZrUCIQD24FQnLdN/TiyN6ALerOY3mC+ka3Ly3cDCbAZmzlu2swIhAOzrS7o/X048
lBF2xRC+R7JbdfnJX25IFWVV9qmvrIe/AiEAygXdF4qarmzMbPvVjV8zrX7uTcBX
+oKZAQDhZDOuPZ0CIALYVIF5D1juK00GYxlvX4cJyCHmxCmb3f3oiVzCSk0bAiEA
reGriDlxFk+E/x8zQtgRijyRXLZTc4e3cri94/omDyg=
-----END RSA PRIVATE KEY-----
"""


def txt_value_of(private: bytes | rsa.RSAPrivateKey) -> bytes:
    """The DKIM TXT value for a private key (PEM or loaded), computed here."""
    if isinstance(private, bytes):
        loaded = load_pem_private_key(private, password=None)
        assert isinstance(loaded, rsa.RSAPrivateKey)
        private = loaded
    der = private.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return b"v=DKIM1; k=rsa; p=" + base64.b64encode(der)


def txt_strings(record: str) -> list[bytes]:
    """The strings of a zone-file TXT record, as a DNS server would serve them."""
    name, _, rdata = record.partition(" IN TXT ")
    assert name.endswith("."), record
    rd = dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.TXT, rdata)
    return list(rd.strings)  # type: ignore[attr-defined]


class FakeDns:
    """A dnsfunc(name, timeout) serving fixed TXT answers, counting lookups."""

    def __init__(self, answers: dict[bytes, bytes]) -> None:
        self.answers = answers
        self.lookups: list[tuple[bytes, int]] = []

    def __call__(self, name: bytes, timeout: int) -> bytes | None:
        self.lookups.append((name, timeout))
        return self.answers.get(name)


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(name: bytes, timeout: int = 5) -> bytes | None:
        pytest.fail(f"a test reached dkimpy's real DNS resolver for {name!r}")

    monkeypatch.setattr(dkimpy, "get_txt", refuse)


@pytest.fixture(scope="module")
def key(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    path = tmp_path_factory.mktemp("dkim") / "cg2024.pem"
    return path, keygen(DOMAIN, SELECTOR, path)


@pytest.fixture(scope="module")
def signer(key: tuple[Path, str]) -> Signer:
    return Signer.load(DOMAIN, SELECTOR, key[0])


@pytest.fixture
def fake_dns(key: tuple[Path, str]) -> FakeDns:
    return FakeDns({KEY_NAME: b"".join(txt_strings(key[1]))})


def message(
    subject: str, *, extra: str = "", body: str = "Hello,\r\nthe printer is on fire.\r\n"
) -> bytes:
    return (
        "From: Alice Staff <alice@example.com>\r\n"
        "To: Bob Customer <bob@customer.example>\r\n"
        f"Subject: {subject}\r\n"
        "Date: Mon, 01 Jan 2024 10:00:00 +0000\r\n"
        "Message-ID: <test.1@example.com>\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=us-ascii\r\n"
        "Received: from somewhere by somewhere-else; Mon, 01 Jan 2024 10:00:00 +0000\r\n"
        "X-Mailer: casegate tests\r\n"
        f"{extra}"
        "\r\n"
        f"{body}"
    ).encode("ascii")


def split_signature(signed: bytes) -> tuple[bytes, bytes]:
    """(the prepended DKIM-Signature field, the rest)."""
    assert signed.startswith(b"DKIM-Signature: ")
    match = re.match(rb"DKIM-Signature: .*?\r?\n(?![ \t])", signed, re.DOTALL)
    assert match, signed[:400]
    return signed[: match.end()], signed[match.end() :]


def signature_tags(field: bytes) -> dict[bytes, bytes]:
    value = field.split(b":", 1)[1]
    unfolded = re.sub(rb"\r?\n[ \t]", b" ", value)
    return {
        k.strip(): v.strip()
        for k, _, v in (t.partition(b"=") for t in unfolded.split(b";") if t.strip())
    }


# --------------------------------------------------------------------------
# sign and verify
# --------------------------------------------------------------------------


def test_signed_message_verifies(signer: Signer, fake_dns: FakeDns) -> None:
    signed = signer.sign(message("test_signed_message_verifies"))
    results = verify(signed, dnsfunc=fake_dns, timeout=3)
    assert results == [DkimResult(DOMAIN, SELECTOR, True, "pass")]
    assert results[0].result == "pass"
    assert fake_dns.lookups == [(KEY_NAME, 3)]


def test_signature_header_shape(signer: Signer) -> None:
    raw = message("test_signature_header_shape", extra="Auto-Submitted: auto-replied\r\n")
    field, rest = split_signature(signer.sign(raw))
    assert rest == raw
    tags = signature_tags(field)
    assert tags[b"a"] == b"rsa-sha256"
    assert tags[b"c"] == b"relaxed/relaxed"
    assert tags[b"d"] == DOMAIN.encode()
    assert tags[b"s"] == SELECTOR.encode()
    signed = [h.strip() for h in tags[b"h"].split(b":")]
    # Oversigned: once more than present, so that a second one breaks it ...
    for name in (b"from", b"to", b"subject", b"date", b"message-id", b"auto-submitted"):
        assert signed.count(name) == 2, name
    # ... and absent ones once, so that adding one breaks it.
    for name in (b"cc", b"in-reply-to", b"references", b"reply-to"):
        assert signed.count(name) == 1, name
    assert signed.count(b"mime-version") == 1 and signed.count(b"content-type") == 1
    assert b"received" not in signed and b"x-mailer" not in signed


def test_repeated_header_signed_each_time(signer: Signer, fake_dns: FakeDns) -> None:
    raw = message(
        "test_repeated_header_signed_each_time", extra="Cc: a@x.example\r\nCc: b@x.example\r\n"
    )
    signed = signer.sign(raw)
    h = [v.strip() for v in signature_tags(split_signature(signed)[0])[b"h"].split(b":")]
    assert h.count(b"cc") == 3  # each instance, and one more (oversigned)
    assert verify(signed, dnsfunc=fake_dns)[0].passed
    dropped = signed.replace(b"Cc: b@x.example\r\n", b"")
    assert not verify(dropped, dnsfunc=fake_dns)[0].passed


def test_body_change_fails(signer: Signer, fake_dns: FakeDns) -> None:
    signed = signer.sign(message("test_body_change_fails"))
    [result] = verify(signed.replace(b"on fire", b"on ice!"), dnsfunc=fake_dns)
    assert not result.passed
    assert result.result == "fail"
    assert "body hash" in result.reason


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (b"Subject: test_header_change_fails", b"Subject: test_header_change_fails!"),
        (b"From: Alice Staff <alice@example.com>", b"From: Mallory <mallory@example.com>"),
        (b"From: Alice Staff <alice@example.com>", b"From: Alice Staff <alice@evil.example>"),
        (b"To: Bob Customer", b"To: Eve Customer"),
        # a second From: added after signing (From is oversigned)
        (b"X-Mailer:", b"From: Mallory <mallory@example.com>\r\nX-Mailer:"),
        # a Cc: added although none was signed... is allowed (see below);
        # a signed header removed is not:
        (b"Date: Mon, 01 Jan 2024 10:00:00 +0000\r\n", b""),
    ],
)
def test_header_change_fails(signer: Signer, fake_dns: FakeDns, old: bytes, new: bytes) -> None:
    signed = signer.sign(message("test_header_change_fails"))
    assert old in signed
    [result] = verify(signed.replace(old, new, 1), dnsfunc=fake_dns)
    assert not result.passed
    assert result.result == "fail", result.reason


def test_unsigned_header_may_change(signer: Signer, fake_dns: FakeDns) -> None:
    signed = signer.sign(message("test_unsigned_header_may_change"))
    changed = signed.replace(b"X-Mailer: casegate tests", b"X-Mailer: something else")
    changed = changed.replace(b"\r\n\r\n", b"\r\nReceived: by the next hop\r\n\r\n", 1)
    assert verify(changed, dnsfunc=fake_dns)[0].passed


def test_relaxed_canonicalization_survives_refolding(signer: Signer, fake_dns: FakeDns) -> None:
    signed = signer.sign(message("test_relaxed_canonicalization_survives_refolding"))
    refolded = signed.replace(
        b"To: Bob Customer <bob@customer.example>",
        b"To:   Bob Customer\r\n\t<bob@customer.example>  ",
    ).replace(b"on fire.\r\n", b"on fire.   \r\n\r\n\r\n")
    assert verify(refolded, dnsfunc=fake_dns)[0].passed


def test_unsigned_message_gives_no_results(fake_dns: FakeDns) -> None:
    assert verify(message("test_unsigned_message_gives_no_results"), dnsfunc=fake_dns) == []
    assert verify(b"", dnsfunc=fake_dns) == []
    assert fake_dns.lookups == []


def raising(exc: Exception) -> Callable[[bytes, int], bytes | None]:
    def dnsfunc(name: bytes, timeout: int) -> bytes | None:
        raise exc

    return dnsfunc


def answering(answer: bytes | None) -> Callable[[bytes, int], bytes | None]:
    return lambda name, timeout: answer


@pytest.mark.parametrize(
    ("dnsfunc", "result", "words"),
    [
        (raising(TimeoutError("timed out")), "temperror", "DNS lookup of cg2024._domainkey"),
        (raising(dkimpy.DnsTimeoutError("SERVFAIL")), "temperror", "SERVFAIL"),
        (raising(RuntimeError()), "temperror", "RuntimeError"),
        (answering(b""), "permerror", "no DKIM key in DNS at cg2024._domainkey.example.com."),
        (answering(None), "permerror", "no DKIM key in DNS"),
        (answering(b"v=DKIM1; k=rsa; p="), "permerror", "revoked"),
        (answering(b"v=DKIM1; k=rsa; p=bm90IGEga2V5"), "permerror", "could not parse"),
        (answering(b"this is; not = a ; record ;;"), "permerror", ""),
        (answering(b"v=DKIM1; k=ed448; p=AAAA"), "permerror", "k="),
    ],
)
def test_dns_and_key_failures_never_raise(
    signer: Signer, dnsfunc: Callable[[bytes, int], bytes | None], result: str, words: str
) -> None:
    signed = signer.sign(message("test_dns_and_key_failures_never_raise"))
    [res] = verify(signed, dnsfunc=dnsfunc)
    assert (res.domain, res.selector, res.passed) == (DOMAIN, SELECTOR, False)
    assert res.result == result, res.reason
    assert words in res.reason


def test_wrong_key_fails(tmp_path: Path, signer: Signer) -> None:
    other = keygen(DOMAIN, SELECTOR, tmp_path / "other.pem", bits=1024)
    signed = signer.sign(message("test_wrong_key_fails"))
    [res] = verify(signed, dnsfunc=FakeDns({KEY_NAME: b"".join(txt_strings(other))}))
    assert not res.passed and res.result == "fail"


def test_small_published_key_is_refused() -> None:
    # signed by dkimpy directly: Signer refuses to load a key this small
    raw = message("test_small_published_key_is_refused")
    signed = dkimpy.sign(raw, SELECTOR.encode(), DOMAIN.encode(), SMALL_KEY) + raw
    [res] = verify(signed, dnsfunc=FakeDns({KEY_NAME: txt_value_of(SMALL_KEY)}))
    assert not res.passed and res.result == "permerror" and "too small" in res.reason


def test_two_signatures_two_results(signer: Signer, fake_dns: FakeDns) -> None:
    partner = Signer("partner.example", "s1", signer.private_key)  # no key published
    signed = partner.sign(signer.sign(message("test_two_signatures_two_results")))
    results = verify(signed, dnsfunc=fake_dns)
    assert [(r.domain, r.selector, r.passed) for r in results] == [
        ("partner.example", "s1", False),
        (DOMAIN, SELECTOR, True),
    ]
    assert "no DKIM key in DNS at s1._domainkey.partner.example." in results[0].reason
    assert passing_domains(results) == {DOMAIN}


def test_same_key_looked_up_once_and_signatures_limited(signer: Signer, fake_dns: FakeDns) -> None:
    signed = message("test_same_key_looked_up_once_and_signatures_limited")
    for _ in range(3):
        signed = signer.sign(signed)
    assert [r.passed for r in verify(signed, dnsfunc=fake_dns)] == [True, True, True]
    assert len(fake_dns.lookups) == 1
    limited = verify(signed, dnsfunc=fake_dns, max_signatures=2)
    assert [r.result for r in limited] == ["pass", "pass", "policy"]
    assert limited[2].domain == DOMAIN


@pytest.mark.parametrize(
    ("field", "words"),
    [
        (b"DKIM-Signature: garbage\r\n", "malformed signature: bad tag 'garbage'"),
        (b"DKIM-Signature: v=1; a=rsa-sha256; d=example.com; s=cg2024\r\n", "missing b="),
        (
            b"DKIM-Signature: v=1; a=rsa-md5; d=example.com; s=cg2024; h=from; bh=AAAA; b=AAAA\r\n",
            "unknown signature algorithm: rsa-md5",
        ),
        (b"DKIM-Signature: v=1; v=1; d=example.com\r\n", "duplicate tag v="),
        (
            b"DKIM-Signature: v=1; a=rsa-sha256; d=example.com; s=cg2024; h=from;"
            b" i=@elsewhere.example; bh=AAAA; b=AAAA\r\n",
            "i= domain is not a subdomain of d=",
        ),
        (
            b"DKIM-Signature: v=1; a=rsa-sha256; d=example.com; s=cg2024; h=from;"
            b" x=1000000000; bh=AAAA; b=AAAA\r\n",
            "x= value is past",
        ),
        (b"DKIM-Signature: \r\n", "missing v="),
    ],
)
def test_malformed_signature_is_a_permerror(field: bytes, words: str, fake_dns: FakeDns) -> None:
    raw = field + message("test_malformed_signature_is_a_permerror")
    [res] = verify(raw, dnsfunc=fake_dns)
    assert not res.passed
    assert res.result == "permerror"
    assert words in res.reason, res.reason
    assert fake_dns.lookups == []  # refused before any DNS lookup


def test_reasons_and_tags_are_one_printable_line(signer: Signer) -> None:
    """Reasons and d=/s= come from the message and may be stamped into a
    header or a log line: no CR, LF or control characters, bounded length."""
    field = (
        b"DKIM-Signature: v=1; a=rsa-\r\n md5\rX-Injected: yes; d=ex\x01ample.com\x1b[31m;"
        b" s=" + b"s" * 400 + b"; h=from; bh=AAAA; b=AAAA\r\n"
    )
    raw = field + message("test_reasons_and_tags_are_one_printable_line")
    key_dump = b"v=DKIM1; k=rsa; p=MIIB" + b"A" * 2000 + b"\r\nX-Injected: yes"
    results = verify(raw, dnsfunc=answering(key_dump))
    signed = signer.sign(message("test_reasons_and_tags_are_one_printable_line"))
    results += verify(signed, dnsfunc=answering(key_dump))
    for res in results:
        for text in (res.reason, res.domain, res.selector):
            assert text.isprintable() and len(text) <= 300, text
    assert "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA" not in results[1].reason
    assert results[1].reason.startswith("permerror: unusable key at cg2024._domainkey")


def test_unparseable_header_still_reports_each_signature(signer: Signer, fake_dns: FakeDns) -> None:
    signed = signer.sign(message("test_unparseable_header_still_reports_each_signature"))
    broken = signed.replace(b"X-Mailer: casegate tests\r\n", b"this line has no colon\r\n")
    [res] = verify(broken, dnsfunc=fake_dns)
    assert (res.domain, res.selector, res.passed) == (DOMAIN, SELECTOR, False)
    assert res.result == "permerror" and "unparseable" in res.reason


def test_leading_continuation_line(fake_dns: FakeDns) -> None:
    raw = b" continuation first\r\nDKIM-Signature: v=1; d=example.com; s=x\r\n\r\nbody\r\n"
    [res] = verify(raw, dnsfunc=fake_dns)
    assert (res.domain, res.selector, res.result) == (DOMAIN, "x", "permerror")


def test_mutated_messages_never_raise(signer: Signer, fake_dns: FakeDns) -> None:
    """Random byte edits of a signed message: verify never raises, sign
    raises nothing but ValueError."""
    import random

    signed = signer.sign(message("test_mutated_messages_never_raise"))
    rnd = random.Random(20240101)
    alphabet = b" \t\r\n;=:abx\x00\xff-./+AZ09"
    for _ in range(150):
        mutated = bytearray(signed)
        for _ in range(rnd.randint(1, 6)):
            pos, char = rnd.randrange(len(mutated)), alphabet[rnd.randrange(len(alphabet))]
            op = rnd.random()
            if op < 0.4:
                mutated[pos] = char
            elif op < 0.7:
                mutated.insert(pos, char)
            else:
                del mutated[pos]
        results = verify(bytes(mutated), dnsfunc=fake_dns)
        assert all(isinstance(r, DkimResult) for r in results)
        try:
            signer.sign(bytes(mutated))
        except ValueError:
            pass


def test_default_dnsfunc_is_dkimpys(
    signer: Signer, key: tuple[Path, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    asked: list[tuple[bytes, int]] = []

    def get_txt(name: bytes, timeout: int = 5) -> bytes | None:
        asked.append((name, timeout))
        return b"".join(txt_strings(key[1]))

    monkeypatch.setattr(dkimpy, "get_txt", get_txt)
    signed = signer.sign(message("test_default_dnsfunc_is_dkimpys"))
    assert verify(signed, timeout=2)[0].passed
    assert asked == [(KEY_NAME, 2)]


# --------------------------------------------------------------------------
# alignment
# --------------------------------------------------------------------------

PASS = DkimResult("Example.COM", "s", True, "pass")
SUB = DkimResult("mail.example.net", "s", True, "pass")
FAILED = DkimResult("customer.example", "s", False, "fail: body hash mismatch")


@pytest.mark.parametrize(
    ("from_address", "expected"),
    [
        ("alice@example.com", "example.com"),
        ("Alice Staff <alice@EXAMPLE.com>", "example.com"),
        ('"Staff, Alice" <alice@example.com.>', "example.com"),
        ("=?utf-8?q?J=C3=BCrgen?= <j@example.com>", "example.com"),
        ("alice@staff.example.com", None),  # subdomain of a passing domain
        ("x@example.net", None),  # parent of a passing domain
        ("x@mail.example.net", "mail.example.net"),
        ("x@customer.example", None),  # its signature failed
        ("alice@example.com, eve@evil.example", None),  # no single author
        ("", None),
        ("not an address", None),
        ("alice@", None),
    ],
)
def test_aligned_pass_is_strict(from_address: str, expected: str | None) -> None:
    assert aligned_pass([FAILED, PASS, SUB], from_address) == expected


def test_aligned_pass_idn() -> None:
    results = [DkimResult("xn--bcher-kva.example", "s", True, "pass")]
    assert aligned_pass(results, "kunde@bücher.example") == "xn--bcher-kva.example"
    assert aligned_pass([], "alice@example.com") is None


def test_passing_domains_lower_case() -> None:
    assert passing_domains([PASS, SUB, FAILED, DkimResult("", "", True, "pass")]) == {
        "example.com",
        "mail.example.net",
    }


# --------------------------------------------------------------------------
# UTF-8, line endings
# --------------------------------------------------------------------------


def utf8_message(subject: str, cte: str, policy: email.policy.EmailPolicy) -> bytes:
    msg = EmailMessage(policy=policy)
    msg["From"] = "Jürgen Müller <juergen@example.com>"
    msg["To"] = "Zoë <zoe@customer.example>"
    msg["Subject"] = f"{subject} Grüße – 你好, ваш заказ"
    msg["Date"] = "Mon, 01 Jan 2024 10:00:00 +0000"
    msg["Message-ID"] = "<utf8.1@example.com>"
    msg.set_content("Grüße aus Köln — 你好!\nZeile zwei: naïve café.\n" * 20, cte=cte)
    return msg.as_bytes()


@pytest.mark.parametrize(
    ("cte", "policy"),
    [
        ("quoted-printable", email.policy.SMTP),
        ("base64", email.policy.SMTP),
        ("8bit", email.policy.SMTP),
        ("8bit", email.policy.SMTPUTF8),  # raw UTF-8 in the headers too
    ],
)
def test_utf8_signs_and_verifies(
    signer: Signer, fake_dns: FakeDns, cte: str, policy: email.policy.EmailPolicy
) -> None:
    raw = utf8_message("test_utf8_signs_and_verifies", cte, policy)
    if policy is email.policy.SMTP:
        assert b"=?utf-8?" in raw  # RFC 2047 encoded words
    signed = signer.sign(raw)
    assert signed.endswith(raw)
    assert verify(signed, dnsfunc=fake_dns)[0].passed
    tampered = signed.replace(b"Content-Transfer-Encoding: ", b"Content-Transfer-Encoding:  x")
    assert not verify(tampered, dnsfunc=fake_dns)[0].passed


def test_crlf_preserved(signer: Signer, fake_dns: FakeDns) -> None:
    raw = message("test_crlf_preserved")
    field, rest = split_signature(signer.sign(raw))
    assert rest == raw
    assert field.endswith(b"\r\n")
    assert b"\n" not in field.replace(b"\r\n", b"")  # no bare LF in the new field
    assert b"\r" not in field.replace(b"\r\n", b"")


def test_lf_message_gets_lf_signature(signer: Signer, fake_dns: FakeDns) -> None:
    raw = message("test_lf_message_gets_lf_signature").replace(b"\r\n", b"\n")
    signed = signer.sign(raw)
    assert b"\r" not in signed and signed.endswith(raw)
    assert verify(signed, dnsfunc=fake_dns)[0].passed
    # and the same message converted to CRLF in transit still verifies
    assert verify(signed.replace(b"\n", b"\r\n"), dnsfunc=fake_dns)[0].passed


def test_sign_without_from_is_refused(signer: Signer) -> None:
    raw = message("test_sign_without_from_is_refused").replace(
        b"From: Alice Staff <alice@example.com>\r\n", b""
    )
    with pytest.raises(ValueError, match="without a From"):
        signer.sign(raw)


@pytest.mark.parametrize(
    "raw",
    [
        b"From: a@example.com\r\nno colon here\r\n\r\nbody\r\n",
        b" continuation first\r\nFrom: a@example.com\r\n\r\nbody\r\n",
    ],
)
def test_sign_malformed_header_is_a_value_error(signer: Signer, raw: bytes) -> None:
    with pytest.raises(ValueError, match="cannot DKIM-sign"):
        signer.sign(raw)


# --------------------------------------------------------------------------
# keys
# --------------------------------------------------------------------------


def test_keygen_record_and_file(key: tuple[Path, str]) -> None:
    path, record = key
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    pem = path.read_bytes()
    assert pem.startswith(b"-----BEGIN RSA PRIVATE KEY-----\n")
    assert pem.endswith(b"-----END RSA PRIVATE KEY-----\n")
    assert record.startswith('cg2024._domainkey.example.com. IN TXT ( "v=DKIM1; k=rsa; "')
    strings = txt_strings(record)
    assert all(len(s) <= 255 for s in strings)
    value = b"".join(strings)
    assert value.startswith(b"v=DKIM1; k=rsa; p=MII")
    assert (
        dkimpy.crypto.parse_public_key(base64.b64decode(value.split(b"p=")[1]))[
            "modulus"
        ].bit_length()
        == 2048
    )
    assert dkim.public_key_record(path, domain=DOMAIN, selector=SELECTOR) == record


def test_keygen_refuses_to_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "existing.pem"
    path.write_bytes(b"precious")
    with pytest.raises(FileExistsError, match="refusing to overwrite"):
        keygen(DOMAIN, SELECTOR, path, bits=1024)
    assert path.read_bytes() == b"precious"
    link = tmp_path / "dangling.pem"
    link.symlink_to(tmp_path / "nowhere")
    with pytest.raises(FileExistsError):
        keygen(DOMAIN, SELECTOR, link, bits=1024)
    assert not (tmp_path / "nowhere").exists()


def test_keygen_writes_0600_whatever_the_umask(tmp_path: Path) -> None:
    import os

    old = os.umask(0)
    try:
        keygen(DOMAIN, SELECTOR, tmp_path / "k.pem", bits=1024)
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "k.pem").stat().st_mode) == 0o600


@pytest.mark.parametrize(
    ("domain", "selector", "bits", "words"),
    [
        ("example.com", "cg2024", 512, "key size"),
        ("example.com", "cg2024", 2047, "key size"),
        ("example.com", "bad selector", 1024, "selector"),
        ("example.com", "s;1", 1024, "selector"),
        ("example.com.", "s1", 1024, "domain"),
        ("exämple.com", "s1", 1024, "xn--"),
        ("", "s1", 1024, "domain"),
    ],
)
def test_keygen_bad_arguments(
    tmp_path: Path, domain: str, selector: str, bits: int, words: str
) -> None:
    with pytest.raises(ValueError, match=words):
        keygen(domain, selector, tmp_path / "k.pem", bits=bits)
    assert not (tmp_path / "k.pem").exists()


def test_keygen_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        keygen(DOMAIN, SELECTOR, tmp_path / "no" / "such" / "dir.pem", bits=1024)


@pytest.mark.skipif(OPENSSL is None, reason="no openssl binary to cross-check with")
def test_openssl_agrees_with_keygen(key: tuple[Path, str]) -> None:
    path, record = key
    assert OPENSSL is not None
    check = subprocess.run(
        [OPENSSL, "rsa", "-check", "-noout", "-in", str(path)], capture_output=True, text=True
    )
    assert check.returncode == 0 and "RSA key ok" in check.stdout, check.stderr
    der = subprocess.run(
        [OPENSSL, "rsa", "-in", str(path), "-pubout", "-outform", "DER"],
        capture_output=True,
        check=True,
    ).stdout
    assert b"".join(txt_strings(record)).split(b"p=")[1] == base64.b64encode(der)


@pytest.mark.skipif(OPENSSL is None, reason="no openssl binary to make foreign keys with")
def test_openssl_keys_load_or_are_refused(tmp_path: Path, fake_dns: FakeDns) -> None:
    assert OPENSSL is not None
    pkcs8 = tmp_path / "pkcs8.pem"
    subprocess.run(
        [
            OPENSSL,
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:1024",
            "-out",
            str(pkcs8),
        ],
        capture_output=True,
        check=True,
    )
    assert pkcs8.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    foreign = Signer.load("partner.example", "s1", pkcs8)
    record = dkim.public_key_record(pkcs8, domain="partner.example", selector="s1")
    dnsfunc = FakeDns({b"s1._domainkey.partner.example.": b"".join(txt_strings(record))})
    assert verify(foreign.sign(message("test_openssl_keys_load")), dnsfunc=dnsfunc)[0].passed
    for algorithm in ("EC", "ED25519"):
        other = tmp_path / f"{algorithm}.pem"
        args = [OPENSSL, "genpkey", "-algorithm", algorithm, "-out", str(other)]
        if algorithm == "EC":
            args[4:4] = ["-pkeyopt", "ec_paramgen_curve:P-256"]
        subprocess.run(args, capture_output=True, check=True)
        with pytest.raises(ValueError, match="not an RSA private key"):
            Signer.load(DOMAIN, SELECTOR, other)


def test_load_errors_are_clear(tmp_path: Path, key: tuple[Path, str]) -> None:
    with pytest.raises(ValueError, match=r"does not exist .*casegate dkim keygen"):
        Signer.load(DOMAIN, SELECTOR, tmp_path / "missing.pem")
    with pytest.raises(ValueError, match="cannot be read"):
        Signer.load(DOMAIN, SELECTOR, tmp_path)  # a directory
    cases = {
        "not a PEM file": b"just some text\n",
        "is encrypted": b"-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIB\n"
        b"-----END ENCRYPTED PRIVATE KEY-----\n",
        "not an RSA private key": b"-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIA==\n"
        b"-----END EC PRIVATE KEY-----\n",
    }
    good = key[0].read_bytes()
    lines = good.split(b"\n")
    lines[10] = lines[10][:20] + (b"A" if lines[10][20:21] != b"A" else b"B") + lines[10][21:]
    cases["damaged"] = b"\n".join(lines)
    cases["512-bit RSA key; receivers reject keys under 1024 bits"] = SMALL_KEY
    for words, pem in cases.items():
        path = tmp_path / "k.pem"
        path.write_bytes(pem)
        with pytest.raises(ValueError, match=words) as raised:
            Signer.load(DOMAIN, SELECTOR, path)
        assert str(raised.value).startswith(f"DKIM key {path} "), raised.value
        with pytest.raises(ValueError, match=words):
            dkim.public_key_record(path, domain=DOMAIN, selector=SELECTOR)
        with pytest.raises(ValueError, match=f"the private key .*{words}"):
            Signer(DOMAIN, SELECTOR, pem)
    with pytest.raises(ValueError, match="selector"):
        Signer.load(DOMAIN, "no good", key[0])


def test_keygen_key_is_sound(key: tuple[Path, str]) -> None:
    """The file holds a 2048-bit RSA key with e=65537 that passes OpenSSL's
    checks (through cryptography), written as PKCS#1 exactly as cryptography
    writes it, and the record publishes its public half."""
    pem = key[0].read_bytes()
    private = load_pem_private_key(pem, password=None)
    assert isinstance(private, rsa.RSAPrivateKey)
    assert private.key_size == 2048
    assert private.public_key().public_numbers().e == 65537
    pkcs1 = private.private_bytes(Encoding.PEM, PrivateFormat.TraditionalOpenSSL, NoEncryption())
    assert pkcs1 == pem
    assert b"".join(txt_strings(key[1])) == txt_value_of(private)


@pytest.mark.parametrize("bits", [1024, 4096])
def test_keygen_sizes(tmp_path: Path, bits: int) -> None:
    path = tmp_path / "k.pem"
    record = keygen(DOMAIN, SELECTOR, path, bits=bits)
    private = load_pem_private_key(path.read_bytes(), password=None)
    assert isinstance(private, rsa.RSAPrivateKey) and private.key_size == bits
    strings = txt_strings(record)
    assert strings[0] == b"v=DKIM1; k=rsa; " and all(len(s) <= 255 for s in strings)
    assert all(len(s) == 255 for s in strings[1:-1])
    assert b"".join(strings) == txt_value_of(private)


def test_keygen_new_key_each_time(tmp_path: Path) -> None:
    one = keygen(DOMAIN, SELECTOR, tmp_path / "one.pem", bits=1024)
    two = keygen(DOMAIN, SELECTOR, tmp_path / "two.pem", bits=1024)
    assert one != two


def test_keygen_writes_nothing_when_the_self_test_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dkim, "RSASSA_PKCS1_v1_5_verify", lambda *args: False)
    with pytest.raises(RuntimeError, match="self-test"):
        keygen(DOMAIN, SELECTOR, tmp_path / "k.pem", bits=1024)
    assert not (tmp_path / "k.pem").exists()


def test_pkcs8_and_pkcs1_are_the_same_key(tmp_path: Path) -> None:
    """Without openssl: a PKCS#8 file loads, is kept as given, signs through
    dkimpy, and gives the same record as the same key in PKCS#1."""
    private = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    pkcs8 = private.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    pkcs1 = private.private_bytes(Encoding.PEM, PrivateFormat.TraditionalOpenSSL, NoEncryption())
    assert pkcs8.startswith(b"-----BEGIN PRIVATE KEY-----")
    (tmp_path / "8.pem").write_bytes(pkcs8)
    (tmp_path / "1.pem").write_bytes(pkcs1)
    signer8 = Signer.load(DOMAIN, SELECTOR, tmp_path / "8.pem")
    assert signer8.private_key == pkcs8
    record = dkim.public_key_record(tmp_path / "8.pem", domain=DOMAIN, selector=SELECTOR)
    assert record == dkim.public_key_record(tmp_path / "1.pem", domain=DOMAIN, selector=SELECTOR)
    assert b"".join(txt_strings(record)) == txt_value_of(private)
    signed = signer8.sign(message("test_pkcs8_and_pkcs1_are_the_same_key"))
    assert verify(signed, dnsfunc=FakeDns({KEY_NAME: b"".join(txt_strings(record))}))[0].passed


def test_crlf_key_file_loads(tmp_path: Path, key: tuple[Path, str], fake_dns: FakeDns) -> None:
    path = tmp_path / "crlf.pem"
    path.write_bytes(key[0].read_bytes().replace(b"\n", b"\r\n"))
    signed = Signer.load(DOMAIN, SELECTOR, path).sign(message("test_crlf_key_file_loads"))
    assert verify(signed, dnsfunc=fake_dns)[0].passed


def test_signer_repr_hides_the_key(signer: Signer) -> None:
    assert "PRIVATE" not in repr(signer) and "MII" not in repr(signer)
    assert repr(signer) == "Signer(domain='example.com', selector='cg2024')"


# --------------------------------------------------------------------------
# real-world mail
# --------------------------------------------------------------------------


def test_real_signed_message_without_its_key() -> None:
    raw = (DATA / "automatic" / "lhost-amazonses-09.eml").read_bytes()
    [res] = verify(raw, dnsfunc=answering(None))
    assert (res.domain, res.selector) == ("amazonses.com", "gdwg2y3kokkkj5a55z2ilkup5wp5hhxx")
    assert not res.passed and res.result == "permerror"
    assert "no DKIM key in DNS at gdwg2y3kokkkj5a55z2ilkup5wp5hhxx._domainkey.amazonses.com." in (
        res.reason
    )
    [res] = verify(raw, dnsfunc=raising(TimeoutError("no network here")))
    assert res.result == "temperror" and "no network here" in res.reason


def header_section(raw: bytes) -> bytes:
    return re.split(rb"\r?\n\r?\n", raw, maxsplit=1)[0]


@pytest.mark.skipif(not CORPUS.is_dir(), reason="no ../shared/corpus beside the checkout")
def test_corpus_never_raises() -> None:
    files = sorted(p for p in CORPUS.rglob("*") if p.is_file() and p.suffix in {".eml", ""})
    assert len(files) > 300
    signatures = 0
    for path in files:
        raw = path.read_bytes()
        results = verify(raw, dnsfunc=answering(None))
        expected = len(re.findall(rb"(?im)^dkim-signature[ \t]*:", header_section(raw)))
        assert len(results) == expected, path
        assert not any(r.passed for r in results), path
        signatures += len(results)
    assert signatures > 20
    # two DKIM-Signature fields, but the second belongs to the bounced
    # message in the body: one result
    raw = (CORPUS / "automatic" / "lhost-gmail-15.eml").read_bytes()
    assert raw.count(b"\nDKIM-Signature:") == 2
    [google] = verify(raw, dnsfunc=answering(None))
    assert (google.domain, google.selector, google.result) == (
        "googlemail.com",
        "20120113",
        "permerror",
    )


# --------------------------------------------------------------------------
# replays of signed mail (issue 8): what the signature covers is not what
# casegate reads
# --------------------------------------------------------------------------


def sign_once(signer: Signer, raw: bytes, *extra: bytes) -> bytes:
    """``raw`` signed by dkimpy over each header once, not oversigned: what
    other signers do (our Signer oversigns, test_adding_a_single_header_*)."""
    include = [b"From", b"To", b"Subject", b"Date", b"Message-ID", *extra]
    field = dkimpy.sign(raw, SELECTOR.encode(), DOMAIN.encode(), signer.private_key,
                        include_headers=include, linesep=b"\r\n")
    return field + raw


def sign_with_length(signer: Signer, raw: bytes) -> bytes:
    """``raw`` signed by dkimpy with an ``l=`` body length tag (our Signer never
    writes one; other signers do)."""
    include = [b"From", b"To", b"Subject", b"Date", b"Message-ID"]
    field = dkimpy.sign(raw, SELECTOR.encode(), DOMAIN.encode(), signer.private_key,
                        include_headers=include, length=True, linesep=b"\r\n")
    return field + raw


REPLAYS = [
    # (case, how the signed message is changed, duplicated, unsigned_tail)
    ("untouched", lambda m: m, (), False),
    ("a Subject: prepended", lambda m: b"Subject: [CS0000001] hijacked\r\n" + m, ("Subject",), False),
    ("a To: and an In-Reply-To: prepended",
     lambda m: b"To: victim@customer.example\r\nIn-Reply-To: <x@y>\r\n" + m, ("To",), False),
    ("an unsigned header added", lambda m: b"X-Whatever: 1\r\n" + m, (), False),
]


@pytest.mark.parametrize(("case", "change", "duplicated", "tail"), REPLAYS, ids=[r[0] for r in REPLAYS])
def test_replayed_signed_mail_does_not_pass(signer: Signer, fake_dns: FakeDns, case: str,
                                            change: Callable[[bytes], bytes],
                                            duplicated: tuple[str, ...], tail: bool) -> None:
    signed = sign_once(signer, message(f"test_replayed_signed_mail_does_not_pass {case}"))
    (result,) = verify(change(signed), dnsfunc=fake_dns)
    assert result.verified  # the cryptography still holds ...
    assert (result.duplicated, result.unsigned_tail) == (duplicated, tail)
    proves = not duplicated and not tail
    assert result.passed is proves  # ... but it proves nothing about what is read
    assert result.result == ("pass" if proves else "policy"), result.reason
    expected = DOMAIN if proves else None
    assert aligned_pass([result], "alice@example.com") == expected
    assert aligned_pass([(result.domain, result.passed, result.reason)], DOMAIN) == expected


def test_a_prepended_in_reply_to_is_caught_when_signed(signer: Signer, fake_dns: FakeDns) -> None:
    """A signer that signs In-Reply-To once: a second one on top is an
    unsigned extra. (When the signed mail had none, an added one is not that
    signature's business: REPLAYS, "a To: and an In-Reply-To: prepended";
    ours oversigns, below.)"""
    raw = message("test_in_reply_to", extra="In-Reply-To: <a@b>\r\n")
    signed = sign_once(signer, raw, b"In-Reply-To")
    (result,) = verify(b"In-Reply-To: <evil@x>\r\n" + signed, dnsfunc=fake_dns)
    assert result.duplicated == ("In-Reply-To",) and not result.passed


ADDED = {
    "From": b"From: Mallory <mallory@example.com>",
    "To": b"To: victim@customer.example",
    "Cc": b"Cc: victim@customer.example",
    "Subject": b"Subject: Re: [Case #CS0000001] hijacked",
    "Date": b"Date: Tue, 02 Jan 2024 10:00:00 +0000",
    "Message-ID": b"Message-ID: <replay@evil.example>",
    "In-Reply-To": b"In-Reply-To: <cs0000001.1.sig@example.com>",
    "References": b"References: <cs0000001.1.sig@example.com>",
    "Reply-To": b"Reply-To: mallory@evil.example",
    "Auto-Submitted": b"Auto-Submitted: no",
}


def test_the_oversigned_headers_are_the_single_instance_ones() -> None:
    assert {n.lower() for n in ADDED} == dkim.OVERSIGNED


@pytest.mark.parametrize("where", ["on top", "at the bottom"])
@pytest.mark.parametrize("name", list(ADDED))
def test_adding_a_single_header_breaks_our_signature(signer: Signer, fake_dns: FakeDns,
                                                     name: str, where: str) -> None:
    """Issue 8: a replay of our own signed mail with an In-Reply-To:,
    References:, Subject:, To: … added (absent or present when signed) must
    not verify: our Signer signs each of them once more than it occurs."""
    for extra in ("", "Cc: someone@customer.example\r\nIn-Reply-To: <a@b>\r\n"
                      "References: <a@b>\r\nReply-To: support@example.com\r\n"
                      "Auto-Submitted: auto-replied\r\n"):
        signed = signer.sign(message(f"test_adding_{name}", extra=extra))
        assert verify(signed, dnsfunc=fake_dns)[0].passed
        header, sep, body = signed.partition(b"\r\n\r\n")
        added = ADDED[name] + b"\r\n"
        if where == "on top":
            changed = added + signed
        else:
            changed = header + b"\r\n" + added[:-2] + sep + body
        (result,) = verify(changed, dnsfunc=fake_dns)
        assert not result.verified and result.result == "fail", (name, extra, result.reason)
        assert aligned_pass([result], "alice@example.com") is None


@pytest.mark.parametrize(
    ("case", "appended", "tail"),
    [
        ("body as signed", b"", False),
        ("text appended past l=", b"Click here: http://evil.example/\r\n", True),
    ],
)
def test_body_length_tag(signer: Signer, fake_dns: FakeDns, case: str, appended: bytes, tail: bool) -> None:
    signed = sign_with_length(signer, message(f"test_body_length_tag {case}"))
    assert b"l=" in split_signature(signed)[0]
    (result,) = verify(signed + appended, dnsfunc=fake_dns)
    assert result.verified and result.unsigned_tail is tail
    assert result.passed is not tail
    assert aligned_pass([result], "Alice <alice@example.com>") == (None if tail else DOMAIN)
    if tail:
        assert result.result == "policy" and "l=" in result.reason


def test_aligned_pass_takes_delivery_tuples_and_domains() -> None:
    """What the engine holds: Delivery.dkim's (domain, passed, reason) tuples."""
    tuples = [("customer.example", False, "fail"), ("example.com", True, "pass")]
    assert aligned_pass(tuples, "example.com") == "example.com"
    assert aligned_pass(tuples, "EXAMPLE.com") == "example.com"
    assert aligned_pass(tuples, "alice@example.com") == "example.com"
    assert aligned_pass(tuples, "customer.example") is None
    assert aligned_pass(tuples, "staff.example.com") is None
    assert aligned_pass(tuples, "") is None
