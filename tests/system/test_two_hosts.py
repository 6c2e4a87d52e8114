"""Two mail hosts on one PostgreSQL database (issue 12, "Several hosts").

Two private Postfix instances built from contrib/postfix/, each with its own
``casegate serve`` (1 s tick, 3 s outbox lease), run under host names of
their own (``unshare --uts``: the outbox and timer leases are
``hostname:pid``), share one fresh database on the PostgreSQL server at
127.0.0.1:5432 and one capture sink.

1. Customers write through both hosts at once; Jane answers each case
   through either host; half the customers answer back through the other
   host, the other half stay silent so that the reminder and the auto-close
   timers fire (on whichever host claims them).
2. A burst of new cases through host A; ``casegate serve`` of A is killed -9
   mid-burst. Host B sends the rows A had leased once A's lease ran out,
   while A is still down; Postfix A keeps the mail it could not hand over
   and delivers it when A's casegate is back.

Checks: one case per new message and one append per reply, unique case
numbers, every outgoing message at the sink exactly once by Message-ID (at
most the one in flight at the kill twice, with the same Message-ID), each
due timer fired once, nothing left in Postfix's queues or the outbox.
"""

from __future__ import annotations

import collections
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.support.casegate import Casegate
from tests.support.fixtures import _new_root, _remove, postfix_available
from tests.support.mail import make
from tests.support.postfix import PostfixInstance, free_ports
from tests.support.sink import Delivery, Sink
from tests.support.wait import until

pytestmark = [
    pytest.mark.system,
    pytest.mark.postgres,
    pytest.mark.skipif(postfix_available() is not None, reason=str(postfix_available())),
    pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare (util-linux)"),
]

SUPPORT, JANE = "support@example.com", "jane@example.com"
LEASE = 3  # seconds an outgoing message stays leased to the host sending it
PER_HOST = 12  # new cases per host in part 1
BURST = 40  # new cases through host A in part 2


@dataclass
class Host:
    name: str
    pf: PostfixInstance
    cg: Casegate

    def start_casegate(self) -> None:
        self.cg.start(listen_port=self.pf.filter_port, reinject_port=self.pf.reinject_port,
                      extra=["--tick", "1s"])


def sql(url: str, query: str, *args: object) -> list[tuple]:
    import psycopg2

    with psycopg2.connect(url, connect_timeout=5) as conn, conn.cursor() as cur:
        cur.execute(query, args)
        return cur.fetchall()


def number_of(d: Delivery) -> str:
    return str(d.message["Subject"]).split("#", 1)[1].split("]", 1)[0]


def subject_tag(d: Delivery) -> str:
    """test_two_hosts-<tag> from the subject of a mail about that case."""
    return str(d.message["Subject"]).rsplit(" ", 1)[-1]


@pytest.fixture
def hosts(pg_url: str) -> Iterator[tuple[Host, Host, Sink, str]]:
    root = _new_root()
    sink = Sink().start()
    made: list[Host] = []
    try:
        for name in ("mx-a", "mx-b"):
            smtpd, fport, rport = free_ports(3, exclude=[sink.port, *(
                p for h in made for p in (h.pf.smtpd_port, h.pf.filter_port, h.pf.reinject_port))])
            pf = PostfixInstance(root=root / name / "pf", sink_port=sink.port, smtpd_port=smtpd,
                                 filter_port=fport, reinject_port=rport, supervised=[SUPPORT])
            cg = Casegate(root / name / "cg", store_url=pg_url)
            made.append(Host(name, pf, cg))
        a, b = made
        a.cg.setup(csrs=[(JANE, "Jane Doe", "Jane")])
        a.cg.run("pool", "set", "default", "--remind-after", "4s", "--autoclose-after", "8s")
        # One configuration on every host (the secret above all), its own host name.
        config = _merge_serve(a.cg.config.read_text(), f'outbox_lease = "{LEASE}s"')
        for h in made:
            h.cg.config.write_text(config)
            h.cg.wrapper = ["unshare", "--uts", "sh", "-c", f'hostname {h.name} && exec "$@"', "sh"]
        for h in made:
            h.pf.start()
            h.start_casegate()
        yield a, b, sink, pg_url
    finally:
        for h in made:
            h.cg.close()
            try:
                h.pf.stop()
            except Exception:
                pass
        sink.stop()
        _remove(root)


