"""`casegate serve --log syslog…`: the records reach a syslog socket (a unix
datagram socket, as /dev/log is, or UDP), with the mail facility and
casegate's ident; with no socket there, it says so and logs to stderr."""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.casegate import Casegate
from tests.support.postfix import free_ports

LOG_MAIL_INFO = 2 * 8 + 6  # facility mail (2), severity info (6): <22>


@pytest.fixture
def cg(tmp_path: Path) -> Iterator[Casegate]:
    c = Casegate(tmp_path / "cg")
    c.setup()
    yield c
    c.close()


def _receive(sock: socket.socket, needle: bytes, timeout: float = 15.0) -> list[bytes]:
    sock.settimeout(0.2)
    got: list[bytes] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            got.append(sock.recv(65536))
        except TimeoutError:
            continue
        if needle in got[-1]:
            return got
    raise AssertionError(f"no datagram with {needle!r} in {timeout}s: {got!r}")


@pytest.mark.parametrize("kind", ["unix", "udp"])
def test_serve_logs_to_syslog(cg: Casegate, tmp_path: Path, kind: str) -> None:
    if kind == "unix":
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        path = tmp_path / "log.sock"
        sock.bind(str(path))
        target = f"syslog:{path}"
    else:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        target = f"syslog:127.0.0.1:{sock.getsockname()[1]}"
    with sock:
        listen, reinject = free_ports(2)
        cg.start(listen_port=listen, reinject_port=reinject, extra=["--log", target])
        got = _receive(sock, b"listening on")
        cg.stop()
    start = next(d for d in got if b"config " in d).decode()
    assert start.startswith(f"<{LOG_MAIL_INFO}>casegate[{cg_pid(start)}]: INFO casegate [-] casegate ")
    assert f"config {cg.config}" in start
    assert b"casegate.serve" in got[-1]
    assert "listening on" not in cg.log()  # not on stderr as well


def cg_pid(line: str) -> int:
    return int(line.split("casegate[", 1)[1].split("]", 1)[0])


def test_no_syslog_socket_falls_back_to_stderr_and_says_so(cg: Casegate, tmp_path: Path) -> None:
    listen, reinject = free_ports(2)
    cg.start(listen_port=listen, reinject_port=reinject,
             extra=["--log", f"syslog:{tmp_path / 'no-such.sock'}"])
    deadline = time.monotonic() + 15
    while "listening on" not in cg.log():
        assert time.monotonic() < deadline, cg.log()
        time.sleep(0.05)
    cg.stop()
    log = cg.log()
    assert f"cannot log to syslog at {tmp_path / 'no-such.sock'}" in log
    assert "logging to stderr instead" in log


def test_a_bad_log_target_is_refused(cg: Casegate) -> None:
    result = cg.run("serve", "--log", "syslgo", check=False)
    assert result.returncode == 2 and "--log must be stderr, syslog" in result.stderr


def test_log_from_the_config_file(cg: Casegate, tmp_path: Path) -> None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = tmp_path / "cfg.sock"
    sock.bind(str(path))
    text = cg.config.read_text()
    cg.config.write_text(f'log = "syslog:{path}"\n' + text)
    with sock:
        listen, reinject = free_ports(2)
        cg.start(listen_port=listen, reinject_port=reinject)
        assert _receive(sock, b"listening on")
        cg.stop()


def test_a_milter_that_cannot_listen_stops_serve_with_the_reason(cg: Casegate) -> None:
    """Not a filter running on without its milter and a log that says
    nothing: serve stops, exit 1, naming the milter and its address."""
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    with busy:
        port = busy.getsockname()[1]
        listen, reinject = free_ports(2)
        # it may exit before or after the filter's port answers: either way it exits
        with contextlib.suppress(AssertionError):
            cg.start(listen_port=listen, reinject_port=reinject, extra=["--milter", f"127.0.0.1:{port}"])
        assert cg.proc is not None
        code = cg.proc.wait(timeout=30)
    log = cg.log()
    assert code == 1, log
    assert f"the milter cannot listen on 127.0.0.1:{port}" in log
    assert "milter failed" in log and "stopping" in log
