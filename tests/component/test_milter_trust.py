"""Issue 8 ("trust"): mail not addressed to a supervised address is none of the
milter's business, and no bad row, flood of bounces or rule may touch it.

The milter runs on a real socket at port 0 on its own event loop; a
Postfix-like client (tests/support/milterclient.py) plays smtpd's side.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from milter.policy import RateLimit, StaticPolicy, rate_key
from milter.protocol import Action
from milter.server import MilterServer
from rules.blacklist import Blacklist, Entry
from rules.stamp import STAMP_HEADER, verify_stamp
from tests.support.milterclient import PostfixLikeClient

SECRET = b"trust-test-secret"
WALL = 1_700_000_000
SUPPORT, BOB = "<support@example.com>", "<bob@example.com>"
T = TypeVar("T")

HEADERS = [
    ("From", "Carol Customer <carol@customer.example>"),
    ("To", "support@example.com"),
    ("Subject", "test_milter_trust"),
]


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Loop:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Awaitable[T], timeout: float = 10.0) -> T:
        async def wrapper() -> T:
            return await coro

        return asyncio.run_coroutine_threadsafe(wrapper(), self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


Start = Callable[[StaticPolicy], str]


@pytest.fixture
def start() -> Iterator[Start]:
    """start(policy) -> HOST:PORT of a milter listening on port 0."""
    loop = Loop()
    servers: list[MilterServer] = []

    def _start(policy: StaticPolicy) -> str:
        server = MilterServer(policy, "127.0.0.1:0", secret=SECRET, wall_clock=lambda: WALL)
        loop.run(server.start())
        servers.append(server)
        return server.addresses[0]

    try:
        yield _start
    finally:
        for server in servers:
            loop.run(server.close())
        loop.close()


def policy(
    entries: list[Entry] | None = None, *, supervised: list[str] | None = None, **kw: Any
) -> StaticPolicy:
    return StaticPolicy(
        Blacklist(entries or [], strict=False),
        supervised if supervised is not None else ["support@example.com", "@help.example.com"],
        clock=kw.pop("clock", FakeClock()),
        **kw,
    )


def client_for(address: str, client_addr: str = "127.0.0.2") -> PostfixLikeClient:
    client = PostfixLikeClient.open(address)
    client.negotiate()
    client.connect_event(hostname="client.example", address=client_addr)
    return client


# --------------------------------------------------------------------------
# 1. A bad stored row never stops the milter


def test_a_supervised_address_without_a_dot_is_skipped_not_fatal(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.ERROR, logger="casegate")
    p = policy(supervised=["help@example", "support@example.com", "", "not an address"])
    assert p.is_supervised("support@example.com")
    assert not p.is_supervised("help@example")
    assert "supervised address 'help@example': domain 'example' has no dot" in caplog.text
    assert caplog.text.count("skipped") == 3


def test_a_bad_blacklist_row_is_logged_at_start_and_the_rest_applies(
    start: Start, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="casegate")
    address = start(policy([Entry("help@example"), Entry("x@y.example", subject="(unclosed"),
                            Entry("@spam.example")]))
    assert "'help@example' skipped" in caplog.text and "'x@y.example' skipped" in caplog.text
    with client_for(address) as client:
        out = client.message("<a@spam.example>", [SUPPORT], HEADERS, macros={"i": "Q1"})
        assert (out.stage, out.reply[:3]) == ("rcpt", "550")
        assert client.message("<a@customer.example>", [SUPPORT], HEADERS).reply == "continue"


def _init_store(tmp_path: Path) -> tuple[list[str], str]:
    from casestore.store import Store
    from tests.support.casegate import casegate_cmd

    config, store = str(tmp_path / "casegate.toml"), f"sqlite:///{tmp_path / 'c.db'}"
    base = [*casegate_cmd(), "--config", config, "--store", store]
    subprocess.run([*base, "init"], check=True, capture_output=True, timeout=60)
    s = Store(store)
    try:
        # Rows an older CLI let through: they must not stop the milter.
        s.add_mailbox("help@example", "default")
        s.add_mailbox("support@example.com", "default")
        s.add_blacklist("spam@nodot", None, "bad row", by="test")
        s.add_blacklist("@spammer.test", None, "good row", by="test")
    finally:
        s.close()
    return base, store


def test_casegate_milter_starts_with_bad_rows_in_the_store(tmp_path: Path) -> None:
    base, _ = _init_store(tmp_path)
    proc = subprocess.Popen(
        [*base, "milter", "--listen", "127.0.0.1:0"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**os.environ},
    )  # fmt: skip
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 20
        where = None
        while where is None:
            line = proc.stdout.readline()
            assert line or proc.poll() is None, "".join(lines)
            assert time.monotonic() < deadline, "".join(lines)
            lines.append(line)
            m = re.search(r"milter listening on (127\.0\.0\.1:\d+)", line)
            where = m.group(1) if m else None
        text = "".join(lines)
        assert "'help@example'" in text and "skipped" in text
        with client_for(where) as client:
            out = client.message("<boss@spammer.test>", [SUPPORT], HEADERS, macros={"i": "A1"})
            assert (out.stage, out.reply[:9]) == ("rcpt", "550 5.7.1")
            out = client.message("<boss@spammer.test>", [BOB], HEADERS, macros={"i": "A2"})
            assert out.reply == "continue" and out.edits == []
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0


# --------------------------------------------------------------------------
# 2. Only supervised recipients are judged


def test_blacklisted_sender_to_someone_else_is_untouched(start: Start) -> None:
    address = start(policy([Entry("@spam.example")]))
    with client_for(address) as client:
        out = client.message("<boss@spam.example>", [BOB], HEADERS, macros={"i": "B1"})
        assert (out.stage, out.reply, out.edits) == ("eom", "continue", [])


def test_mixed_recipients_lose_only_the_supervised_one_at_rcpt(start: Start) -> None:
    address = start(policy([Entry("@spam.example")]))
    with client_for(address) as client:
        out = client.message(
            "<boss@spam.example>", [SUPPORT, BOB, "<x@help.example.com>"], HEADERS,
            macros={"i": "B2"},
        )  # fmt: skip
        assert out.rcpt_replies[0].startswith("550 5.7.1")
        assert out.rcpt_replies[1] == "continue"
        assert out.rcpt_replies[2].startswith("550 5.7.1")  # a supervised domain
        # bob's copy goes on, unchanged: no stamp (nothing supervised is left).
        assert (out.stage, out.reply, out.edits) == ("eom", "continue", [])


@pytest.mark.parametrize(
    "headers",
    [
        [("From", "a@customer.example"), ("From", "b@customer.example")],
        [("From", "team: a@customer.example, b@customer.example;")],
        [("From", "boss@spam.example"), ("Subject", "hi")],
        [("From", "a@customer.example"), ("Subject", "=?utf-8?q?cheap_CASINO?=")],
    ],
    ids=["two-froms", "group", "blacklisted-from", "subject-pattern"],
)
def test_header_rules_do_not_apply_to_mail_for_others(
    start: Start, headers: list[tuple[str, str]]
) -> None:
    address = start(policy([Entry("boss@spam.example"), Entry("@customer.example", "casino")]))
    with client_for(address) as client:
        out = client.message("<a@customer.example>", [BOB], headers, macros={"i": "H1"})
        assert (out.stage, out.reply, out.edits) == ("eom", "continue", [])
        # The same message to a supervised address alone: refused at end of headers.
        out = client.message("<a@customer.example>", [SUPPORT], headers, macros={"i": "H2"})
        assert (out.stage, out.reply[:9]) == ("eoh", "550 5.7.1")
        # To both: bob keeps it, the supervised address is deleted at end of message.
        out = client.message(
            "<a@customer.example>", [SUPPORT, BOB], headers, macros={"i": "H3"}
        )
        assert (out.stage, out.reply) == ("eom", "continue")
        assert out.edits == [("-", {"rcpt": "support@example.com"})]


def test_mixed_message_passes_when_the_mta_cannot_delete_recipients(start: Start) -> None:
    address = start(policy())
    with PostfixLikeClient.open(address) as client:
        actions, _ = client.negotiate(actions=0x1FF & ~int(Action.DELRCPT))
        assert not actions & Action.DELRCPT
        client.connect_event()
        two = [("From", "a@customer.example"), ("From", "b@customer.example")]
        out = client.message("<a@customer.example>", [SUPPORT, BOB], two, macros={"i": "N1"})
        assert (out.stage, out.reply) == ("eom", "continue")
        assert [code for code, _ in out.edits] == ["h"]  # stamped for the filter, nobody deleted


def test_rate_limit_counts_only_mail_for_supervised_addresses(start: Start) -> None:
    address = start(policy(rate_limit=RateLimit(2, 3600)))
    with client_for(address) as client:
        for i in range(5):
            out = client.message("<carol@customer.example>", [BOB], HEADERS, macros={"i": f"R{i}"})
            assert out.reply == "continue"
        for _ in range(2):
            out = client.message("<carol@customer.example>", [SUPPORT], HEADERS)
            assert out.reply == "continue"
        out = client.message("<carol@customer.example>", [SUPPORT, BOB], HEADERS)
        assert out.rcpt_replies == ["451 4.7.1 Rate limit exceeded, try again later", "continue"]
        assert (out.reply, out.edits) == ("continue", [])  # bob's copy: untouched, unstamped


# --------------------------------------------------------------------------
# 4. Bounces are counted per reporting MTA, not in one bucket for the world


@pytest.mark.parametrize(
    ("sender", "client", "key"),
    [
        ("", "192.0.2.7", "<>@[192.0.2.7]"),
        ("<>", "192.0.2.7", "<>@[192.0.2.7]"),
        ("MAILER-DAEMON@mx.example.net", "198.51.100.1", "<>@[198.51.100.1]"),
        ("postmaster+x@Example.NET", "2001:db8::1", "<>@[2001:db8::1]"),
        ("MAILER-DAEMON", "192.0.2.8", "<>@[192.0.2.8]"),
        ("", "", "<>@[unknown]"),
        ("Carol+tag@Customer.Example", "192.0.2.7", "carol@customer.example"),
    ],
)
def test_rate_key(sender: str, client: str, key: str) -> None:
    assert rate_key(sender, client) == key


@pytest.mark.parametrize("sender", ["<>", "<MAILER-DAEMON@mx.example.net>", "<postmaster@a.example>"])
def test_bounces_from_one_mta_do_not_hold_another_mtas(start: Start, sender: str) -> None:
    address = start(policy(rate_limit=RateLimit(3, 3600)))
    with client_for(address, client_addr="192.0.2.10") as flooder:
        for i in range(3):
            assert flooder.message(sender, [SUPPORT], HEADERS, macros={"i": f"F{i}"}).reply == (
                "continue"
            )
        held = flooder.message(sender, [SUPPORT], HEADERS, macros={"i": "F9"})
        assert (held.stage, held.reply[:9]) == ("rcpt", "451 4.7.1")
    # Other MTAs' reports, with the very same sender, still get through.
    for other in ("198.51.100.20", "198.51.100.21"):
        with client_for(address, client_addr=other) as client:
            assert client.message(sender, [SUPPORT], HEADERS).reply == "continue"


# --------------------------------------------------------------------------
# 6. The stamp (SASL login, client address) never leaves with others' mail


def test_a_csrs_own_mail_to_a_customer_is_not_stamped(start: Start) -> None:
    address = start(policy())
    with client_for(address, client_addr="203.0.113.5") as client:
        client.values["{auth_authen}"] = "jane@example.com"
        headers = [("From", "Jane <jane@example.com>"), ("Subject", "test_no_stamp_leak"),
                   ("X-Casegate-Auth", "left alone: not our mail")]
        out = client.message("<jane@example.com>", ["<cust@outside.example>"], headers,
                             macros={"i": "S1"})
        assert (out.reply, out.edits) == ("continue", [])
        # To the support address (a reply to a case), the same login is stamped.
        out = client.message("<jane@example.com>", ["<support+CS0000001@example.com>"], headers,
                             macros={"i": "S2"})
        assert out.reply == "continue"
        assert out.changed_headers == [(1, "X-Casegate-Auth", "")]
        ((name, value),) = out.added_headers
        stamp = verify_stamp(value, secret=SECRET, max_age=None, now=WALL)
        assert name == STAMP_HEADER and stamp is not None
        assert (stamp.authen, stamp.client_addr, stamp.queue_id) == (
            "jane@example.com", "203.0.113.5", "S2",
        )  # fmt: skip


# --------------------------------------------------------------------------
# 3. The recipient gate: a Postfix policy service on the milter's own socket


def policy_query(sock: socket.socket, **attrs: str) -> str:
    """One policy request the way Postfix's smtpd sends it; the action returned."""
    request = {
        "request": "smtpd_access_policy",
        "protocol_state": "RCPT",
        "protocol_name": "ESMTP",
        "client_address": "127.0.0.2",
        "client_port": "40000",
        "recipient": "support@example.com",
        "server_port": "25",
        **attrs,
    }
    sock.sendall("".join(f"{k}={v}\n" for k, v in request.items()).encode() + b"\n")
    reply = b""
    while not reply.endswith(b"\n\n"):
        chunk = sock.recv(4096)
        assert chunk, f"connection closed after {reply!r}"
        reply += chunk
    (line,) = reply.decode().split("\n\n")[:1]
    assert line.startswith("action="), reply
    return line[len("action="):]


