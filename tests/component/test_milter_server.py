"""The milter on real sockets, driven by a Postfix-like client (tests/support/milterclient.py).

The server runs on its own event loop in a background thread, so each test
reads as the blocking conversation Postfix's smtpd would have with it.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import socket
import stat
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from miltertest import constants as c

from milter.policy import Message, RateLimit, StaticPolicy, parse_from
from milter.protocol import Action, MacroStage, RejectCode, Step
from milter.server import MilterServer, serve
from milter.session import MACRO_REQUESTS, WANTED_STEPS
from rules.blacklist import Blacklist, Entry
from rules.logctx import QueueIdFilter
from rules.stamp import verify_stamp
from tests.support.milterclient import Outcome, PostfixLikeClient, describe

SECRET = b"component-test-secret"
WALL = 1_700_000_000
SUPPORT = "<support@example.com>"
T = TypeVar("T")


class FakeClock:
    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class LoopThread:
    """An event loop running in a background thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Awaitable[T], timeout: float = 10.0) -> T:
        async def wrapper() -> T:
            return await coro

        return asyncio.run_coroutine_threadsafe(wrapper(), self.loop).result(timeout)

    def stop(self) -> None:
        async def cancel_rest() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        self.run(cancel_rest())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


def bound_address(server: asyncio.Server) -> str:
    name = server.sockets[0].getsockname()
    if isinstance(name, tuple):
        return f"{name[0]}:{name[1]}"
    return f"unix:{name}"


@pytest.fixture
def loop_thread() -> Iterator[LoopThread]:
    lt = LoopThread()
    try:
        yield lt
    finally:
        lt.stop()


Start = Callable[..., str]


@pytest.fixture
def start(loop_thread: LoopThread) -> Iterator[Start]:
    """start(policy, listen="127.0.0.1:0", **serve_options) -> address for clients."""
    servers: list[asyncio.Server] = []

    def _start(policy: Any, listen: str = "127.0.0.1:0", **options: Any) -> str:
        options.setdefault("wall_clock", lambda: WALL)
        server = loop_thread.run(serve(policy, listen, secret=SECRET, **options))
        servers.append(server)
        return bound_address(server)

    yield _start

    async def close(server: asyncio.Server) -> None:
        server.close()
        await server.wait_closed()

    for server in servers:
        loop_thread.run(close(server))


def make_policy(
    entries: list[Entry] | None = None, *, clock: FakeClock | None = None, **kw: Any
) -> StaticPolicy:
    return StaticPolicy(
        Blacklist(entries or []),
        ["support@example.com", "@help.example.com"],
        clock=clock or FakeClock(),
        **kw,
    )


def open_client(address: str, **negotiate: Any) -> PostfixLikeClient:
    client = PostfixLikeClient.open(address)
    client.negotiate(**negotiate)
    client.connect_event(hostname="client.example", address="127.0.0.2")
    return client


CLEAN_HEADERS = [
    ("From", "Carol Customer <carol@customer.example>"),
    ("To", "support@example.com"),
    ("Subject", "test_clean_message: my printer is on fire"),
]


def clean_message(client: PostfixLikeClient, qid: str = "4AbC", **macros: str) -> Outcome:
    return client.message(
        "<carol@customer.example>",
        [SUPPORT],
        CLEAN_HEADERS,
        macros={"i": qid, **macros},
    )


def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met before the deadline")
        time.sleep(0.01)


# --------------------------------------------------------------------------
# Negotiation


def test_negotiates_version_6_actions_and_macros(start: Start) -> None:
    address = start(make_policy())
    with PostfixLikeClient.open(address) as client:
        actions, protocol = client.negotiate()
        assert client.version == 6
        assert actions == int(
            Action.ADDHDRS | Action.CHGHDRS | Action.DELRCPT | Action.SETSYMLIST
        )
        assert actions & c.SMFIF_QUARANTINE == 0
        assert protocol == int(WANTED_STEPS)
        assert protocol & (c.SMFIP_NOMAIL | c.SMFIP_NORCPT | c.SMFIP_NOHDRS | c.SMFIP_NOEOH) == 0
        assert client.macro_lists == {
            int(MacroStage.CONNECT): ["j", "{client_addr}", "{client_name}"],
            int(MacroStage.ENVFROM): ["i", "{auth_authen}", "{auth_type}", "{mail_addr}"],
            int(MacroStage.ENVRCPT): ["i", "{rcpt_addr}"],
            int(MacroStage.EOH): ["i"],
            int(MacroStage.EOM): ["i"],
        }
        assert dict(MACRO_REQUESTS)[MacroStage.ENVFROM][0] == "i"


