"""The SMTP edge on a real socket: XFORWARD, replies, never a 5xx after the queue."""

from __future__ import annotations

import asyncio
import logging
import smtplib
import threading
from collections.abc import Callable, Iterator

import pytest

from rules import replies
from rules.logctx import queue_id
from rules.replies import Reply
from smtpd_hook.delivery import Delivery
from smtpd_hook.server import FilterHandler, FilterServer, xtext_decode


class Running:
    """A FilterServer on its own loop thread at port 0."""

    def __init__(self, process: Callable[[Delivery], Reply]) -> None:
        self.loop = asyncio.new_event_loop()
        self.handler = FilterHandler(process)
        self.server = FilterServer(self.handler, hostname="filter.test")
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        fut = asyncio.run_coroutine_threadsafe(self.server.start("127.0.0.1", 0), self.loop)
        self.port = fut.result(5)[1]

    def drain(self) -> None:
        asyncio.run_coroutine_threadsafe(self.server.drain(timeout=10), self.loop).result(15)

    def close(self) -> None:
        self.drain()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


@pytest.fixture
def running() -> Iterator[Callable[[Callable[[Delivery], Reply]], Running]]:
    made: list[Running] = []

    def start(process: Callable[[Delivery], Reply]) -> Running:
        made.append(Running(process))
        return made[-1]

    yield start
    for r in made:
        r.close()


def send(port: int, *, xforward: str | None = None, data: bytes = b"Subject: x\r\n\r\nbody\r\n"):
    client = smtplib.SMTP("127.0.0.1", port, timeout=10)
    try:
        code, ehlo = client.ehlo("postfix.test")
        assert code == 250
        if xforward:
            assert client.docmd("XFORWARD", xforward)[0] == 250
        client.mail("sender@client.test")
        client.rcpt("support@example.com")
        return ehlo, client.data(data)
    finally:
        client.close()


def test_xforward_is_advertised_and_read(running) -> None:
    seen: list[Delivery] = []
    r = running(lambda d: seen.append(d) or replies.OK)
    ehlo, (code, _) = send(r.port, xforward="NAME=client.test ADDR=127.0.0.2 IDENT=4AbCdE HELO=h+2Ex")
    assert b"XFORWARD NAME ADDR PORT PROTO HELO IDENT SOURCE" in ehlo
    assert code == 250
    d = seen[0]
    assert (d.client_addr, d.queue_id, d.client_name, d.helo) == ("127.0.0.2", "4AbCdE", "client.test", "h.x")
    assert d.mail_from == "sender@client.test" and d.rcpt_tos == ("support@example.com",)
    assert d.data == b"Subject: x\r\n\r\nbody\r\n"


def test_xforward_unavailable_and_bad_attribute(running) -> None:
    seen: list[Delivery] = []
    r = running(lambda d: seen.append(d) or replies.OK)
    send(r.port, xforward="ADDR=[UNAVAILABLE] IDENT=Q1")
    assert seen[0].client_addr == "" and seen[0].queue_id == "Q1"
    client = smtplib.SMTP("127.0.0.1", r.port, timeout=10)
    client.ehlo("x")
    assert client.docmd("XFORWARD", "BOGUS=1")[0] == 501
    client.close()


def test_exception_is_451_never_500(running, caplog) -> None:
    def boom(d: Delivery) -> Reply:
        raise RuntimeError("bug mid-way")

    r = running(boom)
    with caplog.at_level(logging.ERROR):
        _, (code, text) = send(r.port, xforward="IDENT=QBOOM")
    assert code == 451 and text.startswith(b"4.3.0")
    assert any("bug mid-way" in (rec.exc_text or "") or "unexpected" in rec.message
               for rec in caplog.records)


def test_a_5xx_from_the_processor_becomes_451(running) -> None:
    r = running(lambda d: replies.REJECT_POLICY)
    _, (code, _) = send(r.port)
    assert code == 451


def test_queue_id_is_on_log_lines(running, caplog) -> None:
    got: list[str] = []

    def process(d: Delivery) -> Reply:
        got.append(queue_id.get())
        return replies.OK

    r = running(process)
    send(r.port, xforward="IDENT=7F3A21B9C")
    assert got == ["7F3A21B9C"]


def test_drain_finishes_what_was_accepted(running) -> None:
    started, release = threading.Event(), threading.Event()

    def slow(d: Delivery) -> Reply:
        started.set()
        release.wait(10)
        return replies.OK

    r = running(slow)
    result: list[object] = []
    t = threading.Thread(target=lambda: result.append(send(r.port)[1]))
    t.start()
    assert started.wait(5)
    drained = asyncio.run_coroutine_threadsafe(r.server.drain(timeout=10), r.loop)
    # New connections are refused while the accepted message finishes.
    with pytest.raises(OSError):
        smtplib.SMTP("127.0.0.1", r.port, timeout=2)
    release.set()
    drained.result(10)
    t.join(10)
    assert result and result[0][0] == 250


