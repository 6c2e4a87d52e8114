"""Values longer than their column: SQLite ignores lengths, PostgreSQL refuses
them (DataError) on every try, which was a 451 for ever. The store bounds
every CharField value to its column after every conversion, and maps a
database refusal of bad data to StoreDataError, never to StoreUnavailable."""

from __future__ import annotations

import peewee
import pytest

from casestore.models import MODELS, Case, Delivery, Event, Message, Outbox, Participant
from casestore.store import Store, StoreDataError, StoreUnavailable, bounded
from rules import replies
from rules.inbound import ascii_domain
from smtpd_hook.engine import Delivery as Handover
from smtpd_hook.engine import Engine
from smtpd_hook.settings import Settings

# Under 400 characters as written, over 400 once the domain is in IDNA form (the form stored).
IDN_DOMAIN = ".".join(f"bücherbücherbü{i:02d}" for i in range(17)) + ".test"
IDN_FROM = "x" * 40 + "@" + IDN_DOMAIN


@pytest.fixture
def engine(store_url: str) -> Engine:
    store = Store(store_url)
    store.migrate()
    store.add_mailbox("support@example.com", "default")
    store.add_csr("jane@example.com", "Jane Doe", ["default"])
    yield Engine(store, Settings(secret=b"s" * 32))
    store.close()


def _deliver(engine: Engine, raw: bytes, mail_from: str, qid: str) -> replies.Reply:
    return engine.process(Handover(mail_from=mail_from, rcpt_tos=("support@example.com",), data=raw,
                                   client_addr="192.0.2.1", queue_id=qid))


def test_an_idna_from_longer_than_its_column_is_stored(engine: Engine) -> None:
    raw = (f"From: Long IDN <{IDN_FROM}>\r\nTo: support@example.com\r\n"
           "Subject: test_store_bounds idna\r\nMessage-ID: <idn@client.test>\r\n"
           "Content-Type: text/plain; charset=utf-8\r\n\r\nHello.\r\n").encode()
    assert len(IDN_FROM) < 400 and len(ascii_domain(IDN_FROM)) > 400
    reply = _deliver(engine, raw, "bounce@client.test", "QIDN")
    stored = Message.get(Message.direction == "in")
    assert reply == replies.stored(stored.case.number)
    assert bytes(stored.raw) == raw and len(stored.sender) == 320
    assert stored.sender.startswith("x" * 40 + "@xn--")
    case = Case.get()
    assert case.customer_address == stored.sender
    assert [p.address for p in Participant.select()] == [stored.sender]


def test_a_390_character_envelope_sender_without_from_is_stored(engine: Engine) -> None:
    sender = "y" * 65 + "@" + ".".join(["z" * 63] * 5) + ".test"
    assert len(sender) == 390
    raw = (b"To: support@example.com\r\nSubject: test_store_bounds no From\r\n"
           b"Message-ID: <" + b"m" * 1200 + b"@client.test>\r\n\r\nHello.\r\n")
    reply = _deliver(engine, raw, sender, "Q390")
    stored = Message.get(Message.direction == "in")
    assert reply == replies.stored(stored.case.number)
    assert bytes(stored.raw) == raw
    # A Message-ID longer than a header line may be is no Message-ID (rules.inbound).
    assert stored.sender == sender[:320] and stored.message_id == ""
    assert Delivery.get().queue_id == "Q390"
    # Postfix hands it over again: the duplicate check still finds it.
    assert _deliver(engine, raw, sender, "Q390") == replies.duplicate(stored.case.number)
    assert Message.select().where(Message.direction == "in").count() == 1


def test_every_char_column_is_bounded_in_one_place() -> None:
    checked = 0
    for model in MODELS:
        for name, field in model._meta.fields.items():
            if isinstance(field, peewee.CharField) and not isinstance(field, peewee.ForeignKeyField):
                value = bounded(model, {name: "é\x00" * (field.max_length + 5)})[name]
                assert len(value) == field.max_length and "\x00" not in value, (model, name)
                checked += 1
    assert checked > 40
    assert bounded(Message, {"raw": b"\x00" * 5, "case": None}) == {"raw": b"\x00" * 5, "case": None}


def test_a_refusal_of_bad_data_is_not_store_unavailable(engine: Engine) -> None:
    """DataError / IntegrityError: retrying the same data fails the same way,
    so it must not surface as the temporary trouble that means 451."""
    store = engine.store
    with pytest.raises(StoreDataError) as raised:
        with store.atomic():
            Event.create(at=store.now(), kind="k", case=123456)  # no such case: a foreign key
    assert not isinstance(raised.value, StoreUnavailable)
    with pytest.raises(StoreDataError):
        with store.atomic():
            store.add_participant(Case.create(mailbox=store.mailbox("support@example.com"),
                                              customer_address="a@b.test", created=store.now(),
                                              updated=store.now()), "a@b.test", "cc")
            Participant.insert(case=Case.get().id, address="a@b.test").execute()  # unique
    assert Case.select().count() == 0 and Outbox.select().count() == 0  # rolled back
    with store.atomic():  # the connection is fine afterwards
        store.set_setting("k", "v")
