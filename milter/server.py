"""asyncio glue: sockets in, :class:`~milter.session.Session` per connection, frames out.

``listen`` is ``HOST:PORT`` (``[::1]:PORT`` for IPv6; ``inet:`` in front, as
in Postfix's ``smtpd_milters``, is accepted) or ``unix:/path``. A Unix socket
replaces a stale socket file left by a crash (never a live one, never a file
that is not a socket) and gets mode ``socket_mode`` (0660 by default: put the
user casegate runs as and Postfix in a common group, or pass 0o666). Postfix's
smtpd is usually chrooted to /var/spool/postfix, so its ``unix:`` path is
relative to that.

Each connection is one task. Reads time out after ``read_timeout`` seconds of
silence (Postfix keeps the connection for the whole SMTP session, so allow
for ``smtpd_timeout`` between commands). Every log line carries the queue ID
through :data:`rules.logctx.queue_id` ("NOQUEUE" until Postfix has one, as in
its own log). A protocol error closes the connection, and Postfix applies
``milter_default_action``; any other error is logged and answered with a 451
for the message in progress.

The same socket also answers Postfix policy requests: the recipient gate of
:mod:`milter.gate` (a supervised recipient is let in only while a milter
session from that very client is open here). The first bytes of a
connection tell the protocols apart.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import socket
import stat
import time
from collections.abc import Callable

from milter.gate import MAX_REQUEST_BYTES, Gate, looks_like_policy_request, parse_request
from milter.policy import Policy
from milter.protocol import (
    MAX_FRAME_LENGTH,
    Command,
    Connect,
    FrameReader,
    MailFrom,
    ProtocolError,
    QuitNewConnection,
    TempFailCode,
    decode,
    encode,
)
from milter.session import Session
from rules import logctx
from rules.replies import TEMPFAIL

__all__ = ["MilterServer", "parse_listen", "serve"]

log = logging.getLogger("casegate.milter")

NOQUEUE = "NOQUEUE"
_READ_SIZE = 65536


def parse_listen(listen: str) -> tuple[str, int] | str:
    """``(host, port)`` for TCP, the path for ``unix:``; ``ValueError`` otherwise."""
    spec = listen.strip()
    if spec.startswith("unix:"):
        path = spec[len("unix:") :]
        if not path:
            raise ValueError(f"no path in {listen!r}")
        return path
    if spec.startswith("inet:"):
        spec = spec[len("inet:") :]
    host, sep, port_text = spec.rpartition(":")
    if not sep or not port_text.isdigit():
        raise ValueError(f"listen address {listen!r} is not HOST:PORT or unix:/path")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    port = int(port_text)
    if not 0 <= port <= 65535:
        raise ValueError(f"port out of range in {listen!r}")
    return host or "127.0.0.1", port


def _remove_stale_socket(path: str) -> None:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise FileExistsError(errno.EEXIST, "exists and is not a socket", path)
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(1.0)
        probe.connect(path)
    except (ConnectionRefusedError, FileNotFoundError):
        log.info("removing stale milter socket %s", path)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        return
    except OSError as exc:
        raise OSError(exc.errno, f"cannot check existing socket: {exc.strerror}", path) from exc
    finally:
        probe.close()
    raise OSError(errno.EADDRINUSE, "another process is listening on this socket", path)


class MilterServer:
    """A listening milter; :meth:`close` also ends the connections in progress."""

    def __init__(
        self,
        policy: Policy,
        listen: str,
        *,
        secret: bytes,
        socket_mode: int = 0o660,
        read_timeout: float = 900.0,
        write_timeout: float = 60.0,
        wall_clock: Callable[[], float] = time.time,
        max_frame_length: int = MAX_FRAME_LENGTH,
    ) -> None:
        if not secret:
            raise ValueError("the milter needs a non-empty secret to sign its stamp")
        self._policy = policy
        self._listen = listen
        self._where = parse_listen(listen)
        self._secret = secret
        self._socket_mode = socket_mode
        self._read_timeout = read_timeout
        self._write_timeout = write_timeout
        self._wall_clock = wall_clock
        self._max_frame = max_frame_length
        self._server: asyncio.Server | None = None
        self._unix_inode: tuple[int, int] | None = None
        self._connections: set[asyncio.Task[object]] = set()
        self.gate = Gate()

    @property
    def server(self) -> asyncio.Server:
        if self._server is None:
            raise RuntimeError("the milter server is not started")
        return self._server

    @property
    def addresses(self) -> list[str]:
        """Where it listens, as ``HOST:PORT`` or ``unix:/path`` (ports as bound)."""
        out: list[str] = []
        for sock in self.server.sockets:
            name = sock.getsockname()
            if isinstance(name, tuple):
                host = name[0]
                out.append(f"[{host}]:{name[1]}" if ":" in host else f"{host}:{name[1]}")
            else:
                out.append(f"unix:{name}")
        return out

    async def start(self) -> asyncio.Server:
        if self._server is not None:
            return self._server
        if isinstance(self._where, str):
            path = self._where
            _remove_stale_socket(path)
            self._server = await asyncio.start_unix_server(self._handle, path=path)
            os.chmod(path, self._socket_mode)
            st = os.stat(path)
            self._unix_inode = (st.st_dev, st.st_ino)
        else:
            host, port = self._where
            self._server = await asyncio.start_server(self._handle, host=host, port=port)
        log.info("milter listening on %s", ", ".join(self.addresses))
        return self._server

    async def close(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        tasks = list(self._connections)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        await server.wait_closed()
        if isinstance(self._where, str) and self._unix_inode is not None:
            with contextlib.suppress(OSError):
                st = os.stat(self._where)
                if (st.st_dev, st.st_ino) == self._unix_inode:
                    os.unlink(self._where)
            self._unix_inode = None

    async def __aenter__(self) -> MilterServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- one connection -----------------------------------------------------

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._connections.add(task)
        logctx.queue_id.set(NOQUEUE)
        peername = writer.get_extra_info("peername")
        peer = f"{peername[0]}:{peername[1]}" if isinstance(peername, tuple) else "unix socket"
        session = Session(self._policy, secret=self._secret, wall_clock=self._wall_clock)
        try:
            async with asyncio.timeout(self._read_timeout):
                first = await reader.read(_READ_SIZE)
            if looks_like_policy_request(first):
                log.debug("policy connection from %s", peer)
                await self._serve_policy(first, reader, writer)
            else:
                log.debug("milter connection from %s", peer)
                await self._converse(session, first, reader, writer)
        except asyncio.CancelledError:
            log.debug("milter connection from %s cancelled", peer)
            raise
        except ProtocolError as exc:
            log.warning("milter protocol error from %s, closing: %s", peer, exc)
        except TimeoutError:
            log.warning("milter connection from %s timed out, closing", peer)
        except (ConnectionError, EOFError) as exc:
            log.info("milter connection from %s lost: %s", peer, exc)
        except Exception:
            log.exception("milter connection from %s failed", peer)
        finally:
            if task is not None:
                self._connections.discard(task)
            writer.close()
            with contextlib.suppress(Exception, asyncio.CancelledError):
                async with asyncio.timeout(5):
                    await writer.wait_closed()
            log.debug("milter connection from %s closed", peer)

    async def _converse(
        self,
        session: Session,
        data: bytes,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        frames = FrameReader(self._max_frame)
        client: tuple[str, int] | None = None  # registered with the gate
        try:
            while not session.closed:
                if not data:
                    if frames.pending or session.in_message:
                        log.info("milter connection closed by the MTA in the middle of a message")
                    return
                out = bytearray()
                for frame in frames.feed(data):
                    command = decode(frame)
                    if isinstance(command, MailFrom):
                        await self._prepare()
                    out += self._answer(session, command)
                    if isinstance(command, Connect | QuitNewConnection) and client is not None:
                        self.gate.closed(client)
                        client = None
                    if isinstance(command, Connect):
                        client = self.gate.opened(command.address, command.port)
                    if session.closed:
                        break
                if out:
                    writer.write(bytes(out))
                    async with asyncio.timeout(self._write_timeout):
                        await writer.drain()
                if session.closed:
                    return
                async with asyncio.timeout(self._read_timeout):
                    data = await reader.read(_READ_SIZE)
        finally:
            if client is not None:
                self.gate.closed(client)

    async def _serve_policy(
        self, data: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """Postfix policy requests on this connection, until Postfix closes it."""
        buffer = bytearray(data)
        while True:
            end = buffer.find(b"\n\n")
            while end < 0:
                if len(buffer) > MAX_REQUEST_BYTES:
                    raise ProtocolError(f"policy request longer than {MAX_REQUEST_BYTES} bytes")
                async with asyncio.timeout(self._read_timeout):
                    more = await reader.read(_READ_SIZE)
                if not more:
                    return
                buffer += more
                end = buffer.find(b"\n\n")
            try:
                request = parse_request(bytes(buffer[:end]))
            except ValueError as exc:
                raise ProtocolError(str(exc)) from None
            del buffer[: end + 2]
            logctx.queue_id.set(request.get("queue_id") or NOQUEUE)
            writer.write(f"action={self.gate.answer(request)}\n\n".encode())
            async with asyncio.timeout(self._write_timeout):
                await writer.drain()

    async def _prepare(self) -> None:
        try:
            await self._policy.prepare()
        except Exception:
            log.exception("policy preparation failed: deciding with what the policy has")

    def _answer(self, session: Session, command: Command) -> bytes:
        logctx.queue_id.set(session.queue_id or NOQUEUE)
        try:
            responses = session.feed(command)
            logctx.queue_id.set(session.queue_id or NOQUEUE)
            return b"".join(encode(r) for r in responses)
        except ProtocolError:
            raise
        except Exception:
            log.exception("internal error on %s: answering tempfail", type(command).__name__)
            if session.expects_reply(command):
                return encode(TempFailCode(TEMPFAIL))
            return b""


async def serve(
    policy: Policy,
    listen: str,
    *,
    secret: bytes,
    socket_mode: int = 0o660,
    read_timeout: float = 900.0,
    wall_clock: Callable[[], float] = time.time,
) -> asyncio.Server:
    """Start a milter on ``listen`` and return the listening server.

    Run it with ``async with server: await server.serve_forever()``. Closing
    the returned server stops new connections; connections in progress end
    when Postfix closes them or when their task is cancelled (``asyncio.run``
    cancels them on the way out). Use :class:`MilterServer` to end them in
    :meth:`MilterServer.close` as well and to remove the Unix socket file.
    """
    milter = MilterServer(
        policy,
        listen,
        secret=secret,
        socket_mode=socket_mode,
        read_timeout=read_timeout,
        wall_clock=wall_clock,
    )
    return await milter.start()