def test_gate_lets_a_recipient_in_only_while_the_clients_milter_session_is_open(
    start: Start, caplog: pytest.LogCaptureFixture
) -> None:
    address = start(policy())
    host, _, port = address.rpartition(":")
    caplog.set_level(logging.WARNING, logger="casegate")
    with socket.create_connection((host, int(port)), timeout=5) as gate:
        # No milter session for this client: the supervised recipient waits.
        assert policy_query(gate) == "451 4.3.0 casegate milter not in this session, try again later"
        milter = PostfixLikeClient.open(address)
        milter.negotiate()
        milter.connect_event(address="127.0.0.2", port=40000)
        milter.mail("<carol@customer.example>")  # answered: the connect was seen
        # Several requests on one connection, as Postfix keeps it open.
        assert policy_query(gate) == "DUNNO"
        assert policy_query(gate, recipient="support+CS0000001@example.com") == "DUNNO"
        # Another SMTP client from the same address (another port): not this session.
        assert policy_query(gate, client_port="40001").startswith("451 4.3.0")
        assert policy_query(gate, request="something_else") == "DUNNO"
        milter.quit()
        milter.close()
        deadline = time.monotonic() + 5
        while policy_query(gate) == "DUNNO":
            assert time.monotonic() < deadline, "milter session still counted after QUIT"
            time.sleep(0.01)
        assert policy_query(gate).startswith("451 4.3.0")
    assert "gate: no milter session for client [127.0.0.2]:40000 (server port 25)" in caplog.text


