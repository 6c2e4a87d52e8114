"""Assignment rules end to end through the private Postfix and the real
`casegate serve` (1 s scheduler tick): round robin over three CSRs, limit:1
(the fourth case waits and goes to the CSR whose case closes), #next."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.casegate import Casegate
from tests.support.fixtures import _new_root, _remove, postfix_available
from tests.support.mail import make, text_of
from tests.support.postfix import PostfixInstance, free_ports
from tests.support.sink import Sink

pytestmark = [
    pytest.mark.system,
    pytest.mark.skipif(postfix_available() is not None, reason=str(postfix_available())),
]

RR, LIMIT, FIFO = "rr@example.com", "limit@example.com", "fifo@example.com"
RANDOM, NONE, LEAST = "random@example.com", "none@example.com", "least@example.com"
CSRS = ("ann@example.com", "ben@example.com", "cat@example.com")  # round robin
LIMITED = ("dan@example.com", "eve@example.com", "fay@example.com")  # limit:1 (a CSR's load
# counts their open cases in every pool, so each pool here has CSRs of its own)
PULLER = "gus@example.com"
OTHERS = ("hal@example.com", "ida@example.com")  # random and none
LEASTS = ("jo@example.com", "kai@example.com")  # least_load


@pytest.fixture(scope="module")
def env() -> Iterator[tuple[PostfixInstance, Sink, Casegate]]:
    root = _new_root()
    sink = Sink().start()
    filter_port, reinject_port = free_ports(2)
    pf = PostfixInstance(root=root / "pf", sink_port=sink.port, filter_port=filter_port,
                         reinject_port=reinject_port, supervised=[RR, LIMIT, FIFO, RANDOM, NONE, LEAST])
    cg = Casegate(root / "cg")
    try:
        cg.run("init")
        for mailbox, pool in ((RR, "rr"), (LIMIT, "limit"), (FIFO, "fifo"), (RANDOM, "random"),
                              (NONE, "none"), (LEAST, "least")):
            cg.run("mailbox", "add", mailbox, "--pool", pool)
        for addresses, pool in ((CSRS, "rr"), (LIMITED, "limit"), ((PULLER,), "fifo")):
            for address in addresses:
                cg.run("csr", "add", address, "--name", address.split("@")[0].title(), "--pool", pool)
        for address in OTHERS:
            cg.run("csr", "add", address, "--name", address.split("@")[0].title(),
                   "--pool", "random", "--pool", "none")
        for address in LEASTS:
            cg.run("csr", "add", address, "--name", address.split("@")[0].title(), "--pool", "least")
        cg.run("pool", "set", "rr", "--assign", "round_robin")
        cg.run("pool", "set", "limit", "--assign", "limit:1")
        cg.run("pool", "set", "fifo", "--assign", "fifo")
        cg.run("pool", "set", "random", "--assign", "random")
        cg.run("pool", "set", "none", "--assign", "none")
        pf.start()
        cg.start(listen_port=filter_port, reinject_port=reinject_port, extra=["--tick", "1s"])
        yield pf, sink, cg
    finally:
        cg.close()
        pf.stop()
        sink.stop()
        _remove(root)


def _send(pf: PostfixInstance, mailbox: str, n: int, tag: str) -> None:
    for i in range(n):
        sender = f"{tag}{i}@customer.test"
        pf.send(sender, [mailbox], make(from_=sender, to=mailbox, subject=f"test_{tag} {i}"),
                source="127.0.0.2")


def _notified(sink: Sink, tag: str, count: int, timeout: float = 20) -> dict[str, str]:
    staff = (*CSRS, *LIMITED, PULLER, *OTHERS, *LEASTS)
    got = sink.wait_for(lambda d: f"test_{tag} " in str(d.message["Subject"])
                        and any(r in staff for r in d.rcpt_tos), count=count, timeout=timeout)
    return {str(d.message["Subject"]).rsplit(" ", 1)[-1]: d.rcpt_tos[0] for d in got}


def test_round_robin_over_three_csrs(env) -> None:
    pf, sink, _cg = env
    _send(pf, RR, 3, "rr")
    assert sorted(_notified(sink, "rr", 3).values()) == sorted(CSRS)


def test_limit_one_makes_the_fourth_wait_until_a_case_closes(env) -> None:
    pf, sink, cg = env
    _send(pf, LIMIT, 3, "lim")
    first = _notified(sink, "lim", 3)
    assert sorted(first.values()) == sorted(LIMITED)
    _send(pf, LIMIT, 1, "limwait")
    sink.wait_for(lambda d: "test_limwait" in str(d.message["Subject"]) and
                  "limwait0@customer.test" in d.rcpt_tos, timeout=20)  # acknowledged
    waiting = [c for c in cg.json("case", "list") if "test_limwait" in c["subject"]]
    assert len(waiting) == 1 and waiting[0]["assignee"] is None
    closing = next(c for c in cg.json("case", "list") if c["subject"] == "test_lim 1")
    cg.run("case", "close", closing["number"])
    got = _notified(sink, "limwait", 1)
    assert got == {"0": closing["assignee"]}


def test_fifo_next_by_mail(env) -> None:
    pf, sink, _cg = env
    _send(pf, FIFO, 1, "fifo")
    sink.wait_for(lambda d: "fifo0@customer.test" in d.rcpt_tos, timeout=20)  # the ack
    assert not [d for d in sink.messages(to=PULLER)]  # fifo pushes nothing
    pf.send(PULLER, [FIFO], make(from_=PULLER, to=FIFO, subject="next", body="#next\n"),
            source="127.0.0.1")
    note = sink.wait_for(lambda d: PULLER in d.rcpt_tos and "test_fifo" in
                         str(d.message["Subject"]), timeout=20)[0].message
    assert "Your next case" in text_of(note)


def test_random_least_load_and_none(env) -> None:
    pf, sink, cg = env
    _send(pf, RANDOM, 2, "rand")
    assert set(_notified(sink, "rand", 2).values()) <= set(OTHERS)
    _send(pf, LEAST, 2, "least")
    assert sorted(_notified(sink, "least", 2).values()) == sorted(LEASTS)  # one each
    _send(pf, NONE, 1, "nobody")
    sink.wait_for(lambda d: "nobody0@customer.test" in d.rcpt_tos, timeout=20)  # acknowledged
    case = next(c for c in cg.json("case", "list") if c["subject"] == "test_nobody 0")
    assert case["assignee"] is None
    assert not [d for d in sink.messages() if "test_nobody" in str(d.message["Subject"])
                and any(r in OTHERS for r in d.rcpt_tos)]
