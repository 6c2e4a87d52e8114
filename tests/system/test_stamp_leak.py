"""Issue 8 ("the stamp may leak") through a real Postfix built from
contrib/postfix/: the milter stamps a message that goes to a supervised
address with ``X-Casegate-Auth`` (a CSR's SASL login and client address).
Postfix keeps one queue file for all recipients, so bob@'s copy of a CSR's
message to support@ and bob@ carried the stamp. contrib's
``smtp_header_checks`` (and ``lmtp_header_checks``) drop it from every copy
an smtp or lmtp client delivers, and the ``casegate`` transport turns the
check off again: the filter still gets the stamp and still proves the CSR.

casegate runs as ``casegate serve --milter``; Jane logs in on the submission
listener (SASL) from 127.0.0.2, which is no trusted network.
"""

from __future__ import annotations

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
CUSTOMER = "ann@outside.test"
STAMP = "X-Casegate-Auth"


@dataclass
class Env:
    pf: PostfixInstance
    sink: Sink
    cg: Casegate
    milter: int

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
    e = Env(pf, sink, cg, milter)
    try:
        cg.setup(csrs=[(JANE, "Jane Doe", "Jane Doe\nSupport")])
        pf.start()
        assert pf.config_warnings() == []
        cg.start(listen_port=f, reinject_port=reinject, trusted=(),
                 extra=["--milter", f"127.0.0.1:{milter}"])
        _wait_port(milter, cg)  # serve's filter listens first; wait for the milter too
        yield e
    finally:
        cg.close()
        pf.stop()
        sink.stop()
        _remove(root)


def _wait_port(port: int, cg: Casegate) -> None:
    deadline = time.monotonic() + 15
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            assert time.monotonic() < deadline, cg.log()
            time.sleep(0.05)


def stamps(message) -> list[str]:
    return [str(v) for k, v in message.items() if k.lower() == STAMP.lower()]


def test_a_csrs_message_to_support_and_bob_proves_the_csr_and_bobs_copy_has_no_stamp(
        env: Env) -> None:
    subject = "test_stamp_leak_new_case"
    body = f"#new {CUSTOMER}\n\nHello Ann, your order shipped today.\n"
    raw = make(from_=JANE, to=SUPPORT, subject=subject, body=body,
               headers={"Cc": BOB})
    env.pf.submit((JANE, "jane-secret"), JANE, [SUPPORT, BOB], raw)
    # bob@ (not supervised) gets the CSR's message, without the stamp.
    (bobs,) = env.sink.wait_for(lambda d: BOB in d.rcpt_tos
                                and subject in str(d.message["Subject"]), timeout=30)
    assert stamps(bobs.message) == []
    assert b"X-Casegate-Auth" not in bobs.raw and b"authen=" not in bobs.raw
    # The filter got the stamp all the same: Jane is proven, the case opens
    # with Ann as the customer, and Ann gets Jane's text.
    (ann,) = env.sink.wait_for(lambda d: CUSTOMER in d.rcpt_tos
                               and subject in str(d.message["Subject"]), timeout=30)
    assert "your order shipped today" in ann.message.get_body(("plain",)).get_content()
    assert stamps(ann.message) == [] and b"authen=" not in ann.raw
    (case,) = env.cases(subject)
    assert case["customer"] == CUSTOMER
    # The milter stamped the queue file (one file for both recipients) ...
    assert f"stamp authen={JANE}" in env.cg.log()
    assert case["assignee"] == JANE


def test_a_customers_forged_stamp_never_reaches_bob_either(env: Env) -> None:
    """An X-Casegate-Auth a client writes itself is deleted by the milter
    (supervised mail) or by smtp_header_checks (everyone else's copies)."""
    subject = "test_stamp_leak_forged"
    raw = make(from_="c@customer.test", to=f"{SUPPORT}, {BOB}", subject=subject,
               headers={STAMP: "v=1; authen=jane@example.com; addr=1.2.3.4; qid=X; t=1; sig=x"})
    env.pf.send("c@customer.test", [SUPPORT, BOB], raw)
    (bobs,) = env.sink.wait_for(lambda d: BOB in d.rcpt_tos
                                and subject in str(d.message["Subject"]), timeout=30)
    assert stamps(bobs.message) == []
    deadline = time.monotonic() + 20
    while not env.cases(subject):
        assert time.monotonic() < deadline, env.cg.log()
        time.sleep(0.2)
    assert env.cases(subject)[0]["customer"] == "c@customer.test"

