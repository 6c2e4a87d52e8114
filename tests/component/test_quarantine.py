"""A message that crashes processing every time: 451 until QUARANTINE_AFTER
attempts, then held whole in the quarantine and answered 250; the admin sees
it in `casegate status` and can show, retry and drop it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

import cli
from casestore.models import Case, Quarantine
from casestore.store import Store
from rules import defaults, replies
from smtpd_hook.engine import Delivery, Engine
from smtpd_hook.executor import Executor
from smtpd_hook.settings import Settings
from tests.support.mail import make

SECRET = b"s" * 32


@pytest.fixture
def installed(tmp_path: Path):
    config = tmp_path / "casegate.toml"
    url = f"sqlite:///{tmp_path / 'c.db'}"
    runner = CliRunner()

    def run(*args: str):
        return runner.invoke(cli.main, ["--config", str(config), "--store", url, *args],
                             catch_exceptions=False)

    assert run("init").exit_code == 0
    run("mailbox", "add", "support@example.com")
    run("csr", "add", "jane@example.com", "--name", "Jane Doe")
    secret = bytes.fromhex(cli.load_config(config, url).secret.hex())
    store = Store(url)
    yield run, Engine(store, Settings(secret=secret))
    store.close()


def test_a_poison_message_is_held_after_attempts_and_can_be_retried(installed, monkeypatch,
                                                                    tmp_path: Path) -> None:
    run, engine = installed
    real_apply = Executor.apply

    def buggy(self, decision, ctx):
        if ctx.inbound is not None and "test_poison" in ctx.inbound.subject:
            raise ZeroDivisionError("a bug this message triggers")
        return real_apply(self, decision, ctx)

    monkeypatch.setattr(Executor, "apply", buggy)
    raw = make(from_="pat@customer.test", subject="test_poison invoice")
    delivery = Delivery("pat@customer.test", ("support@example.com",), raw, queue_id="4HqPoison1")
    answers = [engine.process(delivery) for _ in range(defaults.QUARANTINE_AFTER)]
    assert [a.code for a in answers] == [451] * (defaults.QUARANTINE_AFTER - 1) + [250]
    assert answers[-1] == replies.OK_QUARANTINED
    assert Case.select().count() == 0  # nothing half-done
    # Other mail still flows meanwhile.
    ok = engine.process(Delivery("ann@customer.test", ("support@example.com",),
                                 make(from_="ann@customer.test", subject="fine"), queue_id="4HqFine"))
    assert ok == replies.stored(Case.get().number) and Case.select().count() == 1

    status = run("status", "--json")
    assert status.exit_code == 1 and json.loads(status.output)["quarantine"] == {"held": 1}
    listed = json.loads(run("quarantine", "list", "--json").output)
    assert [(q["queue_id"], q["attempts"], q["status"]) for q in listed] == [
        ("4HqPoison1", defaults.QUARANTINE_AFTER, "held")]
    assert "ZeroDivisionError: a bug this message triggers" in listed[0]["error"]
    item = listed[0]["id"]
    run("quarantine", "show", str(item), "--raw", str(tmp_path / "held.eml"))
    assert (tmp_path / "held.eml").read_bytes() == raw

    failed = run("quarantine", "retry", str(item))
    assert failed.exit_code == 1 and "failed again" in failed.output
    monkeypatch.setattr(Executor, "apply", real_apply)  # the bug is fixed
    retried = run("quarantine", "retry", str(item))
    assert retried.exit_code == 0, retried.output
    assert Case.select().count() == 2
    assert Quarantine.get_by_id(item).status == "released"
    assert run("status").exit_code == 0


def test_a_delivery_that_recovers_leaves_nothing_behind(installed, monkeypatch) -> None:
    _run, engine = installed
    real_apply = Executor.apply
    calls = {"n": 0}

    def flaky(self, decision, ctx):
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("once")
        return real_apply(self, decision, ctx)

    monkeypatch.setattr(Executor, "apply", flaky)
    delivery = Delivery("kim@customer.test", ("support@example.com",),
                        make(from_="kim@customer.test", subject="flaky"), queue_id="4HqFlaky")
    assert engine.process(delivery).code == 451
    assert engine.process(delivery) == replies.stored(Case.get().number)
    assert Quarantine.select().count() == 0


def test_drop_keeps_the_bytes(installed, monkeypatch) -> None:
    run, engine = installed
    monkeypatch.setattr(Executor, "apply", lambda self, d, c: 1 / 0)
    delivery = Delivery("x@customer.test", ("support@example.com",),
                        make(from_="x@customer.test", subject="drop me"), queue_id="4HqDrop")
    for _ in range(defaults.QUARANTINE_AFTER):
        engine.process(delivery)
    item = Quarantine.get()
    assert run("quarantine", "drop", str(item.id)).exit_code == 0
    assert Quarantine.get_by_id(item.id).status == "dropped" and bytes(item.raw) == delivery.data
    assert run("quarantine", "retry", str(item.id)).exit_code == 1


def test_data_the_database_refuses_is_held_at_once(installed, monkeypatch) -> None:
    """A DataError fails the same way on every try: held after one attempt, not five 451s."""
    from casestore.store import StoreDataError

    _run, engine = installed

    def refuse(self, decision, ctx):
        raise StoreDataError("value too long for type character varying(320)")

    monkeypatch.setattr(Executor, "apply", refuse)
    delivery = Delivery("y@customer.test", ("support@example.com",),
                        make(from_="y@customer.test", subject="too long"), queue_id="4HqData")
    assert engine.process(delivery) == replies.OK_QUARANTINED
    assert Quarantine.get().attempts == 1