def test_only_steps_the_mta_offers_are_requested(start: Start) -> None:
    # An MTA that cannot skip replies (no SMFIP_NR_*): every header gets one.
    address = start(make_policy())
    with PostfixLikeClient.open(address) as client:
        _, protocol = client.negotiate(protocol=0x3FF & ~c.SMFIP_NR_HDR)
        assert protocol == int(Step.NOHELO | Step.NOBODY | Step.NOUNKNOWN)
        assert describe(client.connect_event()) == "continue"
        assert describe(client.mail("<carol@customer.example>")) == "continue"
        assert describe(client.rcpt(SUPPORT)) == "continue"
        assert describe(client.header("Subject", "one reply per header")) == "continue"
        client.abort()
        outcome = clean_message(client)
        assert outcome.reply == "continue"
        assert [name for name, _ in outcome.added_headers] == ["X-Casegate-Auth"]


def test_mta_without_symlist_still_gets_a_stamp(start: Start) -> None:
    # Milter protocol 2 style: no SETSYMLIST, the MTA sends its default macros.
    address = start(make_policy())
    with PostfixLikeClient.open(address) as client:
        actions, _ = client.negotiate(actions=0x3F, version=2)
        assert client.version == 2
        assert client.macro_lists == {}
        assert actions == int(Action.ADDHDRS | Action.CHGHDRS | Action.DELRCPT)
        client.connect_event()
        outcome = clean_message(client, qid="V2QID", **{"{auth_authen}": "alice@example.com"})
        stamp = verify_stamp(outcome.added_headers[0][1], secret=SECRET, max_age=None, now=WALL)
        assert stamp is not None
        assert (stamp.authen, stamp.queue_id) == ("alice@example.com", "V2QID")


# --------------------------------------------------------------------------
# Blacklist


def test_blacklisted_sender_is_rejected_at_rcpt_to_a_supervised_address(start: Start) -> None:
    address = start(make_policy([Entry("@spam.example", reason="junk")]))
    with open_client(address) as client:
        outcome = client.message(
            "<Anyone+tag@SPAM.example>", [SUPPORT], CLEAN_HEADERS, macros={"i": "4AbC"}
        )
        assert (outcome.stage, outcome.reply) == (
            "rcpt",
            "550 5.7.1 Message rejected by the recipient's policy",
        )
        # The same connection carries on with the next message.
        assert clean_message(client, qid="5XyZ").reply == "continue"


def test_blacklisted_sender_over_a_unix_socket(tmp_path: Path, loop_thread: LoopThread) -> None:
    path = tmp_path / "milter.sock"
    # A stale socket file left behind by a crash is replaced.
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))
    stale.close()
    assert path.is_socket()

    server = MilterServer(
        make_policy([Entry("spammer@example.com")]), f"unix:{path}", secret=SECRET
    )
    loop_thread.run(server.start())
    try:
        assert server.addresses == [f"unix:{path}"]
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o660
        with open_client(f"unix:{path}") as client:
            outcome = client.message("<spammer@example.com>", [SUPPORT], CLEAN_HEADERS)
            assert outcome.reply.startswith("550 5.7.1 ")
            assert clean_message(client).reply == "continue"
        # A second server must not steal a live socket.
        with pytest.raises(OSError) as err:
            loop_thread.run(MilterServer(make_policy(), f"unix:{path}", secret=SECRET).start())
        assert err.value.errno == errno.EADDRINUSE
    finally:
        loop_thread.run(server.close())
    assert not path.exists()


def test_unix_socket_mode_is_configurable(tmp_path: Path, start: Start) -> None:
    path = tmp_path / "open.sock"
    start(make_policy(), f"unix:{path}", socket_mode=0o666)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o666


