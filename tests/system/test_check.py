"""`casegate check` against a real Postfix built from contrib/postfix/ (issue 11).

The harness's wiring (milter + recipient gate, as contrib ships it) passes;
then each item is broken in turn, in a copy of the instance's config folder
(`postconf -c COPY -e/-P/-MX`, what a sysadmin's edit would do) or by
pointing casegate at the wrong place, and `check` must name it, give the
line to add and exit non-zero. The same module checks, through Postfix's
own log, that the filter's 250 names the case.
"""

from __future__ import annotations

import json
import shutil
import socket
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.casegate import Casegate, casegate_cmd
from tests.support.fixtures import _new_root, _remove, postfix_available
from tests.support.mail import make
from tests.support.postfix import PostfixInstance, free_ports
from tests.support.sink import Sink

pytestmark = [
    pytest.mark.system,
    pytest.mark.skipif(postfix_available() is not None, reason=str(postfix_available())),
]

SUPPORT = "support@example.com"


@dataclass
class Env:
    root: Path
    pf: PostfixInstance
    sink: Sink
    cg: Casegate
    ports: dict[str, int]

    def check(self, *extra: str, config: Path | None = None, store: str | None = None
              ) -> tuple[int, dict]:
        """Run `casegate check --json` the way an admin would; (exit code, report)."""
        args = [*casegate_cmd(), "--config", str(self.cg.config), "--store", store or self.cg.store_url,
                "check", "--json", "--postfix-config", str(config or self.pf.etc),
                "--listen", f"127.0.0.1:{self.ports['filter']}",
                "--reinject", f"127.0.0.1:{self.ports['reinject']}",
                "--milter", f"127.0.0.1:{self.ports['milter']}", *extra]
        proc = subprocess.run(args, env=self.cg.env, capture_output=True, text=True, timeout=60)
        assert proc.stdout, proc.stderr
        return proc.returncode, json.loads(proc.stdout)

    def copy_config(self, name: str) -> Path:
        """A copy of the instance's etc/ that postconf reads and edits as its own."""
        copy = self.root / f"etc-{name}"
        shutil.rmtree(copy, ignore_errors=True)
        shutil.copytree(self.pf.etc, copy)
        self.postconf(copy, "-e", f"config_directory={copy}")
        return copy

    @staticmethod
    def postconf(etc: Path, *args: str) -> None:
        subprocess.run(["postconf", "-c", str(etc), *args], check=True, capture_output=True, text=True)