def _merge_serve(config: str, line: str) -> str:
    """``config`` with ``line`` added to its [serve] table."""
    head, sep, tail = config.partition("\n[serve]\n")
    assert sep, config
    return f"{head}{sep}{line}\n{tail}"


def send_new(host: Host, tag: str) -> None:
    customer = f"{tag}@customer.test"
    host.pf.send(customer, [SUPPORT], make(from_=f"Kim <{customer}>", to=SUPPORT,
                                           subject=f"two hosts {tag}"), source="127.0.0.2")


def test_two_hosts_share_one_postgresql_store(hosts) -> None:
    a, b, sink, url = hosts
    started = time.monotonic()

    # --- 1. both hosts at once -------------------------------------------------
    tags = {h.name: [f"{h.name}-{i}" for i in range(PER_HOST)] for h in (a, b)}
    threads = [threading.Thread(target=lambda h=h: [send_new(h, t) for t in tags[h.name]])
               for h in (a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    everyone = tags[a.name] + tags[b.name]
    acks = sink.wait_for(lambda d: d.rcpt_tos[0].endswith("@customer.test"), count=len(everyone),
                         timeout=60)
    sink.wait_for(lambda d: JANE in d.rcpt_tos, count=len(everyone), timeout=60)
    number = {subject_tag(d): number_of(d) for d in acks}
    assert sorted(number) == sorted(everyone)

    # Jane answers each case, alternately through A and B.
    for n, tag in enumerate(everyone):
        via = (a, b)[n % 2]
        plus = SUPPORT.replace("@", f"+{number[tag]}@")
        via.pf.send(JANE, [plus], make(from_=JANE, to=plus, subject=f"Re: two hosts {tag}",
                                       body=f"Answer for {tag}.\n"), source="127.0.0.1")

    def answered(tag: str) -> list[Delivery]:
        return [d for d in sink.messages(to=f"{tag}@customer.test")
                if b"Answer for " + tag.encode() in d.raw]

    until("every answer sent", lambda: all(answered(t) for t in everyone))
    # The even customers answer back, through the host Jane did not use.
    talkers = everyone[::2]
    for n, tag in enumerate(talkers):
        via = (a, b)[n % 2]
        last = answered(tag)[-1].message
        customer = f"{tag}@customer.test"
        to = str(last["Reply-To"] or SUPPORT)
        via.pf.send(customer, [to], make(from_=customer, to=to, subject=f"Re: {last['Subject']}",
                                         body=f"Thanks, {tag}.\n", in_reply_to=last["Message-ID"],
                                         references=[last["Message-ID"]]), source="127.0.0.2")
    until("every customer reply forwarded to Jane", lambda: all(
        any(f"Thanks, {t}.".encode() in d.raw for d in sink.messages(to=JANE)) for t in talkers))
    silent = everyone[1::2]
    # The silent ones: reminder after 4 s, auto-close after 8 s (tick 1 s).
    until("every silent case closed", lambda: sql(
        url, "SELECT count(*) FROM support_case WHERE number = ANY(%s) AND status = 'closed'",
        [number[t] for t in silent])[0][0] == len(silent), timeout=40)

    # --- 2. a burst through A, A's casegate killed -9 mid-burst ---------------
    burst = [f"burst-{i}" for i in range(BURST)]
    sender = threading.Thread(target=lambda: [send_new(a, t) for t in burst])
    sender.start()
    until("a quarter of the burst acknowledged", lambda: len(
        [d for d in sink.messages() if d.rcpt_tos[0].startswith("burst-")]) >= BURST // 4, timeout=60)
    a.cg.kill9()
    killed_at = time.monotonic()
    leased_by_a = sql(url, "SELECT count(*) FROM outbox WHERE status = 'pending' "
                           "AND lease_owner LIKE 'mx-a:%%' AND lease_until > now()")[0][0]
    sender.join()
    # B sends what A had leased once the lease ran out, A still down.
    until("outbox drained by host B", lambda: sql(
        url, "SELECT count(*) FROM outbox WHERE status = 'pending'")[0][0] == 0, timeout=LEASE + 30)
    drained_after = time.monotonic() - killed_at
    in_a_queue = len(a.pf.queue())
    a.start_casegate()
    a.pf.flush()
    until("Postfix A's queue handed over", lambda: not a.pf.queue(), timeout=60)
    until("outbox empty", lambda: sql(
        url, "SELECT count(*) FROM outbox WHERE status = 'pending'")[0][0] == 0, timeout=30)
    b.pf.wait_queue_empty(timeout=30)
    a.pf.wait_queue_empty(timeout=30)

    # --- checks -----------------------------------------------------------------
    cases = sql(url, "SELECT number, customer_address, subject FROM support_case")
    numbers = [c[0] for c in cases]
    assert len(numbers) == len(set(numbers)), "case numbers unique"
    per_customer = collections.Counter(c[1] for c in cases)
    assert sorted(per_customer) == sorted(f"{t}@customer.test" for t in everyone + burst)
    assert set(per_customer.values()) == {1}, [k for k, v in per_customer.items() if v > 1]
    # Each customer reply appended once (stored once, on its own case).
    appended = dict(sql(url, "SELECT c.customer_address, count(*) FROM message m JOIN support_case c "
                             "ON m.case_id = c.id WHERE m.direction = 'in' AND m.kind = 'customer' "
                             "GROUP BY c.customer_address"))
    for tag in everyone + burst:
        assert appended[f"{tag}@customer.test"] == (2 if tag in talkers else 1), tag

    # Each of Jane's answers stored once, on its case.
    csr_in = dict(sql(url, "SELECT c.number, count(*) FROM message m JOIN support_case c "
                           "ON m.case_id = c.id WHERE m.direction = 'in' AND m.kind = 'csr' "
                           "GROUP BY c.number"))
    assert csr_in == {number[t]: 1 for t in everyone}

    # Every outgoing message at the sink, once by Message-ID.
    out = sql(url, "SELECT m.message_id, m.kind FROM outbox o JOIN message m ON o.message_id = m.id")
    sent_ids = collections.Counter(str(d.message["Message-ID"]) for d in sink.messages())
    stored = {mid for mid, _ in out}
    assert sql(url, "SELECT count(*) FROM outbox WHERE status <> 'sent'")[0][0] == 0
    missing = stored - set(sent_ids)
    assert not missing, f"stored but never delivered: {sorted(missing)[:5]}"
    doubles = {mid: n for mid, n in sent_ids.items() if n > 1}
    assert len(doubles) <= 1 and all(n == 2 for n in doubles.values()), doubles
    assert set(sent_ids) == stored, "the sink holds only casegate's outgoing mail"

    # Every due timer fired once: one reminder and one closing per silent case.
    timers = sql(url, "SELECT c.number, t.kind, t.status FROM timer t JOIN support_case c "
                      "ON t.case_id = c.id WHERE t.kind IN ('remind', 'autoclose')")
    fired = collections.Counter((n, k) for n, k, s in timers if s == "done")
    for tag in silent:
        assert fired[(number[tag], "remind")] == 1 and fired[(number[tag], "autoclose")] == 1, tag
    kinds = collections.Counter(k for _, k in out)
    assert kinds["reminder"] == len(silent), kinds
    for tag in talkers:
        assert fired[(number[tag], "remind")] == 0, tag

    print(f"\ntwo hosts: {len(cases)} cases, {len(sent_ids)} outgoing messages "
          f"({sum(sent_ids.values()) - len(sent_ids)} sent twice), {len(silent)} reminders and "
          f"closings; at the kill A held {leased_by_a} leased outbox rows, host B drained the "
          f"outbox {drained_after:.1f}s after the kill, Postfix A held {in_a_queue} messages; "
          f"{time.monotonic() - started:.1f}s in all")