@pytest.mark.parametrize(("raw", "decoded"), [("a+2Bb", "a+b"), ("plain", "plain"), ("x+2", "x+2"),
                                              ("+3D+3D", "==")])
def test_xtext(raw: str, decoded: str) -> None:
    assert xtext_decode(raw) == decoded


def test_enrich_runs_only_for_the_deliveries_it_is_for(running) -> None:
    """serve verifies DKIM (``enrich``, in the default pool) only for signed
    mail: the others go straight to the processor, without the thread hop."""
    seen: list[Delivery] = []
    enriched: list[bytes] = []
    r = running(lambda d: seen.append(d) or replies.OK)

    def enrich(d: Delivery) -> Delivery:
        enriched.append(d.data)
        return d

    r.handler.enrich = enrich
    r.handler.enrich_when = lambda d: d.data.startswith(b"DKIM-Signature:")
    assert send(r.port)[1][0] == 250
    assert send(r.port, data=b"DKIM-Signature: v=1\r\nSubject: x\r\n\r\nbody\r\n")[1][0] == 250
    assert len(seen) == 2 and enriched == [seen[1].data]


@pytest.mark.parametrize("arg", [
    "<ann@customer.test>", "<ann@customer.test> SIZE=123 BODY=8BITMIME", "<A.B+tag@Example.COM>",
    "<o'hara@x.test>  SMTPUTF8", "<a@b.c> (comment) SIZE=1", "<a@b.c>SIZE=1", "<a..b@c.d>",
    "<\"q s\"@c.d>", "<a@[127.0.0.1]>", "<ü@x.test>", "<>", "<> SIZE=1", "<@relay:a@b.c>",
    "<a@b.c", "a@b.c SIZE=1", " <a@b.c>", "", "<" + "x" * 80 + "@b.c>",
])
def test_getaddr_reads_paths_as_aiosmtpd_does(arg: str) -> None:
    from aiosmtpd.smtp import SMTP

    from smtpd_hook.server import FilterSMTP

    ours, theirs = FilterSMTP(object()), SMTP(object())
    assert ours._getaddr(arg) == theirs._getaddr(arg)
    ours.local_part_limit = theirs.local_part_limit = 64
    assert ours._getaddr(arg) == theirs._getaddr(arg)


def _raw_data(port: int, content: bytes) -> tuple[bytes, bytes]:
    """MAIL, RCPT, DATA, then ``content`` as it is (the client's dot-stuffing
    and the final ``.`` line included); the reply to DATA's end, and to NOOP."""
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        f = sock.makefile("rb")
        assert f.readline().startswith(b"220")
        sock.sendall(b"HELO postfix.test\r\n")
        assert f.readline().startswith(b"250")
        for cmd, code in ((b"MAIL FROM:<a@client.test>", b"250"), (b"RCPT TO:<support@example.com>", b"250"),
                          (b"DATA", b"354")):
            sock.sendall(cmd + b"\r\n")
            assert f.readline().startswith(code), cmd
        for i in range(0, len(content), 65536):  # in pieces, as a client writes them
            sock.sendall(content[i:i + 65536])
        reply = f.readline()
        sock.sendall(b"NOOP\r\n")
        return reply, f.readline()


def _unstuffed(content: bytes) -> bytes:
    """RFC 5321 4.5.2, line by line: what the server must hand on."""
    lines = content.split(b"\r\n")
    assert lines[-2:] == [b".", b""]
    return b"".join((line[1:] if line.startswith(b".") else line) + b"\r\n" for line in lines[:-2])


@pytest.mark.parametrize("content", [
    b".\r\n",  # an empty message
    b"Subject: x\r\n.\r\n",  # one line
    b"\r\n.\r\n",  # one empty line
    b"Subject: x\r\n\r\nA sentence.\r\nAnother one.\r\n.\r\n",  # lines ending in a full stop
    b"Subject: x\r\n\r\n..\r\n...\r\n..x\r\n.\r\n",  # dot-stuffed lines
    b"..\r\n.\r\n",  # a stuffed dot first
    b"Subject: x\r\n\r\nbare\n.\r\nlf.\n.\r\n.x.\r\n.\r\n",  # bare LF: no line start, no end
    b"Subject: x\r\n\r\n" + b"QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo=\r\n" * 70000 + b".\r\n",  # 2.6 MB, no dot
    b"Subject: x\r\n\r\n" + (b"line.\r\n" + b"y" * 300000 + b".\r\n") * 8 + b".\r\n",
])
def test_data_content_as_sent_dot_stuffing_undone(running, content: bytes) -> None:
    seen: list[Delivery] = []
    r = running(lambda d: seen.append(d) or replies.OK)
    reply, noop = _raw_data(r.port, content)
    assert reply.startswith(b"250") and noop.startswith(b"250")  # nothing read past the "." line
    assert seen[0].data == _unstuffed(content)


