"""DKIM for casegate: verify inbound signatures, sign outgoing mail, make keys.

Verification (``verify``) checks every ``DKIM-Signature`` of a message with
dkimpy and returns one ``DkimResult`` per signature, in header order (the
topmost first). It never raises: a malformed signature, a missing or broken
key, a DNS error or timeout all give ``passed=False`` with a reason. The
reason starts with the RFC 8601 result keyword, so the engine can record it
as it is or build an ``Authentication-Results`` field from it:

- ``pass``
- ``fail: ...``       the signature or the body hash does not match
- ``policy: ...``     the signature verifies but proves nothing about what
                      casegate reads: the message has a second instance of
                      a signed header (a prepended Subject: or To: is read
                      by casegate, the signed one below it is what DKIM
                      covers), or ``l=`` leaves an unsigned tail of body
                      (``DkimResult.duplicated``, ``DkimResult.unsigned_tail``);
                      also for signatures past ``max_signatures``
- ``temperror: ...``  the DNS lookup of the key failed (try again later)
- ``permerror: ...``  malformed signature, no key, revoked or unusable key

The key is looked up through ``dnsfunc(name, timeout)`` -- dkimpy's
interface: ``name`` is ``b"selector._domainkey.example.com."`` (bytes, with
the trailing dot) and the answer is the TXT record's strings joined into one
``bytes`` value (``b"v=DKIM1; k=rsa; p=MIIB..."``), or ``None``/``b""`` when
there is no record. Tests inject a fake; ``None`` means real DNS through
dkimpy's default resolver (dnspython, a dependency of dkimpy).

Alignment (``aligned_pass``, the one function the engine asks) is strict:
only a passing signature whose ``d=`` *equals* the From: domain counts. A signature by a parent domain
(``d=example.com`` for ``From: x@staff.example.com``) or a subdomain does
not: the result decides whether a message comes from the staff domain, and
relaxed alignment would need the Public Suffix List to be safe and would let
any host able to sign for a sibling subdomain speak for staff.

Signing (``Signer``) uses rsa-sha256 and relaxed/relaxed canonicalization
over a fixed list of headers; each header a message may carry only once
(``OVERSIGNED``: From, To, Cc, Subject, Date, Message-ID, In-Reply-To,
References, Reply-To, Auto-Submitted) is signed once more than it occurs,
absent ones too, so that adding one later (a second From:, an In-Reply-To:
or Subject: that binds a replay of our mail to another case) breaks the
signature. The new
``DKIM-Signature:`` field is prepended and the message is otherwise returned
byte for byte, with its own line endings.

Keys (``keygen``, ``public_key_record``) are plain RSA keys. They are made
and read with the ``cryptography`` package (OpenSSL underneath), not by
hand: prime generation and key encoding are security-critical code that a
well-kept library does better. New keys are written in PKCS#1 PEM
(``-----BEGIN RSA PRIVATE KEY-----``); existing keys may also be PKCS#8.
A key is fully checked when it is read (OpenSSL's consistency and primality
checks), and every new key signs once with dkimpy's RSA code and verifies
against the public key it is about to publish, before it is written.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from email.utils import getaddresses
from pathlib import Path
from typing import Any

import dkim
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
    load_pem_private_key,
)
from dkim.canonicalization import CanonicalizationPolicy
from dkim.crypto import (
    RSASSA_PKCS1_v1_5_sign,
    RSASSA_PKCS1_v1_5_verify,
    parse_pem_private_key,
    parse_public_key,
)
from dkim.util import DuplicateTag, InvalidTagSpec, InvalidTagValueList, parse_tag_value

__all__ = [
    "OVERSIGNED",
    "SIGNED_HEADERS",
    "SINGLE_HEADERS",
    "AnyResult",
    "DkimResult",
    "DnsFunc",
    "Signer",
    "aligned_pass",
    "keygen",
    "passing_domains",
    "public_key_record",
    "verify",
]

#: dkimpy's ``dnsfunc(name, timeout)``: the TXT record at ``name`` (bytes,
#: absolute, e.g. ``b"s1._domainkey.example.com."``) as one bytes value with
#: the record's strings joined, or None (or b"") when there is none. It may
#: raise on a DNS failure; ``verify`` turns that into ``temperror``.
DnsFunc = Callable[[bytes, int], bytes | None]

#: Headers we sign, in this order, each as often as it occurs; those in
#: ``OVERSIGNED`` once more than they occur (RFC 6376 8.15: an instance added
#: later, above or instead of a missing one, then breaks the signature).
SIGNED_HEADERS: tuple[str, ...] = (
    "From",
    "To",
    "Cc",
    "Subject",
    "Date",
    "Message-ID",
    "In-Reply-To",
    "References",
    "Reply-To",
    "MIME-Version",
    "Content-Type",
    "Content-Transfer-Encoding",
    "Auto-Submitted",
)
#: The headers RFC 5322 allows once (and Auto-Submitted:, which decides
#: whether a reply is automatic): signed once more than they occur, absent
#: ones once.
OVERSIGNED: frozenset[str] = frozenset({
    "from", "to", "cc", "subject", "date", "message-id", "in-reply-to", "references",
    "reply-to", "auto-submitted",
})

#: At most this many signatures are checked per message (RFC 6376 6.1 lets
#: a verifier limit them); each costs a DNS lookup. The rest get ``policy``.
MAX_SIGNATURES = 10

_MIN_BITS = 1024  # RFC 8301: verifiers reject shorter keys (dkimpy too)
_KEY_SIZES = (1024, 2048, 3072, 4096)
_E = 65537

_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_NAME_RE = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")


# --------------------------------------------------------------------------
# Verification
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class DkimResult:
    """One DKIM-Signature of a message and what became of it.

    ``passed`` means the signature verifies *and* proves what casegate reads:
    a signature that verifies but leaves room for a replay (``duplicated``,
    ``unsigned_tail``) has ``passed=False`` and a ``policy`` reason."""

    domain: str  # d= as signed ("" when the signature has none)
    selector: str  # s= as signed
    passed: bool
    reason: str  # "pass", or "<RFC 8601 result>: <why>"
    #: Signed header fields (of ``SINGLE_HEADERS``) with more instances in the
    #: message than the signature covers: casegate reads the topmost, DKIM
    #: covers the bottom ones (a Subject: prepended to signed mail).
    duplicated: tuple[str, ...] = ()
    #: ``l=`` signs only the start of the body: text can be appended.
    unsigned_tail: bool = False

    @property
    def result(self) -> str:
        """The RFC 8601 keyword: pass, fail, temperror, permerror, policy."""
        return self.reason.split(":", 1)[0]

    @property
    def verified(self) -> bool:
        """The signature verifies cryptographically (whether or not it proves
        anything: see ``duplicated`` and ``unsigned_tail``)."""
        return self.passed or bool(self.duplicated) or self.unsigned_tail


class _KeyLookup:
    """Wraps a DnsFunc for dkimpy: remembers the last answer for the reason,
    answers each name once per message, and turns any exception into the
    one dkimpy handles (DnsTimeoutError) so it cannot escape."""

    def __init__(self, dnsfunc: DnsFunc) -> None:
        self._dnsfunc = dnsfunc
        self._answers: dict[bytes, bytes | BaseException | None] = {}
        self.name: bytes | None = None

    def __call__(self, name: bytes, timeout: int = 5) -> bytes | None:
        self.name = name
        if name not in self._answers:
            try:
                answer = self._dnsfunc(name, timeout)
            except Exception as exc:  # any DNS failure is a temperror
                self._answers[name] = exc
            else:
                if isinstance(answer, str):
                    answer = answer.encode("utf-8", "replace")
                self._answers[name] = answer
        known = self._answers[name]
        if isinstance(known, BaseException):
            raise dkim.DnsTimeoutError(_describe(known))
        return known

    def reason(self) -> str | None:
        """Why the last key lookup gave no usable key, when it is about DNS."""
        if self.name is None:
            return None
        name = self.name.decode("ascii", "replace")
        answer = self._answers[self.name]
        if isinstance(answer, BaseException):
            return f"temperror: DNS lookup of {name} failed: {_describe(answer)}"
        if not answer:
            return f"permerror: no DKIM key in DNS at {name}"
        try:
            tags = parse_tag_value(answer)
        except InvalidTagValueList:
            return None  # dkimpy's own message says more
        if tags.get(b"p", b"x").strip() == b"":
            return f"permerror: DKIM key at {name} is revoked (empty p=)"
        return None


class _ErrorLog(logging.Handler):
    """Collects the messages dkimpy logs when it turns an error into False."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _text(value: bytes | None) -> str:
    return (value or b"").decode("utf-8", "replace").strip()


