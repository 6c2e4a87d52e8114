"""Issue 8 ("trust") through a real Postfix built from contrib/postfix/: the
milter judges only mail for supervised addresses, and a casegate outage
holds only that mail (the recipient gate), never bob@'s.

casegate runs as `casegate serve --milter`; customers connect from 127.0.0.2.
"""

from __future__ import annotations

import smtplib
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.support.casegate import Casegate
from tests.support.fixtures import _new_root, _remove, sasl_available
from tests.support.mail import make
from tests.support.postfix import PostfixInstance, free_ports
from tests.support.sink import Sink

pytestmark = [
    pytest.mark.system,
    pytest.mark.skipif(sasl_available() is not None, reason=str(sasl_available())),
]

SUPPORT, BOB, JANE = "support@example.com", "bob@example.com", "jane@example.com"


@dataclass
class Env:
    pf: PostfixInstance
    sink: Sink
    cg: Casegate
    ports: dict[str, int]

    def start_casegate(self) -> None:
        self.cg.start(listen_port=self.ports["filter"], reinject_port=self.ports["reinject"],
                      trusted=(), extra=["--milter", f"127.0.0.1:{self.ports['milter']}"])
        deadline = time.monotonic() + 15
        while True:  # serve's filter listens first; wait for the milter too
            try:
                socket.create_connection(("127.0.0.1", self.ports["milter"]), timeout=1).close()
                return
            except OSError:
                assert time.monotonic() < deadline, self.cg.log()
                time.sleep(0.05)

    def cases(self, subject: str) -> list[dict]:
        return [c for c in self.cg.json("case", "list") if subject in c["subject"]]


@pytest.fixture(scope="module")
def env() -> Iterator[Env]:
    root = _new_root()
    sink = Sink().start()
    f, reinject, milter, submission = free_ports(4, exclude=[sink.port])
    pf = PostfixInstance(
        root=root / "pf", sink_port=sink.port, filter_port=f, reinject_port=reinject,
        supervised=[SUPPORT], milter=f"inet:127.0.0.1:{milter}", submission_port=submission,
        sasl_users={JANE: "jane-secret"},
    )  # fmt: skip
    cg = Casegate(root / "cg")
    e = Env(pf, sink, cg, {"filter": f, "reinject": reinject, "milter": milter})
    try:
        cg.setup(csrs=[(JANE, "Jane Doe", "")])
        cg.run("blacklist", "add", "@spammer.test")
        pf.start()
        assert pf.config_warnings() == []
        e.start_casegate()
        yield e
    finally:
        cg.close()
        pf.stop()
        sink.stop()
        _remove(root)


def transaction(pf: PostfixInstance, sender: str, rcpts: list[str], raw: bytes,
                port: int | None = None) -> tuple[dict[str, int], tuple[int, bytes]]:  # fmt: skip
    """One SMTP transaction that goes on past refused recipients (as real clients do)."""
    with smtplib.SMTP("127.0.0.1", port or pf.smtpd_port, source_address=("127.0.0.2", 0),
                      timeout=30) as s:  # fmt: skip
        s.ehlo("client.test")
        assert s.mail(sender)[0] == 250
        codes = {r: s.rcpt(r)[0] for r in rcpts}
        if not any(c == 250 for c in codes.values()):
            return codes, (0, b"")
        return codes, s.data(raw)


def test_blacklisted_sender_loses_only_the_supervised_recipient(env: Env) -> None:
    subject = "test_trust_blacklist_mixed"
    raw = make(from_="boss@spammer.test", to=f"{SUPPORT}, {BOB}", subject=subject)
    codes, (code, _) = transaction(env.pf, "boss@spammer.test", [SUPPORT, BOB], raw)
    assert codes == {SUPPORT: 550, BOB: 250} and code == 250
    (got,) = env.sink.wait_for(lambda d: BOB in d.rcpt_tos, timeout=20)
    assert subject in str(got.message["Subject"])
    assert got.message["X-Casegate-Auth"] is None  # bob's copy: unchanged
    env.pf.wait_for_log(r"milter-reject: RCPT from unknown\[127\.0\.0\.2\]: 550 5\.7\.1 .*to=<support@")
    assert env.cases(subject) == []


def test_header_rule_on_a_mixed_message_deletes_the_supervised_recipient(env: Env) -> None:
    subject = "test_trust_two_froms_mixed"
    raw = make(from_="a@customer.test, b@customer.test", to=f"{SUPPORT}, {BOB}",
               subject=subject)  # fmt: skip
    codes, (code, text) = transaction(env.pf, "a@customer.test", [SUPPORT, BOB], raw)
    assert codes == {SUPPORT: 250, BOB: 250} and code == 250, text
    qid = text.decode().rpartition(" ")[2]
    env.sink.wait_for(lambda d: BOB in d.rcpt_tos and subject in str(d.message["Subject"]),
                      timeout=20)  # fmt: skip
    env.pf.wait_queue_empty(timeout=20)  # nothing left for support@: Postfix deleted it
    log = env.pf.maillog()
    assert not [line for line in log.splitlines() if qid in line and "to=<support@" in line], log
    assert env.cases(subject) == []
    # The same message to support@ alone is refused at end of headers.
    codes, (code, _) = transaction(env.pf, "a@customer.test", [SUPPORT], raw)
    assert codes == {SUPPORT: 250} and code == 550


def test_a_csrs_own_mail_leaves_without_the_stamp(env: Env) -> None:
    subject = "test_trust_no_stamp_leak"
    raw = make(from_=JANE, to="cust@outside.test", subject=subject)
    env.pf.submit((JANE, "jane-secret"), JANE, ["cust@outside.test"], raw)
    (got,) = env.sink.wait_for(lambda d: "cust@outside.test" in d.rcpt_tos
                               and subject in str(d.message["Subject"]), timeout=20)  # fmt: skip
    assert got.message["X-Casegate-Auth"] is None
    assert "jane@example.com" not in "".join(
        str(v) for k, v in got.message.items() if k.lower().startswith("x-casegate")
    )


def test_casegate_down_holds_supervised_mail_only(env: Env) -> None:
    subject = "test_trust_outage"
    assert env.cg.stop() == 0
    try:
        raw = make(from_="c@customer.test", to=f"{SUPPORT}, {BOB}", subject=subject)
        codes, (code, _) = transaction(env.pf, "c@customer.test", [SUPPORT, BOB], raw)
        # support@ waits in the client's queue (451 at RCPT); bob@ gets his copy now.
        assert codes == {SUPPORT: 451, BOB: 250} and code == 250
        env.sink.wait_for(lambda d: BOB in d.rcpt_tos and subject in str(d.message["Subject"]),
                          timeout=20)  # fmt: skip
        env.pf.wait_for_log(r"reject: RCPT from unknown\[127\.0\.0\.2\]: 451 4\.3\.0 "
                            r"<support@example\.com>.*casegate unavailable")  # fmt: skip
        # A message for bob alone: accepted as if casegate did not exist.
        codes, (code, _) = transaction(env.pf, "c@customer.test", [BOB], raw)
        assert codes == {BOB: 250} and code == 250
    finally:
        env.start_casegate()
    # The client retries once casegate is back: the gate lets it in, a case opens.
    codes, (code, _) = transaction(env.pf, "c@customer.test", [SUPPORT], raw)
    assert codes == {SUPPORT: 250} and code == 250
    deadline = time.monotonic() + 20
    while not env.cases(subject):
        assert time.monotonic() < deadline, env.cg.log()
        time.sleep(0.2)