def test_a_regular_file_is_never_replaced_by_the_socket(
    tmp_path: Path, loop_thread: LoopThread
) -> None:
    path = tmp_path / "not-a-socket"
    path.write_text("precious")
    with pytest.raises(FileExistsError):
        loop_thread.run(serve(make_policy(), f"unix:{path}", secret=SECRET))
    assert path.read_text() == "precious"


def test_subject_pattern_is_rejected_at_end_of_headers(start: Start) -> None:
    address = start(make_policy([Entry("@example.net", subject=r"\bviagra\b")]))
    with open_client(address) as client:
        headers = [
            ("From", "x@example.net"),
            ("Subject", "=?utf-8?q?test=5Fsubject=5Fpattern_cheap_VIAGRA?="),
        ]
        outcome = client.message("<x@example.net>", [SUPPORT], headers, macros={"i": "4AbC"})
        assert (outcome.stage, outcome.reply) == (
            "eoh",
            "550 5.7.1 Message rejected by the recipient's policy",
        )
        # The same sender with another subject gets through.
        headers = [("From", "x@example.net"), ("Subject", "test_subject_pattern: hello")]
        outcome = client.message("<x@example.net>", [SUPPORT], headers, macros={"i": "5XyZ"})
        assert outcome.reply == "continue"


def test_blacklisted_from_header_is_rejected_at_end_of_headers(start: Start) -> None:
    # The envelope sender was rewritten (a forwarder); From: still names them.
    address = start(make_policy([Entry("spammer@example.com")]))
    with open_client(address) as client:
        headers = [("From", "Spammer <spammer@example.com>"), ("Subject", "test_from_blacklist")]
        outcome = client.message("<srs0=abc@forwarder.example>", [SUPPORT], headers)
        assert (outcome.stage, outcome.reply[:9]) == ("eoh", "550 5.7.1")


# --------------------------------------------------------------------------
# From: headers


@pytest.mark.parametrize(
    "from_headers",
    [
        [("From", "a@customer.example"), ("From", "b@customer.example")],
        [("From", "a@customer.example, b@customer.example")],
        [("From", "A <a@customer.example>,\n\tB <b@customer.example>")],
        [("From", "team: a@customer.example, b@customer.example;")],
        [("From", "undisclosed-recipients:;")],
    ],
    ids=["two-headers", "two-addresses", "folded-two-addresses", "group", "empty-group"],
)
def test_multiple_from_is_rejected(start: Start, from_headers: list[tuple[str, str]]) -> None:
    address = start(make_policy())
    with open_client(address) as client:
        headers = [*from_headers, ("Subject", "test_multiple_from")]
        outcome = client.message("<a@customer.example>", [SUPPORT], headers)
        assert (outcome.stage, outcome.reply) == (
            "eoh",
            "550 5.7.1 multiple From: addresses are not accepted",
        )


@pytest.mark.parametrize(
    "value",
    [
        '"Doe, John" <john@customer.example>',
        "=?utf-8?q?Doe=2C_John?= <john@customer.example>",
        "john@customer.example (John, the customer)",
    ],
)
def test_one_from_with_a_comma_in_the_name_is_fine(start: Start, value: str) -> None:
    address = start(make_policy())
    with open_client(address) as client:
        headers = [("From", value), ("Subject", "test_one_from")]
        assert client.message("<john@customer.example>", [SUPPORT], headers).reply == "continue"


@pytest.mark.parametrize(
    ("values", "problem", "addresses"),
    [
        ([], None, []),
        (["Carol <carol@customer.example>"], None, ["carol@customer.example"]),
        (["carol@customer.example"], None, ["carol@customer.example"]),
        (['"Doe, John" <john@x.example>'], None, ["john@x.example"]),
        (["=?utf-8?q?Doe=2C_John?= <john@x.example>"], None, ["john@x.example"]),
        (["john@x.example (John, Esq.)"], None, ["john@x.example"]),
        (['"a:b;c"@x.example'], None, ['"a:b;c"@x.example']),
        (["a@x.example, b@x.example"], "2 addresses in From:", ["a@x.example", "b@x.example"]),
        (["g: a@x.example;"], "group syntax in From:", ["a@x.example"]),
        (["a@x.example", "b@x.example"], "2 From: headers", ["a@x.example", "b@x.example"]),
    ],
)
def test_parse_from(values: list[str], problem: str | None, addresses: list[str]) -> None:
    assert parse_from(values) == (problem, addresses)