def _tags(value: bytes) -> dict[bytes, bytes]:
    """The tags of a DKIM-Signature value, best effort (folding removed)."""
    try:
        tags: dict[bytes, bytes] = parse_tag_value(re.sub(rb"\r?\n[ \t]", b" ", value))
    except InvalidTagValueList:
        return {}
    return tags


def _scan_signatures(raw: bytes) -> list[bytes]:
    """DKIM-Signature values from a header section dkimpy cannot parse:
    lines that are neither a field nor a continuation are skipped."""
    head = re.split(rb"\r?\n\r?\n", raw, maxsplit=1)[0]
    fields: list[list[bytes]] = []
    current: list[bytes] | None = None
    for line in re.split(rb"\r?\n", head):
        if line[:1] in (b" ", b"\t"):
            if current is not None:
                current.append(line)
            continue
        name, colon, rest = line.partition(b":")
        current = [rest] if colon and name.strip().lower() == b"dkim-signature" else None
        if current is not None:
            fields.append(current)
    return [b" ".join(parts) for parts in fields]


def verify(
    raw: bytes,
    *,
    dnsfunc: DnsFunc | None = None,
    timeout: int = 5,
    max_signatures: int = MAX_SIGNATURES,
) -> list[DkimResult]:
    """Check every DKIM-Signature of ``raw``; one result per signature, the
    topmost first; ``[]`` for an unsigned message. Never raises."""
    lookup = _KeyLookup(dnsfunc if dnsfunc is not None else _default_dnsfunc)
    errors = _ErrorLog()
    logger = logging.Logger("casegate.dkim.verify", logging.ERROR)  # private, not registered
    logger.addHandler(errors)
    try:
        checker = dkim.DKIM(raw, logger=logger, timeout=timeout)
    except Exception as exc:  # a header section dkimpy cannot parse
        why = f"permerror: message header unparseable: {_describe(exc)}"
        return [_result(_tags(value), False, why) for value in _scan_signatures(raw)]
    values = [value for name, value in checker.headers if name.lower() == b"dkim-signature"]
    results: list[DkimResult] = []
    for index, value in enumerate(values):
        tags = _tags(value)
        if index >= max_signatures:
            why = f"policy: not checked, only the first {max_signatures} signatures are"
            results.append(_result(tags, False, why))
            continue
        lookup.name = None
        errors.messages.clear()
        passed, why = _check(checker, index, lookup, errors)
        if not passed:
            results.append(_result(tags, False, why))
            continue
        duplicated, tail, hazard = _replay_hazards(checker, tags)
        results.append(_result(tags, not hazard, hazard or why, duplicated, tail))
    return results