@pytest.fixture(scope="module")
def env() -> Iterator[Env]:
    root = _new_root()
    sink = Sink().start()
    f, reinject, milter = free_ports(3, exclude=[sink.port])
    pf = PostfixInstance(root=root / "pf", sink_port=sink.port, filter_port=f, reinject_port=reinject,
                         supervised=[SUPPORT], milter=f"inet:127.0.0.1:{milter}")
    cg = Casegate(root / "cg")
    e = Env(root, pf, sink, cg, {"filter": f, "reinject": reinject, "milter": milter})
    try:
        cg.setup(csrs=[("jane@example.com", "Jane Doe", "")])
        pf.start()
        cg.start(listen_port=f, reinject_port=reinject, trusted=(),
                 extra=["--milter", f"127.0.0.1:{milter}"])
        deadline = time.monotonic() + 15
        while True:  # serve's filter listens first; wait for the milter too
            try:
                socket.create_connection(("127.0.0.1", milter), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, cg.log()
                time.sleep(0.05)
        yield e
    finally:
        cg.close()
        pf.stop()
        sink.stop()
        _remove(root)


def _failed(report: dict) -> set[str]:
    return {c["name"] for c in report["checks"] if c["status"] == "FAIL"}


def test_the_harness_wiring_passes(env: Env) -> None:
    code, report = env.check()
    assert code == 0 and report["ok"] is True, json.dumps(report, indent=1)
    statuses = {c["name"]: c["status"] for c in report["checks"]}
    assert statuses == {
        "postconf": "OK", f"route {SUPPORT}": "OK", "reinject_listener": "OK",
        "reinject_content_filter": "OK", "reinject_milters": "OK",
        "reinject_receive_override_options": "OK", "recipient_delimiter": "OK", "milter": "OK",
        "filter_port": "OK", "reinject_port": "OK", "milter_port": "OK", "store": "OK",
        "dkim": "SKIP",
    }
    text = env.cg.run("check", "--postfix-config", str(env.pf.etc),
                      "--listen", f"127.0.0.1:{env.ports['filter']}",
                      "--reinject", f"127.0.0.1:{env.ports['reinject']}",
                      "--milter", f"127.0.0.1:{env.ports['milter']}")
    assert text.stdout.splitlines()[-1] == "all checks passed"
    assert f"OK   route {SUPPORT}: casegate:[127.0.0.1]:{env.ports['filter']}" in text.stdout


# (what is broken, postconf edits in a copy of etc/ -> the checks that must fail)
BREAKS = {
    "address missing from the transport map": ("route", {f"route {SUPPORT}"}),
    "content filter on the re-injection listener": (
        ["-P", "{listener}/inet/content_filter=smtp:[127.0.0.1]:9"], {"reinject_content_filter"}),
    "milter on the re-injection listener": (
        ["-P", "{listener}/inet/smtpd_milters=inet:127.0.0.1:{milter}"], {"reinject_milters"}),
    "receive_override_options without no_milters": (
        ["-P", "{listener}/inet/receive_override_options=no_unknown_recipient_checks,no_header_body_checks"],
        {"reinject_milters", "reinject_receive_override_options"}),
    "receive_override_options without no_header_body_checks": (
        ["-P", "{listener}/inet/receive_override_options=no_unknown_recipient_checks,no_milters"],
        {"reinject_receive_override_options"}),
    "no re-injection listener in master.cf": (["-MX", "{listener}/inet"], {"reinject_listener"}),
    "recipient_delimiter without +": (["-e", "recipient_delimiter=-"], {"recipient_delimiter"}),
    "milter not in smtpd_milters": (["-e", "smtpd_milters="], {"milter"}),
    "default_action=accept without the recipient gate": (
        ["-e", "smtpd_recipient_restrictions=permit_mynetworks, reject_unauth_destination"], {"milter"}),
    "default_action=accept, the gate's class removed": (
        ["-e", "casegate_gate=permit"], {"milter"}),
}


@pytest.mark.parametrize("what", sorted(BREAKS))
def test_check_names_each_broken_item(env: Env, what: str) -> None:
    edit, expected = BREAKS[what]
    copy = env.copy_config(what.replace(" ", "_").replace("/", "_")[:40])
    if edit == "route":
        # The admin forgot the address's line: only the domain's (staff mail) is left.
        (copy / "other_transport").write_text(f"example.com\tsmtp:[127.0.0.1]:{env.sink.port}\n")
        subprocess.run(["postmap", "-c", str(copy), f"hash:{copy / 'other_transport'}"], check=True)
        env.postconf(copy, "-e", f"transport_maps=hash:{copy / 'other_transport'}")
    else:
        env.postconf(copy, *[a.format(listener=f"127.0.0.1:{env.ports['reinject']}",
                                      milter=env.ports["milter"]) for a in edit])
    code, report = env.check(config=copy)
    assert code == 1 and report["ok"] is False
    assert _failed(report) == expected, json.dumps(report, indent=1)
    for c in report["checks"]:
        if c["status"] == "FAIL":
            assert c["fix"], c  # each problem says what to add


def test_check_names_what_does_not_answer(env: Env) -> None:
    nobody = free_ports(1, exclude=[*env.ports.values(), env.sink.port])[0]
    code, report = env.check("--listen", f"127.0.0.1:{nobody}")
    assert code == 1 and {"filter_port", f"route {SUPPORT}"} == _failed(report)
    code, report = env.check("--reinject", f"127.0.0.1:{nobody}")
    assert code == 1 and {"reinject_port", "reinject_listener"} == _failed(report)
    code, report = env.check("--milter", f"127.0.0.1:{nobody}")
    assert code == 1 and {"milter_port", "milter"} == _failed(report)
    # The re-injection port answers, but it is Postfix, not casegate's filter.
    code, report = env.check("--listen", f"127.0.0.1:{env.ports['reinject']}")
    assert code == 1 and "filter_port" in _failed(report)
    assert "not casegate's filter" in next(c["detail"] for c in report["checks"] if c["name"] == "filter_port")


def test_check_names_a_bad_postfix_config_and_a_bad_store(env: Env) -> None:
    code, report = env.check(config=env.root / "no-such-etc")
    assert code == 1 and "postconf" in _failed(report)
    code, report = env.check(store=f"sqlite:///{env.root / 'nothing.db'}")
    assert code == 1 and _failed(report) == {"store"}
    assert "casegate init" in next(c["detail"] for c in report["checks"] if c["name"] == "store")
    # A store one migration behind the code.
    old = env.root / "old.db"
    shutil.copy(Path(env.cg.store_url.removeprefix("sqlite:///")), old)
    with sqlite3.connect(old) as db:
        db.execute("DELETE FROM casegate_migration WHERE id = (SELECT MAX(id) FROM casegate_migration)")
    code, report = env.check(store=f"sqlite:///{old}")
    assert code == 1 and _failed(report) == {"store"}
    assert "needs migrations" in next(c["detail"] for c in report["checks"] if c["name"] == "store")


def test_postfix_logs_the_case_number_of_the_filters_250(env: Env) -> None:
    pos = env.pf.log_position()
    qid = env.pf.send("ann@customer.test", [SUPPORT], make(from_="ann@customer.test", subject="test_check 250"))
    line = env.pf.wait_for_log(rf"{qid}: to=<{SUPPORT}>.*status=sent \(250 2\.0\.0 Ok: (CS\d+)\)",
                               timeout=30, since=pos)
    number = line.group(1)
    assert [c["number"] for c in env.cg.json("case", "list") if c["subject"] == "test_check 250"] == [number]
    # casegate's own log names the case and the outcome with Postfix's queue ID.
    deadline = time.monotonic() + 10
    while f"[{qid}] stored {number} new_case" not in env.cg.log():
        assert time.monotonic() < deadline, env.cg.log()[-2000:]
        time.sleep(0.05)