# --------------------------------------------------------------------------
# End of message: the stamp


def test_clean_message_is_stamped_and_forged_control_headers_deleted(start: Start) -> None:
    address = start(make_policy())
    with open_client(address) as client:
        headers = [
            ("X-Casegate-Auth", "v=1; authen=ceo@example.com; forged"),
            *CLEAN_HEADERS,
            ("x-casegate-auth", "second forged copy"),
            ("X-Casegate-Case", "CS0000001"),
            ("X-Casegatelike", "not ours: no hyphen after the prefix"),
        ]
        outcome = client.message(
            "<carol@customer.example>", [SUPPORT], headers, macros={"i": "4AbC"}
        )
    assert outcome.reply == "continue"
    # Deleted from the last occurrence to the first, per header name.
    assert outcome.changed_headers == [
        (2, "X-Casegate-Auth", ""),
        (1, "X-Casegate-Auth", ""),
        (1, "X-Casegate-Case", ""),
    ]
    ((name, value),) = outcome.added_headers
    assert name == "X-Casegate-Auth"
    stamp = verify_stamp(value, secret=SECRET, max_age=300, now=WALL + 5)
    assert stamp is not None
    assert (stamp.authen, stamp.client_addr, stamp.queue_id, stamp.timestamp) == (
        "",
        "127.0.0.2",
        "4AbC",
        WALL,
    )
    # Edits come before the final reply, as Postfix expects at end of message.
    assert [code for code, _ in outcome.edits] == ["m", "m", "m", "h"]


def test_sasl_identity_goes_into_the_stamp(start: Start) -> None:
    address = start(make_policy())
    with open_client(address) as client:
        outcome = clean_message(
            client, qid="AUTH1", **{"{auth_authen}": "alice@example.com", "{auth_type}": "PLAIN"}
        )
    stamp = verify_stamp(outcome.added_headers[0][1], secret=SECRET, max_age=None, now=WALL)
    assert stamp is not None
    assert stamp.authen == "alice@example.com"


def test_queue_id_known_only_from_rcpt_on(start: Start) -> None:
    # Postfix's default smtpd_delay_open_until_valid_rcpt: no "i" at MAIL FROM.
    address = start(make_policy())
    with open_client(address) as client:
        assert describe(client.mail("<carol@customer.example>")) == "continue"
        client.values["i"] = "LATE1"
        assert describe(client.rcpt(SUPPORT)) == "continue"
        for name, value in CLEAN_HEADERS:
            client.header(name, value)
        assert describe(client.eoh()) == "continue"
        replies = client.eom()
    value = next(f["value"] for code, f in replies if code == "h")
    stamp = verify_stamp(value, secret=SECRET, max_age=None, now=WALL)
    assert stamp is not None and stamp.queue_id == "LATE1"


def test_state_is_per_message_on_a_reused_connection(start: Start) -> None:
    address = start(make_policy())
    with open_client(address) as client:
        # First message: a forged header and an extra From:, then the client gives up.
        client.values["i"] = "FIRST"
        client.values["{auth_authen}"] = "alice@example.com"
        assert describe(client.mail("<alice@example.com>")) == "continue"
        assert describe(client.rcpt(SUPPORT)) == "continue"
        client.header("X-Casegate-Auth", "forged")
        client.header("From", "a@customer.example")
        client.abort()
        # Second message: nothing of the first one remains.
        del client.values["{auth_authen}"]
        headers = [("From", "b@customer.example"), ("Subject", "test_reused_connection")]
        outcome = client.message("<b@customer.example>", [SUPPORT], headers, macros={"i": "SECOND"})
        assert outcome.reply == "continue"
        assert outcome.changed_headers == []
        stamp = verify_stamp(outcome.added_headers[0][1], secret=SECRET, max_age=None, now=WALL)
        assert stamp is not None
        assert (stamp.authen, stamp.queue_id) == ("", "SECOND")
        # Third message right after a completed one, without ABORT in between.
        assert clean_message(client, qid="THIRD").changed_headers == []
        client.quit()