#: Header fields RFC 5322 allows once and casegate reads (or a mail client
#: shows): a second instance of one that is signed makes the signature
#: prove nothing about the instance casegate reads.
SINGLE_HEADERS: tuple[str, ...] = (
    "From",
    "Sender",
    "Reply-To",
    "To",
    "Cc",
    "Subject",
    "Date",
    "Message-ID",
    "In-Reply-To",
    "References",
)


def _replay_hazards(checker: Any, tags: dict[bytes, bytes]) -> tuple[tuple[str, ...], bool, str]:
    """(signed single headers that occur more than once, whether l= leaves
    body unsigned, a ``policy`` reason or "") for a verifying signature."""
    signed: dict[str, int] = {}
    for name in tags.get(b"h", b"").decode("ascii", "replace").split(":"):
        signed[name.strip().lower()] = signed.get(name.strip().lower(), 0) + 1
    counts: dict[str, int] = {}
    for name, _ in checker.headers:
        key = name.decode("ascii", "replace").strip().lower()
        counts[key] = counts.get(key, 0) + 1
    # Signed, and more instances than the signature covers (h= names a field
    # once per instance it signs, from the bottom up): the topmost, which is
    # what casegate reads, is not signed.
    duplicated = tuple(
        n for n in SINGLE_HEADERS
        if signed.get(n.lower(), 0) and counts.get(n.lower(), 0) > 1
        and counts.get(n.lower(), 0) > signed[n.lower()]
    )
    tail = False
    signed_length = tags.get(b"l")
    if signed_length is not None:
        try:
            policy = CanonicalizationPolicy.from_c_value(tags.get(b"c", b"simple/simple"))
            body_length = len(policy.canonicalize_body(checker.body))
            tail = body_length > int(signed_length)
        except Exception:  # an l= or c= that verified yet cannot be read again
            tail = True
    why = []
    if duplicated:
        why.append("the message has an unsigned extra " + ", ".join(f"{n}:" for n in duplicated)
                   + " (the one read is not the one signed)")
    if tail:
        why.append(f"l={_text(signed_length)} leaves the end of the body unsigned")
    return duplicated, tail, ("policy: signature verifies, but " + " and ".join(why)) if why else ""


