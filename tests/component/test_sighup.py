"""SIGHUP to a running `casegate serve`: the config file, the templates and
the blacklist are read again while an SMTP session (with a transaction
half-way: MAIL and RCPT given, DATA not yet) stays open across the signal;
the session then completes under the new settings. A config file broken at
the time of the SIGHUP leaves the running settings in place."""

from __future__ import annotations

import signal
import smtplib
import sqlite3
import time
from pathlib import Path

from casestore.store import Store
from tests.support.casegate import Casegate
from tests.support.mail import make
from tests.support.postfix import free_ports

SUPPORT = "support@example.com"


def _wait_log(cg: Casegate, text: str, count: int = 1, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while cg.log().count(text) < count:
        assert time.monotonic() < deadline, f"no {text!r} in the log:\n{cg.log()[-3000:]}"
        time.sleep(0.05)


def _ack_text(cg: Casegate, number: str) -> str:
    with sqlite3.connect(cg.store_url.removeprefix("sqlite:///")) as db:
        (raw,) = db.execute("SELECT m.raw FROM message m JOIN support_case c ON m.case_id = c.id "
                            "WHERE c.number = ? AND m.kind = 'ack'", (number,)).fetchone()
    return bytes(raw).decode()


def test_sighup_reloads_config_templates_and_blacklist_mid_session(tmp_path: Path) -> None:
    cg = Casegate(tmp_path / "cg")
    try:
        cg.setup()
        listen, reinject = free_ports(2)  # nothing listens on reinject: the outbox just waits
        cg.start(listen_port=listen, reinject_port=reinject)
        smtp = smtplib.SMTP("127.0.0.1", listen, local_hostname="mx.test", timeout=30)
        smtp.ehlo()
        smtp.mail("ann@customer.test")
        smtp.rcpt(SUPPORT)
        code, reply = smtp.data(make(from_="ann@customer.test", subject="test_sighup before"))
        assert (code, reply.decode()) == (250, "2.0.0 Ok: CS0000001")

        # The admin edits: a new case prefix, a templates folder, a blacklist entry.
        templates = tmp_path / "templates"
        (templates / "customer").mkdir(parents=True)
        (templates / "customer" / "ack.txt.j2").write_text("ACK FROM THE RELOADED TEMPLATE {{ case.number }}\n")
        config = cg.config.read_text()
        assert 'case_prefix = "CS"\n' in config
        cg.config.write_text(config.replace('case_prefix = "CS"\n',
                                            f'case_prefix = "HD"\ntemplates_dir = "{templates}"\n'))
        cg.run("blacklist", "add", "@spammer.test")

        # A transaction half-way when the signal comes.
        assert smtp.mail("bob@customer.test")[0] == 250
        assert smtp.rcpt(SUPPORT)[0] == 250
        assert cg.proc is not None
        cg.proc.send_signal(signal.SIGHUP)
        _wait_log(cg, "SIGHUP: reloaded")
        code, reply = smtp.data(make(from_="bob@customer.test", subject="test_sighup after"))
        assert (code, reply.decode()) == (250, "2.0.0 Ok: HD0000002")
        # Same session: the blacklist is read again at once (not after its 5 s cache).
        smtp.mail("boss@spammer.test")
        smtp.rcpt(SUPPORT)
        code, reply = smtp.data(make(from_="boss@spammer.test", subject="test_sighup spam"))
        assert (code, reply.decode()) == (250, "2.0.0 Ok: discarded")
        smtp.quit()

        assert "ACK FROM THE RELOADED TEMPLATE HD0000002" in _ack_text(cg, "HD0000002")
        assert "RELOADED" not in _ack_text(cg, "CS0000001")
        assert "settings changed: case_prefix, templates_dir" in cg.log()

        # A config broken by an edit: SIGHUP keeps the running settings, mail flows.
        cg.config.write_text("case_prefix = [\n")
        cg.proc.send_signal(signal.SIGHUP)
        _wait_log(cg, "SIGHUP: reloaded", count=2)
        assert "SIGHUP: cannot use the config" in cg.log()
        with smtplib.SMTP("127.0.0.1", listen, local_hostname="mx.test", timeout=30) as again:
            again.ehlo()
            again.mail("cy@customer.test")
            again.rcpt(SUPPORT)
            code, reply = again.data(make(from_="cy@customer.test", subject="test_sighup broken config"))
        assert (code, reply.decode()) == (250, "2.0.0 Ok: HD0000003")
        assert cg.proc.poll() is None
        cg.config.write_text(config)
        assert cg.stop() == 0
    finally:
        cg.close()


def test_sighup_makes_the_milter_read_the_blacklist_and_mailboxes_now(tmp_path: Path) -> None:
    """`casegate milter` alone: its lists are re-read every 5 s by themselves;
    a SIGHUP makes that happen at once, inside an open milter session."""
    import subprocess

    from tests.support.casegate import casegate_cmd
    from tests.support.milterclient import PostfixLikeClient, describe

    cg = Casegate(tmp_path / "cg")
    cg.setup()
    (port,) = free_ports(1)
    log = (tmp_path / "milter.log").open("wb")
    proc = subprocess.Popen([*casegate_cmd(), "--config", str(cg.config), "--store", cg.store_url,
                             "milter", "--listen", f"127.0.0.1:{port}"],
                            env=cg.env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                client = PostfixLikeClient.open(f"127.0.0.1:{port}")
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline
                time.sleep(0.05)
        with client:
            client.negotiate()
            client.connect_event()
            first = time.monotonic()
            assert describe(client.mail("<boss@later.test>")) == "continue"
            assert describe(client.rcpt(f"<{SUPPORT}>")) == "continue"  # lists read at this first message
            client.abort()
            store = Store(cg.store_url)  # in-process: quicker than two CLI runs
            store.add_blacklist("@later.test", None, "test", by="test")
            store.add_mailbox("billing@example.com", "default")
            store.close()
            proc.send_signal(signal.SIGHUP)
            while (tmp_path / "milter.log").read_text().count("SIGHUP: reloaded") < 1:
                assert time.monotonic() < deadline + 15, (tmp_path / "milter.log").read_text()
                time.sleep(0.05)
            assert describe(client.mail("<boss@later.test>")) == "continue"
            assert describe(client.rcpt(f"<{SUPPORT}>")).startswith("550 5.7.1")
            assert describe(client.rcpt("<billing@example.com>")).startswith("550 5.7.1")
            assert describe(client.rcpt("<bob@example.com>")) == "continue"
            # Without the SIGHUP the milter would still use the lists of the first
            # message: its own refresh comes 5 s after that.
            assert time.monotonic() - first < 5
        # It said at start which config and store it uses, and where it listens.
        started = (tmp_path / "milter.log").read_text()
        assert f"milter: config {cg.config}, store {cg.store_url}" in started
        assert f"milter listening on 127.0.0.1:{port}" in started
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
        log.close()