def test_data_with_a_line_over_the_limit_is_refused_whole(running) -> None:
    from smtpd_hook.server import FilterSMTP

    seen: list[Delivery] = []
    r = running(lambda d: seen.append(d) or replies.OK)
    too_long = b"x" * (FilterSMTP.line_length_limit - 1)  # with CRLF one byte over
    reply, noop = _raw_data(r.port, b"Subject: x\r\n\r\n" + too_long + b"\r\nend\r\n.\r\n")
    assert reply.startswith(b"500 Line too long") and noop.startswith(b"250") and not seen
    reply, _ = _raw_data(r.port, b"Subject: x\r\n\r\n" + too_long[1:] + b"\r\nend\r\n.\r\n")
    assert reply.startswith(b"250") and len(seen) == 1


def test_after_runs_on_the_loop_once_per_delivery(running) -> None:
    """serve pokes the outbox this way when a delivery is done."""
    calls: list[bool] = []
    r = running(lambda d: replies.OK)
    r.handler.after = lambda: calls.append(r.loop.is_running() and threading.current_thread() is r.thread)
    assert send(r.port)[1][0] == 250
    assert send(r.port)[1][0] == 250
    assert calls == [True, True]


def _replies(sock, count: int) -> list[bytes]:
    """The next ``count`` complete replies (multi-line ones joined)."""
    buf = b""
    done: list[bytes] = []
    while len(done) < count:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed after {done!r}"
        buf += chunk
        while b"\r\n" in buf and len(done) < count:
            # a reply ends with a line whose fourth character is a space
            lines = buf.split(b"\r\n")
            for i, line in enumerate(lines[:-1]):
                if len(line) >= 4 and line[3:4] == b" ":
                    done.append(b"\r\n".join(lines[: i + 1]))
                    buf = b"\r\n".join(lines[i + 1:])
                    break
            else:
                break
    assert not buf, buf
    return done


def test_pipelining_as_postfix_does_it(running) -> None:
    """PIPELINING is advertised (Postfix's smtp client then sends XFORWARD,
    MAIL, RCPT and DATA at once, and QUIT or the next MAIL right behind the
    final dot): every command gets its reply in order, the content ends at
    its dot, and two messages in one write of commands are two deliveries."""
    import socket

    seen: list[Delivery] = []
    r = running(lambda d: seen.append(d) or replies.OK)
    with socket.create_connection(("127.0.0.1", r.port), timeout=10) as sock:
        assert _replies(sock, 1)[0].startswith(b"220 ")
        sock.sendall(b"EHLO postfix.test\r\n")
        ehlo = _replies(sock, 1)[0]
        assert b"250-PIPELINING" in ehlo and b"XFORWARD" in ehlo
        for n, after_dot in ((1, b"MAIL FROM:<second@client.test>\r\n"), (2, b"QUIT\r\n")):
            if n == 1:
                sock.sendall(b"XFORWARD ADDR=127.0.0.2 IDENT=4Pipe1\r\n"
                             b"MAIL FROM:<first@client.test>\r\n"
                             b"RCPT TO:<support@example.com>\r\nDATA\r\n")
                got = _replies(sock, 4)
            else:
                sock.sendall(b"RCPT TO:<support@example.com>\r\nDATA\r\n")
                got = _replies(sock, 2)  # MAIL's reply came with the last dot's
            assert [g[:3] for g in got] == [b"250"] * (len(got) - 1) + [b"354"], got
            sock.sendall(f"Subject: m{n}\r\n\r\n.. a dot\r\n".encode() + b".\r\n" + after_dot)
            got = _replies(sock, 2)
            assert [g[:3] for g in got] == [b"250", b"250" if n == 1 else b"221"], got
    assert [(d.mail_from, d.data) for d in seen] == [
        ("first@client.test", b"Subject: m1\r\n\r\n. a dot\r\n"),
        ("second@client.test", b"Subject: m2\r\n\r\n. a dot\r\n")]
    assert seen[0].queue_id == "4Pipe1" and seen[1].queue_id == ""