def _default_dnsfunc(name: bytes, timeout: int) -> bytes | None:
    answer: bytes | None = dkim.get_txt(name, timeout=timeout)
    return answer


def _check(checker: Any, index: int, lookup: _KeyLookup, errors: _ErrorLog) -> tuple[bool, str]:
    try:
        ok = checker.verify(idx=index, dnsfunc=lookup)
    except dkim.ValidationError as exc:
        text = str(exc)
        if text.startswith("body hash mismatch"):
            return False, "fail: body hash mismatch (the body changed after signing)"
        return False, f"permerror: malformed signature: {text}"
    except dkim.MessageFormatError as exc:
        cause = exc.args[0] if exc.args else exc
        if isinstance(cause, DuplicateTag):
            return False, f"permerror: malformed signature: duplicate tag {_text(cause.args[0])}="
        if isinstance(cause, InvalidTagSpec):
            return False, f"permerror: malformed signature: bad tag {_text(cause.args[0])!r}"
        return False, f"permerror: malformed signature: {cause}"
    except dkim.KeyFormatError as exc:
        return False, f"permerror: unusable key: {exc}"
    except dkim.DKIMException as exc:
        return False, f"permerror: {exc}"
    except Exception as exc:  # dkimpy on input it does not expect
        return False, f"permerror: {_describe(exc)}"
    if ok:
        return True, "pass"
    why = lookup.reason()
    if why:
        return False, why
    if errors.messages:  # dkimpy logged a KeyFormatError and returned False
        where = f" at {_text(lookup.name)}" if lookup.name else ""
        return False, f"permerror: unusable key{where}: {errors.messages[-1]}"
    return False, "fail: signature does not verify (a signed header changed, or the wrong key)"