# --------------------------------------------------------------------------
# Rate limit


def test_rate_limit_tempfails_and_recovers_after_the_window(start: Start) -> None:
    clock = FakeClock()
    policy = make_policy(clock=clock, rate_limit=RateLimit(messages=3, window=60))
    address = start(policy)
    with open_client(address) as client:
        for i in range(3):
            assert clean_message(client, qid=f"OK{i}").reply == "continue"
            clock.advance(1)
        # The fourth message within the window: held, not bounced, at RCPT.
        outcome = clean_message(client, qid="HELD")
        assert outcome.stage == "rcpt"
        assert outcome.reply == "451 4.7.1 Rate limit exceeded, try again later"
        # Plus-tags and case do not make a new sender.
        outcome = client.message(
            "<Carol+x@Customer.example>", [SUPPORT], CLEAN_HEADERS, macros={"i": "TAG"}
        )
        assert outcome.reply.startswith("451 4.7.1")
        # Other recipients of the same message are not held.
        outcome = client.message(
            "<carol@customer.example>",
            [SUPPORT, "<staff@example.com>"],
            CLEAN_HEADERS,
            macros={"i": "MIXED"},
        )
        assert outcome.rcpt_replies[0].startswith("451 4.7.1")
        assert outcome.rcpt_replies[1] == "continue"
        assert outcome.reply == "continue"
        # Another sender is not affected, nor are authenticated senders.
        other = client.message(
            "<dave@customer.example>", [SUPPORT], CLEAN_HEADERS, macros={"i": "DAVE"}
        )
        assert other.reply == "continue"
        staff = clean_message(client, qid="STAFF", **{"{auth_authen}": "carol@customer.example"})
        assert staff.reply == "continue"
        client.values.pop("{auth_authen}")
        # After the window, the sender gets through again.
        clock.advance(60)
        assert clean_message(client, qid="AGAIN").reply == "continue"


def test_only_accepted_messages_use_up_the_allowance(start: Start) -> None:
    clock = FakeClock()
    address = start(make_policy(clock=clock, rate_limit=RateLimit(messages=1, window=60)))
    with open_client(address) as client:
        two_froms = [("From", "a@customer.example"), ("From", "b@customer.example")]
        rejected = client.message("<carol@customer.example>", [SUPPORT], two_froms)
        assert rejected.reply.startswith("550")
        client.mail("<carol@customer.example>")
        client.rcpt(SUPPORT)
        client.abort()
        assert clean_message(client, qid="FIRST").reply == "continue"
        assert clean_message(client, qid="SECOND").reply.startswith("451 4.7.1")


def test_one_message_to_several_supervised_addresses_counts_once(start: Start) -> None:
    clock = FakeClock()
    address = start(make_policy(clock=clock, rate_limit=RateLimit(messages=1, window=60)))
    with open_client(address) as client:
        outcome = client.message(
            "<carol@customer.example>",
            [SUPPORT, "<billing@help.example.com>"],
            CLEAN_HEADERS,
            macros={"i": "BOTH"},
        )
        assert outcome.rcpt_replies == ["continue", "continue"]
        assert clean_message(client, qid="NEXT").reply.startswith("451 4.7.1")


# --------------------------------------------------------------------------
# A store that misbehaves


def test_failing_entries_source_keeps_the_last_list(
    start: Start, caplog: pytest.LogCaptureFixture
) -> None:
    clock = FakeClock()
    calls: list[str] = []
    state = {"mode": "ok"}

    def source() -> list[Entry]:
        calls.append(state["mode"])
        if state["mode"] == "fail":
            raise RuntimeError("database is locked")
        if state["mode"] == "new":
            return [Entry("@spam.example"), Entry("@other.example")]
        return [Entry("@spam.example")]

    policy = make_policy(clock=clock, entries_source=source, refresh_interval=5)
    address = start(policy)
    caplog.set_level(logging.WARNING, logger="casegate")
    with open_client(address) as client:
        spam = "<x@spam.example>"
        assert client.message(spam, [SUPPORT], CLEAN_HEADERS).reply.startswith("550")
        assert calls == ["ok"]
        # Within the refresh interval the source is not asked again.
        clock.advance(4)
        assert client.message(spam, [SUPPORT], CLEAN_HEADERS).reply.startswith("550")
        assert calls == ["ok"]
        # The store fails: the last list stays, and clean mail still flows.
        state["mode"] = "fail"
        clock.advance(2)
        assert client.message(spam, [SUPPORT], CLEAN_HEADERS).reply.startswith("550")
        assert clean_message(client).reply == "continue"
        assert calls == ["ok", "fail"]
        assert policy.refresh_failures == 1
        assert "database is locked" in caplog.text
        # A failed refresh waits for the interval too (no hammering a sick store).
        assert clean_message(client).reply == "continue"
        assert calls == ["ok", "fail"]
        # The store recovers: the new list applies.
        state["mode"] = "new"
        clock.advance(5)
        assert client.message("<x@other.example>", [SUPPORT], CLEAN_HEADERS).reply.startswith("550")
        assert calls == ["ok", "fail", "new"]


