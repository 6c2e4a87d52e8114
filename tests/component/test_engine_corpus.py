"""The shared corpus through the whole engine on a real SQLite store: no
automatic answer to any automatic message, and no human reply taken for a
machine; plus DKIM signing of what we send, verified with injected DNS."""

from __future__ import annotations

from pathlib import Path

import pytest

from casestore.models import Case, Message
from casestore.store import Store
from rules import replies
from rules.classify import parse_networks
from smtpd_hook import dkim
from smtpd_hook.delivery import Delivery
from smtpd_hook.engine import Engine
from smtpd_hook.settings import Settings
from tests.support.mail import make

REPO = Path(__file__).resolve().parents[2]
CORPUS = REPO.parent / "shared" / "corpus"
SECRET = b"c" * 32


def corpus(*parts: str) -> Path:
    folder = CORPUS.joinpath(*parts)
    if not folder.exists():
        local = REPO / "tests" / "data" / parts[-1]  # the core copied into the repo
        if parts[0] == "automatic":
            local = REPO / "tests" / "data" / "automatic"
        if not local.exists():
            pytest.skip(f"corpus not found at {folder}")
        return local
    return folder


@pytest.fixture
def engine(sqlite_url: str) -> Engine:
    store = Store(sqlite_url)
    store.migrate()
    store.add_mailbox("support@example.com", "default")
    store.add_csr("jane@example.com", "Jane Doe", ["default"])
    return Engine(store, Settings(secret=SECRET, trusted_networks=parse_networks(["127.0.0.1/32"])))


def envelope_sender(raw: bytes) -> str | None:
    for line in raw.split(b"\n", 60):
        if line.lower().startswith(b"return-path:"):
            value = line.split(b":", 1)[1].strip().strip(b"<>").decode("latin-1")
            return value
    return None


def test_no_automatic_answer_to_any_automatic_message(engine: Engine) -> None:
    files = sorted(corpus("automatic").glob("*.eml"))
    kinds: dict[str, int] = {}
    for i, path in enumerate(files):
        raw = path.read_bytes()
        sender = envelope_sender(raw)
        reply = engine.process(Delivery(mail_from=sender if sender is not None else "x@y.test",
                                        rcpt_tos=("support@example.com",), data=raw,
                                        client_addr="127.0.0.2", queue_id=f"A{i}"))
        assert reply.code == 250, (path.name, reply)
    acks = Message.select().where((Message.direction == "out") & (Message.kind == "ack")).count()
    for m in Message.select().where(Message.direction == "in"):
        kinds[m.kind] = kinds.get(m.kind, 0) + 1
    human = [m.queue_id for m in Message.select().where(
        (Message.direction == "in") & (Message.kind == "customer"))]
    print(f"\n{len(files)} automatic messages: {kinds}; acknowledgements sent: {acks}")
    assert acks == 0
    assert human == []
    # Byte-identical files (the corpus has a few) are one delivery: idempotency.
    distinct = {(envelope_sender(p.read_bytes()), p.read_bytes()) for p in files}
    assert sum(kinds.values()) == len(distinct)


def test_no_human_reply_is_taken_for_a_machine(engine: Engine) -> None:
    files = sorted(corpus("replies", "talon").glob("*.eml"))
    for i, path in enumerate(files):
        raw = path.read_bytes()
        reply = engine.process(Delivery(mail_from="someone@client.test",
                                        rcpt_tos=("support@example.com",), data=raw,
                                        client_addr="127.0.0.2", queue_id=f"R{i}"))
        stored = Message.get((Message.queue_id == f"R{i}") & (Message.direction == "in"))
        assert reply == replies.stored(stored.case.number), (path.name, reply)
    kinds = [m.kind for m in Message.select().where(Message.direction == "in")]
    print(f"\n{len(files)} human replies: {kinds.count('customer')} taken as customers' mail")
    assert kinds == ["customer"] * len(files)


def test_out_of_office_never_reopens_a_closed_case(engine: Engine) -> None:
    assert engine.process(Delivery(mail_from="a@customer.test", rcpt_tos=("support@example.com",),
                                   data=make(from_="a@customer.test", subject="test_ooo"),
                                   client_addr="127.0.0.2")) == replies.stored(Case.get().number)
    case = Case.get()
    engine.store.touch(case, status="closed")
    ack = Message.get(Message.kind == "ack")
    oof = make(from_="a@customer.test", subject="Automatic reply: x", in_reply_to=ack.message_id,
               headers={"Auto-Submitted": "auto-replied"})
    engine.process(Delivery(mail_from="a@customer.test", rcpt_tos=("support@example.com",),
                            data=oof, client_addr="127.0.0.2"))
    assert Case.get().status == "closed" and Case.select().count() == 1
    assert Message.select().where(Message.kind == "automatic").get().case_id == case.id
    assert Message.select().where(Message.kind == "ack").count() == 1


def test_outgoing_mail_is_dkim_signed_and_verifies(sqlite_url: str, tmp_path: Path) -> None:
    import dns.rdata
    import dns.rdataclass
    import dns.rdatatype

    record = dkim.keygen("example.com", "cg", tmp_path / "k.pem", bits=1024)
    name, _, rdata = record.partition(" IN TXT ")
    txt = b"".join(dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.TXT, rdata).strings)
    answers = {name.encode(): txt}
    signer = dkim.Signer.load("example.com", "cg", tmp_path / "k.pem")
    store = Store(sqlite_url)
    store.migrate()
    store.add_mailbox("support@example.com", "default")
    store.add_csr("jane@example.com", "Jane Doe", ["default"])
    engine = Engine(store, Settings(secret=SECRET), sign=signer.sign)
    engine.process(Delivery(mail_from="j@customer.test", rcpt_tos=("support@example.com",),
                            data=make(from_="José <j@customer.test>", subject="test_dkim Ünï"),
                            client_addr="127.0.0.2"))
    out = list(Message.select().where(Message.direction == "out"))
    assert len(out) == 2
    for m in out:
        results = dkim.verify(bytes(m.raw), dnsfunc=lambda n, t=5: answers.get(n))
        assert [(r.domain, r.passed) for r in results] == [("example.com", True)], results

