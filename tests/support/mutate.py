"""A seeded mutator of real mail for the fuzz test and ``bench/fuzz.py``.

Seeds are the ``.eml`` files of ``tests/data`` and, when it is there, of the
shared corpus beside the checkout (``../shared/corpus``), plus the reply
bodies of email_reply_parser as plain messages. Each mutation is a small
named function of (random generator, bytes); ``mutated`` applies one to
three of them. The same seed gives the same inputs, so a failure reproduces
from its seed and index.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Iterator
from pathlib import Path

from tests.support import poison

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data"
CORPUS = ROOT.parent / "shared" / "corpus"


def seeds() -> list[tuple[str, bytes]]:
    """(name, bytes) of every seed message, in a stable order."""
    found: list[tuple[str, bytes]] = []
    for folder in (DATA, CORPUS):
        if folder.is_dir():
            for path in sorted(folder.rglob("*.eml")):
                found.append((str(path.relative_to(folder.parent)), path.read_bytes()))
    erp = CORPUS / "replies" / "email_reply_parser"
    if erp.is_dir():
        for path in sorted(erp.glob("*.txt")):
            head = b"From: Ana <ana@customer.test>\r\nSubject: Re: erp\r\nContent-Type: text/plain\r\n\r\n"
            found.append((str(path.relative_to(CORPUS.parent)), head + path.read_bytes()))
    if not found:
        found.append(("minimal", b"From: a@b.test\r\nSubject: x\r\n\r\nhello\r\n"))
    return found


def _head_end(data: bytes) -> int:
    m = re.search(rb"\r?\n\r?\n", data)
    return m.start() if m else len(data)


def _header_lines(data: bytes) -> list[bytes]:
    return data[: _head_end(data)].splitlines(keepends=True)


def truncate(rng: random.Random, data: bytes) -> bytes:
    return data[: rng.randrange(len(data) + 1)]


def flip_bytes(rng: random.Random, data: bytes) -> bytes:
    if not data:
        return data
    out = bytearray(data)
    for _ in range(rng.randint(1, 50)):
        out[rng.randrange(len(out))] = rng.randrange(256)
    return bytes(out)


#: Inputs are cut to this size: what a Postfix with a generous
#: message_size_limit lets through (the issue's largest message was 30 MB).
MAX_INPUT = 32_000_000


def duplicate_header(rng: random.Random, data: bytes) -> bytes:
    lines = _header_lines(data)
    if not lines:
        return data
    line = rng.choice(lines)
    count = min(rng.choice((2, 10, 200, 5000)), 1 + MAX_INPUT // (4 * len(line)))
    return line * count + data


def huge_header(rng: random.Random, data: bytes) -> bytes:
    name = rng.choice((b"Subject", b"From", b"To", b"References", b"Content-Type", b"X-Big", b"Received"))
    size = rng.choice((10_000, 100_000, 1_000_000))
    word = rng.choice((b"word ", b"a@b.test, ", b"<id@x> ", b"(", b"=?utf-8?q?=C3=A9?= ", b"x"))
    value = (word * (size // len(word) + 1))[:size]
    if rng.random() < 0.5:  # folded
        value = value.replace(b" ", b"\r\n ", 1000)
    return name + b": " + value + b"\r\n" + data


def nested_comments(rng: random.Random, data: bytes) -> bytes:
    name = rng.choice((b"From", b"Content-Type", b"Content-Disposition", b"To", b"Date"))
    n = rng.choice((20, 500, 5000))
    closed = b")" * n if rng.random() < 0.7 else b""
    return name + b": " + b"(" * n + closed + b" ana@customer.test\r\n" + data


def many_parts(rng: random.Random, data: bytes) -> bytes:
    return poison.many_attachments(rng.choice((50, 900, 2000, 10_000)))


def deep_nesting(rng: random.Random, data: bytes) -> bytes:
    depth = rng.choice((10, 40, 300, 1000))
    return poison.nested_multipart(depth) if rng.random() < 0.5 else poison.nested_messages(depth)


def wrap_in_parts(rng: random.Random, data: bytes) -> bytes:
    """The message attached to itself, several times (message/rfc822 parts)."""
    parts = b"".join(b"--W\r\nContent-Type: message/rfc822\r\n\r\n" + data + b"\r\n"
                     for _ in range(rng.randint(1, 5)))
    return (b"From: ana@customer.test\r\nSubject: fw\r\nMIME-Version: 1.0\r\n"
            b"Content-Type: multipart/mixed; boundary=W\r\n\r\n" + parts + b"--W--\r\n")


_CHARSETS = (b"utf-7", b"x-unknown", b"utf-16", b"", b'"', b"iso-2022-jp", b"\xff\xfe", b"cp1252'en'",
             b"utf-8\x00", b"unicode-1-1-utf-7", b"idna", b"rot13", b"base64", b"zlib")


def bad_charset(rng: random.Random, data: bytes) -> bytes:
    new = rng.choice(_CHARSETS)
    out = re.sub(rb"(?i)charset=\"?[^\";\s]*\"?", b"charset=" + new, data)
    if out == data:
        out = b"Content-Type: text/plain; charset=" + new + b"\r\n" + data
    return out


def bad_encoding(rng: random.Random, data: bytes) -> bytes:
    cte = rng.choice((b"base64", b"quoted-printable", b"x-uuencode", b"8bit", b"binary", b"bogus"))
    out = re.sub(rb"(?i)content-transfer-encoding:[^\r\n]*", b"Content-Transfer-Encoding: " + cte, data)
    return out if out != data else b"Content-Transfer-Encoding: " + cte + b"\r\n" + data


def control_bytes(rng: random.Random, data: bytes) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randint(1, 30)):
        out.insert(rng.randrange(len(out) + 1), rng.choice((0, 13, 10, 0x0B, 0x0C, 0x7F)))
    return bytes(out)


def line_endings(rng: random.Random, data: bytes) -> bytes:
    choice = rng.randrange(3)
    if choice == 0:
        return data.replace(b"\r\n", b"\r")  # bare CR only
    if choice == 1:
        return data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n\r")  # mixed
    return data.replace(b"\n", b"\r\n")  # CRCRLF where there was CRLF


def eight_bit_headers(rng: random.Random, data: bytes) -> bytes:
    end = _head_end(data)
    head = bytearray(data[:end])
    for _ in range(rng.randint(1, 40)):
        head.insert(rng.randrange(len(head) + 1), rng.randrange(0x80, 0x100))
    return bytes(head) + data[end:]


def encoded_words(rng: random.Random, data: bytes) -> bytes:
    word = rng.choice((b"=?utf-8?B?!!!?=", b"=?x?Q?=ZZ?=", b"=?utf-8?q?" + b"=C3" * 1000 + b"?=",
                       b"=?utf-8*en?b?" + b"QUFB" * 2000 + b"?=", b"=??=", b"=?utf-8?b?" + b"=" * 500 + b"?="))
    return b"Subject: " + word * rng.randint(1, 50) + b"\r\nFrom: " + word + b" <a@b.test>\r\n" + data


def html_bomb(rng: random.Random, data: bytes) -> bytes:
    tag = rng.choice((b"<div>", b"<blockquote>", b"<table><tr><td>", b"<p>", b"<li>", b"<!--", b"<![CDATA["))
    body = tag * rng.choice((1000, 50_000, 300_000))
    return (b"From: ana@customer.test\r\nSubject: html\r\nContent-Type: text/html\r\n\r\n" + body)


def splice(rng: random.Random, data: bytes, other: bytes = b"") -> bytes:
    cut = rng.randrange(len(data) + 1)
    return data[:cut] + other[rng.randrange(len(other) + 1):]


MUTATIONS: dict[str, Callable[[random.Random, bytes], bytes]] = {
    f.__name__: f
    for f in (truncate, flip_bytes, duplicate_header, huge_header, nested_comments, many_parts, deep_nesting,
              wrap_in_parts, bad_charset, bad_encoding, control_bytes, line_endings, eight_bit_headers,
              encoded_words, html_bomb)
}


#: Mutations that build megabytes: the others make inputs about the seed's size.
HEAVY = frozenset({"many_parts", "html_bomb", "huge_header", "deep_nesting"})


def mutated(seed: int, count: int, pool: list[tuple[str, bytes]] | None = None, *,
            heavy: bool | str = True, originals: bool = True) -> Iterator[tuple[str, bytes]]:
    """``count`` inputs: (description, bytes). With ``originals`` every seed
    message comes once unchanged first; then one to three mutations of a
    random seed (or of two spliced). With ``heavy=True`` one step in 30 is
    one of ``HEAVY``, ``heavy=False`` leaves them out, ``heavy="only"``
    makes each input one of them."""
    pool = pool if pool is not None else seeds()
    rng = random.Random(seed)
    light = [n for n in MUTATIONS if n not in HEAVY]
    first = len(pool) if originals else 0
    for index in range(count):
        if index < first:
            yield pool[index]
            continue
        if heavy == "only":
            step = rng.choice(sorted(HEAVY))
            name, data = rng.choice(pool)
            yield f"{name} + {step} (seed {seed}, input {index})", MUTATIONS[step](rng, data)
            continue
        name, data = rng.choice(pool)
        steps = []
        for _ in range(rng.randint(1, 3)):
            if rng.random() < 0.1:
                other_name, other = rng.choice(pool)
                data = splice(rng, data, other)
                steps.append(f"splice({other_name})")
                continue
            # Heavy mutations cost a hundred times more: one step in 30.
            step = rng.choice(sorted(HEAVY) if heavy and rng.random() < 1 / 30 else light)
            data = MUTATIONS[step](rng, data)[:MAX_INPUT]
            steps.append(step)
        yield f"{name} + {' + '.join(steps)} (seed {seed}, input {index})", data
