"""Finding a case that came in through a real Postfix: ``casegate case
search`` by a subject word and (with --body) a word of the message, on the
store ``casegate serve`` wrote (issue 11, finding cases)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.casegate import Casegate
from tests.support.fixtures import _new_root, _remove, postfix_available
from tests.support.mail import make
from tests.support.postfix import PostfixInstance, free_ports
from tests.support.sink import Sink

pytestmark = [
    pytest.mark.system,
    pytest.mark.skipif(postfix_available() is not None, reason=str(postfix_available())),
]

SUPPORT = "support@example.com"
JANE = "jane@example.com"


@pytest.fixture(scope="module")
def env() -> Iterator[tuple[PostfixInstance, Sink, Casegate]]:
    root = _new_root()
    sink = Sink().start()
    filter_port, reinject_port = free_ports(2)
    pf = PostfixInstance(root=root / "pf", sink_port=sink.port, filter_port=filter_port,
                         reinject_port=reinject_port, supervised=[SUPPORT])
    cg = Casegate(root / "cg")
    try:
        cg.setup(csrs=[(JANE, "Jane Doe", "Jane")])
        pf.start()
        cg.start(listen_port=filter_port, reinject_port=reinject_port)
        yield pf, sink, cg
    finally:
        cg.close()
        pf.stop()
        sink.stop()
        _remove(root)


def test_mail_through_postfix_is_found_by_subject_and_body_words(env) -> None:
    pf, sink, cg = env
    sender = "marta@customer.test"
    subject = "test_search Zepsuty ruter Łódź"
    raw = make(from_=f"Marta Wójcik <{sender}>", subject=subject,
               body="Dzień dobry, the kettle-shaped gadget whistles at midnight.\n")
    pf.send(sender, [SUPPORT], raw, source="127.0.0.2")
    sink.wait_for(lambda d: sender in d.rcpt_tos and "Zepsuty" in str(d.message["Subject"]), timeout=30)
    # a second case that must not be found
    other = make(from_="Olaf <olaf@customer.test>", subject="test_search Another matter",
                 body="Nothing to see.\n")
    pf.send("olaf@customer.test", [SUPPORT], other, source="127.0.0.2")
    sink.wait_for(lambda d: "olaf@customer.test" in d.rcpt_tos, timeout=30)

    by_subject = cg.json("case", "search", "zepsuty")
    assert [c["subject"] for c in by_subject] == [subject]
    number = by_subject[0]["number"]
    assert [c["number"] for c in cg.json("case", "search", "lodz")] == [number]  # accents fold
    assert [c["number"] for c in cg.json("case", "search", "wojcik")] == [number]  # the name
    assert [c["number"] for c in cg.json("case", "search", "marta@customer")] == [number]
    # a body word only with --body
    assert cg.run("case", "search", "whistles", check=False).returncode == 1
    assert [c["number"] for c in cg.json("case", "search", "whistles", "--body")] == [number]
    assert [c["number"] for c in cg.json("case", "search", "kettle shaped midnight", "--body")] == [number]
    both = cg.json("case", "search", "test_search")
    assert len(both) == 2 and both[0]["customer"] == "olaf@customer.test"  # newest first
    timeline = cg.json("case", "show", number)["timeline"]
    assert timeline[0]["type"] == "message" and timeline[0]["direction"] == "in"
    assert any(i["type"] == "message" and i["direction"] == "out" for i in timeline)
