"""Fixtures for tests that run a real Postfix (register them in conftest.py,
e.g. ``from tests.support.fixtures import *``; the system tests import the
ones they use, so they work either way).

* :func:`postfix_available` — None when a private Postfix can run here, else
  the reason (for ``pytest.mark.skipif`` / ``pytest.skip``).
* ``postfix_root`` — a fresh folder Postfix can use (short, traversable by
  user postfix, under /tmp; pytest's tmp_path is neither), removed afterwards.
  Set ``CASEGATE_KEEP_POSTFIX=1`` to keep it for reading the maillog.
* ``make_sink`` — factory: ``make_sink()`` → a started :class:`Sink`,
  stopped at teardown; ``sink`` — one started Sink.
* ``make_nullfilter`` — factory: ``make_nullfilter(reinject_port, port=...)``
  → a started :class:`NullFilter`, stopped at teardown.
* ``make_postfix`` — factory: ``make_postfix(sink_port=..., **keywords)`` → a
  started :class:`PostfixInstance` (in a folder of its own unless ``root`` is
  given), stopped at teardown; skips the test when Postfix cannot run here.
  A failing test shows the tail of each instance's maillog.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.nullfilter import NullFilter
from tests.support.postfix import PostfixInstance, postfix_missing, sasl_missing
from tests.support.sink import Sink

__all__ = [
    "make_nullfilter",
    "make_postfix",
    "make_sink",
    "postfix_available",
    "postfix_root",
    "sasl_available",
    "sink",
]


def postfix_available() -> str | None:
    """None when a private Postfix can run here, else why not."""
    return postfix_missing()


def sasl_available() -> str | None:
    """None when Cyrus SASL (sasldb) and openssl are there, else why not."""
    return postfix_missing() or sasl_missing()


def _new_root() -> Path:
    root = Path(tempfile.mkdtemp(prefix="casegate-pf-"))
    root.chmod(0o755)
    return root


def _remove(root: Path) -> None:
    if os.environ.get("CASEGATE_KEEP_POSTFIX"):
        print(f"kept Postfix instance folder {root}")
        return
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def postfix_root() -> Iterator[Path]:
    root = _new_root()
    try:
        yield root
    finally:
        _remove(root)


@pytest.fixture
def make_sink() -> Iterator[Callable[..., Sink]]:
    started: list[Sink] = []

    def make(host: str = "127.0.0.1", port: int = 0) -> Sink:
        sink = Sink(host, port).start()
        started.append(sink)
        return sink

    try:
        yield make
    finally:
        for sink in reversed(started):
            sink.stop()


@pytest.fixture
def sink(make_sink: Callable[..., Sink]) -> Sink:
    return make_sink()


@pytest.fixture
def make_nullfilter() -> Iterator[Callable[..., NullFilter]]:
    started: list[NullFilter] = []

    def make(reinject_port: int, **keywords: Any) -> NullFilter:
        nf = NullFilter(reinject_port, **keywords).start()
        started.append(nf)
        return nf

    try:
        yield make
    finally:
        for nf in reversed(started):
            nf.stop()


@pytest.fixture
def make_postfix() -> Iterator[Callable[..., PostfixInstance]]:
    reason = postfix_missing()
    if reason:
        pytest.skip(reason)
    started: list[tuple[PostfixInstance, Path | None]] = []

    def make(**keywords: Any) -> PostfixInstance:
        own = None if "root" in keywords else _new_root()
        if own is not None:
            keywords["root"] = own
        pf = PostfixInstance(**keywords)
        started.append((pf, own))
        return pf.start()

    try:
        yield make
    finally:
        for pf, own in reversed(started):
            # pytest shows a test's captured output only when it fails.
            print(f"--- {pf.maillog_path} (tail) ---\n{pf.maillog_tail(60)}")
            try:
                pf.stop()
            finally:
                if own is not None:
                    _remove(own)