def test_slow_entries_source_does_not_hold_mail(start: Start) -> None:
    release = threading.Event()

    def slow_source() -> list[Entry]:
        release.wait(10)
        return [Entry("@spam.example")]

    policy = make_policy(entries_source=slow_source, refresh_timeout=0.2)
    address = start(policy)
    try:
        with open_client(address) as client:
            began = time.monotonic()
            assert clean_message(client).reply == "continue"
            # The spammer is not known yet, and the next message does not wait.
            spam = client.message("<x@spam.example>", [SUPPORT], CLEAN_HEADERS, macros={"i": "Q2"})
            assert spam.reply == "continue"
            assert time.monotonic() - began < 2
            release.set()
            wait_until(lambda: len(policy.blacklist) == 1)
            assert client.message("<x@spam.example>", [SUPPORT], CLEAN_HEADERS).reply[:3] == "550"
    finally:
        release.set()


def test_async_entries_source(start: Start) -> None:
    async def source() -> list[Entry]:
        await asyncio.sleep(0)
        return [Entry("@spam.example")]

    address = start(make_policy(entries_source=source))
    with open_client(address) as client:
        assert client.message("<x@spam.example>", [SUPPORT], CLEAN_HEADERS).reply[:3] == "550"


class ExplodingPolicy(StaticPolicy):
    def check_headers(self, message: Message) -> Any:
        if "explode" in " ".join(message.subjects):
            raise RuntimeError("bug in a rule")
        return super().check_headers(message)


def test_a_policy_bug_tempfails_the_message_only(
    start: Start, caplog: pytest.LogCaptureFixture
) -> None:
    policy = ExplodingPolicy(Blacklist(), ["support@example.com"], clock=FakeClock())
    address = start(policy)
    caplog.set_level(logging.INFO, logger="casegate")
    caplog.handler.addFilter(QueueIdFilter())
    with open_client(address) as client:
        headers = [("From", "a@customer.example"), ("Subject", "test_policy_bug explode")]
        outcome = client.message("<a@customer.example>", [SUPPORT], headers, macros={"i": "BUG1"})
        assert (outcome.stage, outcome.reply) == (
            "eoh",
            "451 4.3.0 Temporary failure, try again later",
        )
        assert clean_message(client, qid="AFTER").reply == "continue"
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors and all(r.queue_id == "BUG1" for r in errors)  # type: ignore[attr-defined]
    assert "bug in a rule" in caplog.text


# --------------------------------------------------------------------------
# Garbage, logs, shutdown


@pytest.mark.parametrize(
    "garbage",
    [
        b"\xff\xff\xff\xffgarbage",
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"\x00\x00\x00\x00",
        b"\x00\x00\x00\x01Z",  # unknown command
        b"\x00\x00\x00\x01Q",  # QUIT before negotiation
    ],
)
def test_garbage_closes_the_connection_and_the_server_survives(
    start: Start, garbage: bytes
) -> None:
    address = start(make_policy())
    with PostfixLikeClient.open(address) as bad:
        bad.raw(garbage)
        bad.sock.settimeout(5)
        assert bad.sock.recv(100) == b""  # closed by the server
    with open_client(address) as client:
        assert clean_message(client).reply == "continue"


