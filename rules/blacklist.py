"""The sender blacklist: an address or a whole domain, optionally with a subject pattern.

Pure and stdlib only. The milter asks :meth:`Blacklist.match_sender` at MAIL FROM
(entries without a subject pattern) and :meth:`Blacklist.match` at the end of the
headers (entries with a subject pattern); the content filter may ask the same
questions after the queue and discard with a log line.

Matching rules (one place, so the CLI's help and the tests can quote them):

* Patterns are ``user@domain`` or ``@domain``, compared case-insensitively.
  Domains are compared in their ASCII (IDNA) form, so ``@bücher.example``
  matches ``xn--bcher-kva.example``.
* ``@example.com`` matches that domain **exactly**: ``a@example.com`` yes,
  ``a@mail.example.com`` no. Block a subdomain with its own entry.
* Plus-tags are ignored on the sender's side: ``john@d`` matches ``john@d``,
  ``john+x@d`` and ``JOHN+anything@D``. A pattern that itself has a tag
  (``john+x@d``) matches only that tagged address.
* A subject pattern is a Python regular expression, searched (not anchored)
  case-insensitively in the decoded subject (:func:`decode_subject`: unfolded,
  RFC 2047 decoded, runs of white space made one space). An empty subject
  pattern means "no subject pattern".
* :meth:`Blacklist.verdict` is the one question both the milter and the
  filter ask: given the sender addresses (envelope and From:) and the raw
  Subject: value(s), which entry applies, if any.

Addresses typed by an admin (supervised mailboxes, CSRs, departments,
blacklist patterns) are checked by one function, :func:`normalize_address`.
The milter skips (and logs) a stored row it refuses, it never refuses to start.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from email.header import decode_header, make_header
from email.headerregistry import HeaderRegistry

__all__ = [
    "Blacklist",
    "Entry",
    "canonical_address",
    "decode_subject",
    "normalize_address",
    "normalize_domain",
    "normalize_pattern",
    "strip_tag",
]

_MAX_LOCAL = 64
_MAX_DOMAIN = 253
# Subjects are searched up to this many characters: a bound on the work an
# admin's regular expression can be made to do by a stranger's subject line.
MAX_SUBJECT_CHARS = 998

_FORBIDDEN_LOCAL = re.compile(r"[\s<>,;]")
_DOMAIN_CHARS = re.compile(r"[^\s@<>,;:\[\]()\\\"]+")


@dataclass(frozen=True)
class Entry:
    pattern: str
    subject: str | None = None
    reason: str = ""


def normalize_domain(domain: str) -> str:
    """A domain in lower-case ASCII (IDNA) form; ``ValueError`` when it is not one."""
    d = domain.strip().lower()
    if d.endswith("."):  # the root label: "example.com." is "example.com"
        d = d[:-1]
    if not d:
        raise ValueError("empty domain")
    if not _DOMAIN_CHARS.fullmatch(d):
        raise ValueError(f"invalid characters in domain {domain!r}")
    if d.startswith(".") or ".." in d:
        raise ValueError(f"empty label in domain {domain!r}")
    if not d.isascii():
        try:
            d = d.encode("idna").decode("ascii")
        except UnicodeError as exc:
            raise ValueError(
                f"domain {domain!r} is not a valid internationalized name: {exc}"
            ) from None
    if len(d) > _MAX_DOMAIN:
        raise ValueError(f"domain {domain!r} is longer than {_MAX_DOMAIN} characters")
    if any(len(label) > 63 for label in d.split(".")):
        raise ValueError(f"domain {domain!r} has a label longer than 63 characters")
    return d


def strip_tag(local: str) -> str:
    """``john+tag`` -> ``john`` (a leading ``+`` is not a tag)."""
    plus = local.find("+", 1)
    return local if plus < 0 else local[:plus]


def _unbracket(address: str) -> str:
    a = address.strip()
    if a.startswith("<") and a.endswith(">"):
        a = a[1:-1].strip()
    # RFC 5321 source route: <@relay1,@relay2:user@domain>
    if a.startswith("@") and ":" in a:
        a = a.split(":", 1)[1]
    return a


def canonical_address(address: str) -> tuple[str, str] | None:
    """``(local, domain)`` in matching form, or None for a null or unparsable address.

    Accepts the forms found in envelopes: ``<John@Example.COM>``, bare
    ``john@example.com``, source routes. The local part is lower-cased (the
    blacklist is about who writes, not about case-sensitive mailboxes).
    """
    a = _unbracket(address)
    local, at, domain = a.rpartition("@")
    if not at or not local or not domain:
        return None
    try:
        d = normalize_domain(domain)
    except ValueError:
        return None
    return local.lower(), d


def normalize_address(value: str, *, allow_domain: bool = False, what: str = "address") -> str:
    """An address typed by an admin in canonical form: ``user@domain`` (or
    ``@domain`` when ``allow_domain``), local part and domain lower-case, the
    domain in ASCII (IDNA) form, surrounding ``<>`` and white space removed.

    The one validator for every address the CLI stores (supervised mailbox,
    CSR, department, blacklist pattern), and the one the milter applies to
    rows it reads back: what this refuses, the milter skips. Refused: no
    ``@``, an empty local part (unless ``allow_domain``), a domain without a
    dot (``help@example``: no mail for it comes from the internet, and
    Postfix would qualify it with ``$mydomain``), bad characters, over-long
    parts. Raises ``ValueError`` with a message meant for the admin, starting
    with ``what`` and the value.
    """
    shape = "user@domain or @domain" if allow_domain else "user@domain"
    s = value.strip()
    if not s:
        raise ValueError(f"empty {what}: use {shape}")
    if s.startswith("<") and s.endswith(">"):
        s = s[1:-1].strip()
    local, at, domain = s.rpartition("@")
    if not at:
        raise ValueError(f"{what} {value!r} has no '@': use {shape}")
    if not domain:
        raise ValueError(f"{what} {value!r} has no domain: use {shape}")
    try:
        d = normalize_domain(domain)
    except ValueError as exc:
        raise ValueError(f"{what} {value!r}: {exc}") from None
    if "." not in d:
        raise ValueError(f"{what} {value!r}: domain {d!r} has no dot")
    if not local:
        if allow_domain:
            return "@" + d
        raise ValueError(f"{what} {value!r} has no local part: use {shape}")
    quoted = local.startswith('"') and local.endswith('"') and len(local) > 1
    if "@" in local and not quoted:
        raise ValueError(f"{what} {value!r} has more than one '@'")
    if len(local) > _MAX_LOCAL:
        raise ValueError(f"{what} {value!r}: local part longer than {_MAX_LOCAL}")
    if not quoted and _FORBIDDEN_LOCAL.search(local):
        raise ValueError(f"{what} {value!r}: spaces, <, >, ',' or ';' in the local part")
    return f"{local.lower()}@{d}"


def normalize_pattern(p: str) -> str:
    """A blacklist pattern in canonical form: ``user@domain`` or ``@domain``, lower-case.

    :func:`normalize_address` with ``allow_domain=True``; raises ``ValueError``
    with a message meant for the admin who typed it.
    """
    return normalize_address(p, allow_domain=True, what="blacklist pattern")


_HEADERS = HeaderRegistry()
_FOLD = re.compile(r"\r?\n(?=[ \t])")


def decode_subject(raw: str) -> str:
    """A Subject: value as the blacklist matches it: unfolded, RFC 2047 encoded
    words decoded, runs of white space made one space, stripped. Never raises.

    Idempotent on decoded text that has no ``=?`` in it, so a caller that only
    has the decoded subject gets the same answer as one with the raw bytes.
    """
    text = _FOLD.sub("", raw)
    if "=?" in text:
        try:
            text = str(_HEADERS("Subject", text))
        except Exception:  # the registry records defects; be safe anyway
            pass
        if "=?" in text:
            try:
                text = str(make_header(decode_header(text)))
            except Exception:
                pass
    return " ".join(text.split())


def compile_subject(subject: str) -> re.Pattern[str]:
    """The compiled subject pattern; ``ValueError`` naming the regex error."""
    try:
        return re.compile(subject, re.IGNORECASE)
    except re.error as exc:
        raise ValueError(f"invalid subject pattern {subject!r}: {exc}") from None


@dataclass(frozen=True)
class _Compiled:
    entry: Entry
    subject: re.Pattern[str] | None


class Blacklist:
    """Entries indexed by address and by domain: each lookup is a few dict probes.

    With ``strict=True`` (the default) an invalid entry raises ``ValueError``.
    With ``strict=False`` it is left out and listed in :attr:`skipped` with the
    reason, so that one bad row in the store never disables the whole list.
    """

    def __init__(self, entries: Iterable[Entry] = (), *, strict: bool = True) -> None:
        self._by_address: dict[str, list[_Compiled]] = {}
        self._by_domain: dict[str, list[_Compiled]] = {}
        skipped: list[tuple[Entry, str]] = []
        count = 0
        for entry in entries:
            try:
                key = normalize_pattern(entry.pattern)
                regex = compile_subject(entry.subject) if entry.subject else None
            except ValueError as exc:
                if strict:
                    raise
                skipped.append((entry, str(exc)))
                continue
            compiled = _Compiled(entry, regex)
            if key.startswith("@"):
                self._by_domain.setdefault(key[1:], []).append(compiled)
            else:
                self._by_address.setdefault(key, []).append(compiled)
            count += 1
        self._count = count
        self._subject_entries = any(
            c.subject is not None
            for table in (self._by_address, self._by_domain)
            for entries in table.values()
            for c in entries
        )
        self.skipped: tuple[tuple[Entry, str], ...] = tuple(skipped)

    def __len__(self) -> int:
        return self._count

    @property
    def has_subject_entries(self) -> bool:
        """Whether any entry has a subject pattern (else :meth:`match` never matches)."""
        return self._subject_entries

    def _candidates(self, address: str) -> list[_Compiled]:
        parts = canonical_address(address)
        if parts is None:
            return []
        local, domain = parts
        found: list[_Compiled] = []
        exact = f"{local}@{domain}"
        found.extend(self._by_address.get(exact, ()))
        untagged = strip_tag(local)
        if untagged != local:
            found.extend(self._by_address.get(f"{untagged}@{domain}", ()))
        found.extend(self._by_domain.get(domain, ()))
        return found

    def match_sender(self, address: str) -> Entry | None:
        """The first entry without a subject pattern that matches ``address``."""
        for c in self._candidates(address):
            if c.subject is None:
                return c.entry
        return None

    def match(self, address: str, subject: str) -> Entry | None:
        """The first entry with a subject pattern that matches both (``subject`` decoded)."""
        text = subject[:MAX_SUBJECT_CHARS]
        for c in self._candidates(address):
            if c.subject is not None and c.subject.search(text):
                return c.entry
        return None

    def verdict(
        self, sender_addresses: Iterable[str], raw_subject: str | Iterable[str] = ()
    ) -> Entry | None:
        """The entry that blacklists this message, or None: the one verdict of
        the milter (end of headers) and the filter (after the queue).

        ``sender_addresses`` are the envelope sender and the From: addresses
        (any form :func:`canonical_address` accepts; empty ones are ignored).
        ``raw_subject`` is the Subject: value as received (or several, if the
        message has several), decoded here with :func:`decode_subject`; a
        message without a subject is matched as an empty subject. Entries
        without a subject pattern win over those with one; among equals, the
        first address in ``sender_addresses`` decides.
        """
        addresses = list(dict.fromkeys(a for a in sender_addresses if a))
        for address in addresses:
            entry = self.match_sender(address)
            if entry is not None:
                return entry
        if not self._subject_entries or not addresses:
            return None
        raws = [raw_subject] if isinstance(raw_subject, str) else list(raw_subject)
        subjects = list(dict.fromkeys(decode_subject(r) for r in raws)) or [""]
        for address in addresses:
            for subject in subjects:
                entry = self.match(address, subject)
                if entry is not None:
                    return entry
        return None
