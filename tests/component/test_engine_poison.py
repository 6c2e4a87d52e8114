"""Poison messages through the whole engine (issue 8): each shape that used to
raise or take minutes is stored raw, byte for byte, and answered 250, in
bounded time; casegate handles it as opaque or plain text."""

from __future__ import annotations

import time

import pytest

from casestore.models import Message
from casestore.store import Store
from rules import replies
from smtpd_hook.engine import Delivery, Engine
from smtpd_hook.settings import Settings
from tests.support import poison

SHAPES = {
    "nested_comments_from": lambda: poison.nested_comments_from(1000),
    "nested_comments_content_type": lambda: poison.nested_comments_content_type(1000),
    "nested_multipart": lambda: poison.nested_multipart(1000),
    "nested_messages": lambda: poison.nested_messages(1000),
    "html_only_30mb": lambda: poison.html_only(30_000_000),
    "long_subject": lambda: poison.long_subject(200_000),
    "many_attachments": lambda: poison.many_attachments(10_000),
    "repeated_subjects": lambda: poison.repeated_subjects(95, 100_000),
}


@pytest.fixture(scope="module")
def engine(tmp_path_factory) -> Engine:
    store = Store(f"sqlite:///{tmp_path_factory.mktemp('poison') / 'c.db'}")
    store.migrate()
    store.add_mailbox("support@example.com", "default")
    store.add_csr("jane@example.com", "Jane Doe", ["default"])
    yield Engine(store, Settings(secret=b"s" * 32))
    store.close()


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_poison_is_stored_raw_and_answered_250(engine: Engine, shape: str) -> None:
    raw = SHAPES[shape]()
    started = time.monotonic()
    reply = engine.process(Delivery("x@client.test", ("support@example.com",), raw,
                                    queue_id=f"P{shape[:20]}"))
    took = time.monotonic() - started
    stored = Message.select().where(Message.queue_id == f"P{shape[:20]}").get()
    assert reply == replies.stored(stored.case.number), reply
    assert bytes(stored.raw) == raw
    assert took < 30, f"{shape}: {took:.1f}s"  # a generous bound; bench/fuzz.py has the figures
    print(f"{shape}: {len(raw)} bytes in {took:.2f}s")
