"""Fuzzing what the engine does with any bytes: parse, then automatic-mail
detection, the reply's text, the stored text, the files. Seeded mutations of
real mail (``tests/support/mutate.py``): truncation, byte flips, duplicated
and 1 MB headers, thousands of MIME parts, deep nesting, bad charsets and
transfer encodings, NUL and bare CR/LF, 8-bit headers, nested comments.

Nothing may raise, every message is handled within a generous CPU bound
(``bench/fuzz.py`` measures the worst case precisely), and what reaches the
store and the templates is within the limits of ``rules.limits``. A failure
names the seed message, the mutations and the index: it reproduces.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from rules import automatic, limits, loop
from rules.inbound import parse
from rules.quotes import body_text, extract_reply
from tests.support.mutate import mutated, seeds

SECRET = b"f" * 32
MAX_CPU_SECONDS = 5.0  # per message; the worst seen in bench/fuzz.py is about 1.5 s


def handle(data: bytes) -> None:
    """What the engine does with a delivery's bytes, in its order."""
    inbound = parse(data)
    msg = inbound.msg
    verdict = loop.detect(msg, "", secret=SECRET, prefix="CS")
    loop.hops_of(msg, SECRET)
    automatic.suppresses_autoreply(msg)
    automatic.never_autoreply_to(inbound.from_address)
    reply = extract_reply(msg)
    text = body_text(msg)
    for part in msg.walk():  # the engine's _dsn_status, over the bounded structure
        part.get_content_type()
    files = inbound.attachments
    assert inbound.from_address == inbound.from_address.strip().lower()
    assert inbound.subject.isprintable() or not inbound.subject
    assert len(reply) <= limits.MAX_TEXT_CHARS and len(text) <= limits.MAX_TEXT_CHARS + 100
    assert not (inbound.opaque and files)
    assert verdict is None or verdict.reason.isprintable()


def run(inputs: Iterator[tuple[str, bytes]]) -> int:
    count = 0
    for description, data in inputs:
        start = time.process_time()
        try:
            handle(data)
        except Exception as exc:  # name the input that failed
            raise AssertionError(f"{description}: {type(exc).__name__}: {exc}") from exc
        spent = time.process_time() - start
        assert spent < MAX_CPU_SECONDS, f"{description}: {spent:.1f} s of CPU"
        count += 1
    return count


@pytest.fixture(scope="module")
def pool() -> list[tuple[str, bytes]]:
    return seeds()


def test_seed_messages_as_they_are(pool: list[tuple[str, bytes]]) -> None:
    assert run(iter(pool)) == len(pool)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_light_mutations(pool: list[tuple[str, bytes]], seed: int) -> None:
    """Mutations that keep about the seed's size: 300 inputs a seed."""
    assert run(mutated(seed, 300, pool, heavy=False, originals=False)) == 300


@pytest.mark.parametrize("seed", [1, 2])
def test_heavy_mutations(pool: list[tuple[str, bytes]], seed: int) -> None:
    """1 MB headers, thousands of parts, deep nesting, HTML of bare tags."""
    assert run(mutated(seed, 12, pool, heavy="only", originals=False)) == 12