def test_garbage_in_the_middle_of_a_message(start: Start) -> None:
    address = start(make_policy())
    with open_client(address) as client:
        assert describe(client.mail("<a@customer.example>")) == "continue"
        client.raw(b"\x00\x00\x00\x03M\xff\xfe")  # MAIL args without NUL
        client.sock.settimeout(5)
        assert client.sock.recv(100) == b""
    with open_client(address) as client:
        assert clean_message(client).reply == "continue"


def test_every_log_line_carries_the_queue_id(
    start: Start, caplog: pytest.LogCaptureFixture
) -> None:
    def source() -> list[Entry]:
        raise RuntimeError("store down")

    policy = make_policy(
        [Entry("@spam.example"), Entry("@example.net", subject="viagra")],
        entries_source=source,
        rate_limit=RateLimit(1, 60),
    )
    address = start(policy)
    caplog.set_level(logging.DEBUG, logger="casegate")
    caplog.handler.addFilter(QueueIdFilter())
    with open_client(address) as client:
        client.message("<x@spam.example>", [SUPPORT], CLEAN_HEADERS, macros={"i": "Q1"})
        client.message("<x@example.net>", [SUPPORT], [("Subject", "viagra")], macros={"i": "Q2"})
        clean_message(client, qid="Q3")
        clean_message(client, qid="Q4")  # rate limited
        client.quit()
    with PostfixLikeClient.open(address) as bad:
        bad.raw(b"garbage!")
        bad.sock.settimeout(5)
        assert bad.sock.recv(10) == b""
    records = [
        r
        for r in caplog.records
        if r.name.startswith("casegate.milter") and "listening on" not in r.getMessage()
    ]
    expected = [
        ("Q1", "blacklist source failed"),
        ("Q1", "reject at RCPT TO"),
        ("Q2", "reject at end of headers"),
        ("Q3", "stamp authen=-"),
        ("Q4", "tempfail at RCPT TO"),
        ("NOQUEUE", "milter protocol error"),
    ]
    seen = [(r.queue_id, r.getMessage()) for r in records]  # type: ignore[attr-defined]
    for qid, prefix in expected:
        assert any(q == qid and m.startswith(prefix) for q, m in seen), (qid, prefix, seen)
    # Lines outside a message say NOQUEUE, as Postfix's own log does: none goes without.
    assert all(q not in ("", "-") for q, _ in seen), seen


def test_close_ends_open_connections(loop_thread: LoopThread) -> None:
    server = MilterServer(make_policy(), "127.0.0.1:0", secret=SECRET)
    loop_thread.run(server.start())
    (address,) = server.addresses
    client = open_client(address)
    try:
        assert describe(client.mail("<a@customer.example>")) == "continue"
        began = time.monotonic()
        loop_thread.run(server.close())
        assert time.monotonic() - began < 5
        client.sock.settimeout(5)
        assert client.sock.recv(100) == b""
    finally:
        client.close()


def test_idle_connection_times_out(start: Start) -> None:
    address = start(make_policy(), read_timeout=0.2)
    with open_client(address) as client:
        client.sock.settimeout(5)
        assert client.sock.recv(100) == b""


def test_serve_reports_the_bound_port(loop_thread: LoopThread) -> None:
    server = loop_thread.run(serve(make_policy(), "127.0.0.1:0", secret=SECRET))
    try:
        host, port = server.sockets[0].getsockname()[:2]
        assert host == "127.0.0.1" and port > 0
        with open_client(f"{host}:{port}") as client:
            assert clean_message(client).reply == "continue"
    finally:

        async def close() -> None:
            server.close()
            await server.wait_closed()

        loop_thread.run(close())


def test_reject_types_are_what_postfix_accepts() -> None:
    # The 5xx used at MAIL and EOH, the 4xx at RCPT: Postfix's own check.
    from milter.policy import MULTIPLE_FROM, RATE_LIMITED, REJECT_BLACKLIST

    assert isinstance(REJECT_BLACKLIST, RejectCode)
    assert isinstance(MULTIPLE_FROM, RejectCode)
    for reply in (REJECT_BLACKLIST.reply, MULTIPLE_FROM.reply, RATE_LIMITED.reply):
        text = str(reply)
        assert text[0] in "45" and text[4] == text[0] and text[3] == " "
