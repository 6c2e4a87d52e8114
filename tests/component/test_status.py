"""`casegate status`: what a monitoring check wants (issue 11): outbox depth
and oldest unsent, failures, timers due, unassigned cases, the last errors;
exit 1 when something needs a person. SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

from click.testing import CliRunner

import cli
from casestore.models import Outbox
from casestore.store import Store
from smtpd_hook.engine import Delivery, Engine
from smtpd_hook.settings import Settings
from tests.support.clock import Clock
from tests.support.mail import make


def test_status_names_what_needs_a_person(store_url: str, tmp_path: Path) -> None:
    config = tmp_path / "casegate.toml"
    runner = CliRunner()

    def status() -> tuple[int, dict]:
        r = runner.invoke(cli.main, ["--config", str(config), "--store", store_url, "status", "--json"],
                          catch_exceptions=False)
        return r.exit_code, json.loads(r.stdout)

    def run(*args: str) -> str:
        r = runner.invoke(cli.main, ["--config", str(config), "--store", store_url, *args],
                          catch_exceptions=False)
        assert r.exit_code == 0, r.output
        return r.stdout

    run("init")
    run("mailbox", "add", "support@example.com")  # no CSR: its cases stay unassigned
    code, row = status()
    assert code == 0 and row["problems"] == [] and row["last_errors"] == []
    assert row["cases_unassigned"] == 0 and row["cases_unassigned_long"] == 0

    clock = Clock(dt.datetime.now(dt.UTC) - dt.timedelta(hours=2))
    store = Store(store_url, clock=clock)
    try:
        engine = Engine(store, Settings(secret=b"s" * 32))
        assert engine.process(Delivery("ann@customer.test", ("support@example.com",),
                                       make(from_="ann@customer.test", subject="test_status"),
                                       queue_id="S1")).code == 250
        Outbox.update(last_error="connect to 127.0.0.1:10026: Connection refused").execute()
    finally:
        store.close()

    code, row = status()
    assert code == 1
    assert row["cases_unassigned"] == 1 and row["cases_unassigned_long"] == 1
    assert row["outbox_pending"] >= 1 and row["outbox_oldest_pending_seconds"] > 3600
    assert any("unassigned for more than an hour" in p for p in row["problems"])
    assert any("oldest unsent message" in p for p in row["problems"])
    assert row["last_errors"] and {e["error"] for e in row["last_errors"]} == {
        "connect to 127.0.0.1:10026: Connection refused"}
    text = runner.invoke(cli.main, ["--config", str(config), "--store", store_url, "status"])
    assert text.exit_code == 1
    assert "error: " in text.stdout and "Connection refused" in text.stdout
    assert "PROBLEM: 1 open case(s) unassigned for more than an hour" in text.stdout