def test_policy_and_milter_connections_share_the_socket_without_confusion(start: Start) -> None:
    address = start(policy([Entry("@spam.example")]))
    host, _, port = address.rpartition(":")
    with socket.create_connection((host, int(port)), timeout=5) as bad:
        bad.sendall(b"request=smtpd_access_policy\nno equals sign here\n\n")
        assert bad.recv(100) == b""  # a malformed request closes the connection
    with client_for(address) as client:
        out = client.message("<a@spam.example>", [SUPPORT], HEADERS)
        assert out.rcpt_replies[0].startswith("550 5.7.1")


def test_a_mailbox_added_after_start_is_supervised_at_the_next_refresh() -> None:
    """The milter re-reads supervised addresses with the blacklist: a mailbox
    added while it runs is judged (and stamped) without a restart."""
    import asyncio

    from rules.blacklist import Blacklist

    mailboxes = ["support@example.com"]
    policy = StaticPolicy(Blacklist([]), list(mailboxes), entries_source=lambda: [],
                          supervised_source=lambda: list(mailboxes))
    assert not policy.is_supervised("billing@example.com")
    mailboxes.append("billing@example.com")
    asyncio.run(policy.refresh())
    assert policy.is_supervised("billing@example.com") and policy.is_supervised("billing+CS0000001@example.com")
    mailboxes.append("bad@nodot")  # a bad row is skipped, the rest still applies
    asyncio.run(policy.refresh())
    assert policy.is_supervised("support@example.com") and not policy.is_supervised("bad@nodot")