def _clean(text: str, limit: int) -> str:
    """One printable line of at most ``limit`` characters: reasons and tags
    carry text from the message, and may end up in a header or a log."""
    text = re.sub(r"""\bb(['"])([^'"\\]*)\1""", r"\2", text)  # dkimpy's b'...' reprs
    text = re.sub(r"[A-Za-z0-9+/]{40,}=*", lambda m: m[0][:16] + "...", text)  # key dumps
    text = " ".join("".join(c if c.isprintable() else " " for c in text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _result(tags: dict[bytes, bytes], passed: bool, reason: str,
            duplicated: tuple[str, ...] = (), unsigned_tail: bool = False) -> DkimResult:
    return DkimResult(
        _clean(_text(tags.get(b"d")), 255),
        _clean(_text(tags.get(b"s")), 255),
        passed,
        _clean(reason, 300),
        duplicated,
        unsigned_tail,
    )


#: A result as ``verify`` gives it, or as the engine's Delivery carries it:
#: ``(domain, passed, reason)``.
AnyResult = DkimResult | tuple[str, bool, str]


def _domain_passed(result: AnyResult) -> tuple[str, bool]:
    if isinstance(result, DkimResult):
        return result.domain, result.passed
    domain, passed, _ = result
    return domain, passed


def passing_domains(results: Iterable[AnyResult]) -> set[str]:
    """The signing domains (lower-case) of the signatures that passed."""
    found = set()
    for result in results:
        domain, passed = _domain_passed(result)
        if passed and domain:
            found.add(domain.lower())
    return found


def _ascii_domain(domain: str) -> str | None:
    name = domain.strip().rstrip(".").lower()
    if not name:
        return None
    try:
        return name.encode("idna").decode("ascii")
    except UnicodeError:
        return None


def aligned_pass(results: Iterable[AnyResult], from_address: str) -> str | None:
    """The passing signing domain that equals the From: address's domain
    (strict alignment: parents and subdomains do not count), else None.

    ``results`` are ``verify``'s, or the ``(domain, passed, reason)`` tuples
    of ``Delivery.dkim``; a signature that verifies but proves nothing
    (``policy``: a duplicated signed header, an unsigned ``l=`` tail) has not
    passed and never aligns. ``from_address`` is an address
    (``alice@example.com``), a whole From: value (``Alice
    <alice@example.com>``) or a bare domain (``example.com``); a From: with
    several addresses has no single author and gives None."""
    if from_address and "@" not in from_address and "<" not in from_address and "," not in from_address:
        wanted = _ascii_domain(from_address)
    else:
        addresses = [addr for _, addr in getaddresses([from_address[:2000]]) if addr]
        if len(addresses) != 1 or "@" not in addresses[0]:
            return None
        wanted = _ascii_domain(addresses[0].rpartition("@")[2])
    if wanted is None:
        return None
    for domain in passing_domains(results):
        if _ascii_domain(domain) == wanted:
            return domain
    return None


# --------------------------------------------------------------------------
# Signing
# --------------------------------------------------------------------------


def _check_name(what: str, value: str) -> None:
    if not _NAME_RE.fullmatch(value) or len(value) > 253:
        raise ValueError(
            f"DKIM {what} {value!r} is not a valid DNS name "
            "(ASCII letters, digits, hyphens and dots; an IDN as xn--)"
        )


@dataclass(frozen=True)
class Signer:
    """Signs outgoing mail for ``domain`` with the key published at
    ``selector._domainkey.domain``."""

    domain: str
    selector: str
    private_key: bytes = field(repr=False)  # PEM; never in a repr or a log line
    _key: rsa.RSAPrivateKey = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _check_name("domain", self.domain)
        _check_name("selector", self.selector)
        object.__setattr__(self, "_key", _rsa_key(self.private_key, "the private key"))

    @classmethod
    def load(cls, domain: str, selector: str, key_path: Path | str) -> Signer:
        """A Signer with the key in ``key_path``; ValueError saying what is
        wrong when the file is missing, unreadable, or not an RSA key."""
        path = Path(key_path)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise ValueError(
                f"DKIM key {path} does not exist (make one with `casegate dkim keygen`)"
            ) from None
        except OSError as exc:
            raise ValueError(f"DKIM key {path} cannot be read: {exc.strerror or exc}") from None
        try:
            return cls(domain, selector, data)
        except _KeyProblem as exc:  # checked once; say which file
            raise ValueError(f"DKIM key {path} {exc.problem}") from None

    def sign(self, raw: bytes) -> bytes:
        """``raw`` with a ``DKIM-Signature:`` field prepended. ValueError for
        a message that cannot be signed (no From:, malformed header)."""
        first_eol = raw.find(b"\n")
        linesep = b"\r\n" if first_eol > 0 and raw[first_eol - 1 : first_eol] == b"\r" else b"\n"
        try:
            signer = dkim.DKIM(raw, linesep=linesep, signature_algorithm=b"rsa-sha256")
            present = [name.decode("ascii").lower() for name, _ in signer.headers]
            if "from" not in present:
                raise ValueError("cannot DKIM-sign a message without a From: header")
            include: list[bytes] = []
            for name in SIGNED_HEADERS:
                count = present.count(name.lower()) + (name.lower() in OVERSIGNED)
                include += [name.encode("ascii")] * count
            header: bytes = signer.sign(
                self.selector.encode("ascii"),
                self.domain.encode("ascii"),
                _pkcs1_pem(self._key),  # what dkimpy reads best, whatever the file held
                canonicalize=(b"relaxed", b"relaxed"),
                include_headers=include,
            )
        except dkim.DKIMException as exc:
            raise ValueError(f"cannot DKIM-sign the message: {exc}") from None
        except (IndexError, TypeError) as exc:  # dkimpy on a header section it cannot parse
            raise ValueError(f"cannot DKIM-sign the message: {_describe(exc)}") from None
        return header + raw


# --------------------------------------------------------------------------
# Keys
# --------------------------------------------------------------------------


class _KeyProblem(ValueError):
    """A private key casegate cannot use: ``problem`` says why."""

    def __init__(self, what: str, problem: str) -> None:
        super().__init__(f"{what} {problem}")
        self.problem = problem


def _rsa_key(pem: bytes, what: str) -> rsa.RSAPrivateKey:
    """The RSA private key in ``pem`` (PKCS#1 or unencrypted PKCS#8), checked
    by OpenSSL and for size; _KeyProblem (a ValueError) naming ``what``."""
    if b"-----BEGIN" not in pem:
        raise _KeyProblem(what, "is not a PEM file (expected -----BEGIN RSA PRIVATE KEY-----)")
    if b"ENCRYPTED" in pem:
        raise _KeyProblem(what, "is encrypted; casegate needs it unencrypted (mode 0600)")
    try:
        key = load_pem_private_key(pem, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        if _parses_as_rsa(pem):
            raise _KeyProblem(what, "is a damaged RSA key (its numbers do not agree)") from None
        key = None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise _KeyProblem(
            what,
            "is not an RSA private key (PEM, PKCS#1 or PKCS#8; Ed25519 and EC keys are not supported)",
        )
    if key.key_size < _MIN_BITS:
        raise _KeyProblem(
            what,
            f"is a {key.key_size}-bit RSA key; receivers reject keys "
            f"under {_MIN_BITS} bits (RFC 8301), make a 2048-bit one",
        )
    return key


def _parses_as_rsa(pem: bytes) -> bool:
    """Whether ``pem`` is an RSA key at all, its numbers unchecked: only to
    tell a damaged key from something else in an error message."""
    try:
        key = load_pem_private_key(pem, password=None, unsafe_skip_rsa_key_validation=True)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        return False
    return isinstance(key, rsa.RSAPrivateKey)


def _pkcs1_pem(key: rsa.RSAPrivateKey) -> bytes:
    """The key as PKCS#1 PEM (LF line ends): what we write and dkimpy reads."""
    return key.private_bytes(Encoding.PEM, PrivateFormat.TraditionalOpenSSL, NoEncryption())


def _public_key_der(key: rsa.RSAPublicKey) -> bytes:
    """SubjectPublicKeyInfo, as ``openssl rsa -pubout`` writes and DKIM's p= holds."""
    return key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)


def _self_test(pem: bytes, public_der: bytes) -> None:
    """Sign with dkimpy's RSA code from the key file we are about to write and
    verify against the public key we are about to publish: the two agree and
    dkimpy can use them."""
    digest = hashlib.sha256(b"casegate dkim keygen self-test")
    signature = RSASSA_PKCS1_v1_5_sign(digest, parse_pem_private_key(pem))
    if not RSASSA_PKCS1_v1_5_verify(digest, bytes(signature), parse_public_key(public_der)):
        raise RuntimeError("the new DKIM key failed its self-test; nothing was written")


def _txt_value(public_der: bytes) -> list[str]:
    """The TXT record as DNS strings of at most 255 characters."""
    p_value = "p=" + base64.b64encode(public_der).decode("ascii")
    return ["v=DKIM1; k=rsa; ", *(p_value[i : i + 255] for i in range(0, len(p_value), 255))]


def _zone_record(domain: str, selector: str, strings: list[str]) -> str:
    name = f"{selector}._domainkey.{domain}.".lower()
    quoted = "\n\t".join(f'"{s}"' for s in strings)
    return f"{name} IN TXT ( {quoted} )"


def public_key_record(key_path: Path | str, *, domain: str, selector: str) -> str:
    """The DNS TXT record (zone-file syntax) publishing the public half of the
    RSA key in ``key_path`` at ``selector._domainkey.domain``. ValueError as
    ``Signer.load`` for a missing, unreadable or unusable key."""
    _check_name("domain", domain)
    _check_name("selector", selector)
    key = Signer.load(domain, selector, key_path)._key
    return _zone_record(domain, selector, _txt_value(_public_key_der(key.public_key())))


def keygen(domain: str, selector: str, key_path: Path | str, bits: int = 2048) -> str:
    """Write a new RSA private key to ``key_path`` (PEM, mode 0600) and return
    the DNS TXT record to publish. Refuses to overwrite an existing file
    (FileExistsError); ValueError for a bad domain, selector or size."""
    _check_name("domain", domain)
    _check_name("selector", selector)
    if bits not in _KEY_SIZES:
        raise ValueError(f"DKIM key size must be one of {_KEY_SIZES} bits, not {bits}")
    path = Path(key_path)
    if path.exists() or path.is_symlink():
        raise FileExistsError(f"{path} already exists; refusing to overwrite a DKIM key")
    if not path.parent.is_dir():
        raise FileNotFoundError(f"cannot write the DKIM key: no directory {path.parent}")
    key = rsa.generate_private_key(public_exponent=_E, key_size=bits)
    pem = _pkcs1_pem(key)
    public_der = _public_key_der(key.public_key())
    _self_test(pem, public_der)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise FileExistsError(f"{path} already exists; refusing to overwrite a DKIM key") from None
    try:
        os.fchmod(fd, 0o600)  # whatever the umask
        with os.fdopen(fd, "wb") as out:
            out.write(pem)
            out.flush()
            os.fsync(out.fileno())
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return _zone_record(domain, selector, _txt_value(public_der))
