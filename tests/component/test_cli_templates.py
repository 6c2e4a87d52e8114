"""`casegate template …`, `pool set --language/--acknowledge/--greeting/
--text-only`, `csr set --footer-file/--footer-image`, and `serve` refusing a
broken override, on a real SQLite file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

import cli
from casestore.models import Csr
from casestore.store import Store
from tests.support.htmlmail import PNG


@pytest.fixture
def run(tmp_path: Path):
    runner = CliRunner()
    config = tmp_path / "casegate.toml"
    base = ["--config", str(config), "--store", f"sqlite:///{tmp_path / 'c.db'}"]

    def invoke(*args: str):
        return runner.invoke(cli.main, [*base, *args], catch_exceptions=False)

    assert invoke("init").exit_code == 0
    config.write_text(f'templates_dir = "{tmp_path / "t"}"\n' + config.read_text())
    (tmp_path / "t").mkdir()
    return invoke


def write(root: Path, rel: str, text: str) -> None:
    (root / rel).parent.mkdir(parents=True, exist_ok=True)
    (root / rel).write_text(text)


def test_list_show_render(run, tmp_path: Path) -> None:
    write(tmp_path / "t", "billing/customer/ack.txt.j2", "Billing ack {{ case.number }}\n")
    listed = {r["name"]: r for r in json.loads(run("template", "list", "--json").output)}
    assert len(listed) == 15 and listed["customer/ack"]["languages"] == ["en", "pl"]
    assert listed["customer/ack"]["overrides"] == ["billing/customer/ack.txt.j2"]
    assert listed["csr/notify"]["overrides"] == []
    shown = run("template", "show", "ack", "--pool", "billing")
    assert shown.exit_code == 0 and shown.stdout == "Billing ack {{ case.number }}\n"
    assert "override/billing/customer/ack.txt.j2" in shown.stderr
    assert "{% extends" in run("template", "show", "customer/ack", "--html").stdout
    assert run("template", "render", "ack", "--pool", "billing").stdout == "Billing ack CS0000042\n"
    polish = run("template", "render", "closed", "--language", "pl")
    assert polish.stdout.startswith("Dzień dobry John,\n\nTwoja sprawa CS0000042")
    html = run("template", "render", "survey", "--html").stdout
    assert html.startswith("<!DOCTYPE html>") and "CS0000042" in html
    unknown = run("template", "render", "nosuch")
    assert unknown.exit_code == 2 and "no such template" in unknown.output


def test_render_with_a_real_case(run, tmp_path: Path) -> None:
    from rules.classify import parse_networks
    from smtpd_hook.engine import Delivery, Engine
    from smtpd_hook.settings import Settings
    from tests.support.mail import make

    run("mailbox", "add", "support@example.com", "--pool", "default")
    run("csr", "add", "jane@example.com", "--name", "Jane Doe", "--pool", "default")
    store = Store(f"sqlite:///{tmp_path / 'c.db'}")
    engine = Engine(store, Settings(secret=b"x" * 32, trusted_networks=parse_networks(["127.0.0.1/32"])))
    engine.process(Delivery(mail_from="ann@customer.test", rcpt_tos=("support@example.com",),
                            data=make(from_="Ann Lee <ann@customer.test>", subject="test_cli_templates"),
                            client_addr="127.0.0.2", queue_id="Q1"))
    store.close()
    write(tmp_path / "t", "customer/ack.txt.j2",
          "{{ greeting }} {{ case.number }} {{ threadcount }} {{ case.subject }}\n")
    result = run("template", "render", "ack", "--case", "CS0000001")
    assert result.exit_code == 0 and result.stdout == "Hello Ann, CS0000001 1 test_cli_templates\n"


def test_check_and_serve_refuse_a_broken_override(run, tmp_path: Path) -> None:
    write(tmp_path / "t", "customer/ack.txt.j2", "fine {{ case.number }}\n")
    ok = run("template", "check")
    assert ok.exit_code == 0 and "1 override(s)" in ok.output
    write(tmp_path / "t", "billing/customer/closed.txt.j2", "Hello\n\n{{ case.numbr }}\n")
    write(tmp_path / "t", "support@example.com/csr/notify.html.j2", "<p>\n{% for x in %}\n")
    bad = run("template", "check")
    assert bad.exit_code == 1
    assert f"{tmp_path}/t/billing/customer/closed.txt.j2:3: UndefinedError" in bad.output
    assert f"{tmp_path}/t/support@example.com/csr/notify.html.j2:2: " in bad.output
    serve = run("serve", "--listen", "127.0.0.1:0")
    assert serve.exit_code == 1 and "broken template override" in serve.output
    assert "billing/customer/closed.txt.j2:3" in serve.output


def test_serve_refuses_a_missing_templates_dir(run, tmp_path: Path) -> None:
    (tmp_path / "t").rmdir()
    result = run("serve", "--listen", "127.0.0.1:0")
    assert result.exit_code == 1 and "is not a folder" in result.output


def test_pool_settings(run) -> None:
    run("mailbox", "add", "billing@example.com", "--pool", "billing")
    result = run("pool", "set", "billing", "--language", "PL", "--no-acknowledge", "--greeting",
                 "Dzień dobry {first_name},", "--text-only")
    assert result.exit_code == 0, result.output
    [row] = json.loads(run("pool", "list", "--json").output)
    assert {k: row[k] for k in ("language", "acknowledge", "greeting", "text_only")} == {
        "language": "pl", "acknowledge": False, "greeting": "Dzień dobry {first_name},",
        "text_only": True}
    for args, message in [(("--language", "de"), "speak en, pl"),
                          (("--greeting", "Hi {nme},"), "only {first_name} and {name}"),
                          (("--greeting", "x" * 201), "at most 200")]:
        bad = run("pool", "set", "billing", *args)
        assert bad.exit_code == 2 and message in bad.output, bad.output
    assert json.loads(run("pool", "list", "--json").output)[0]["language"] == "pl"  # unchanged



def test_mailbox_settings_beat_the_pool(run) -> None:
    run("mailbox", "add", "billing@example.com", "--pool", "billing")
    run("mailbox", "add", "faktury@example.com", "--pool", "billing")
    assert run("pool", "set", "billing", "--greeting", "Dear {first_name},").exit_code == 0
    result = run("mailbox", "set", "faktury@example.com", "--language", "PL", "--no-acknowledge",
                 "--greeting", "Szanowni Państwo,")
    assert result.exit_code == 0, result.output
    assert result.output == ("faktury@example.com: language = pl, acknowledge = off, "
                             "greeting = Szanowni Państwo,\n")
    rows = {r["address"]: r for r in json.loads(run("mailbox", "list", "--json").output)}
    pick = ("language", "acknowledge", "greeting")
    assert {k: rows["faktury@example.com"][k] for k in pick} == {
        "language": "pl", "acknowledge": False, "greeting": "Szanowni Państwo,"}
    assert {k: rows["billing@example.com"][k] for k in pick} == dict.fromkeys(pick)  # the pool's
    shown = json.loads(run("mailbox", "show", "faktury@example.com", "--json").output)
    assert {k: shown[k] for k in pick} == {"language": "pl", "acknowledge": False,
                                           "greeting": "Szanowni Państwo,"}
    assert run("mailbox", "set", "faktury@example.com", "--greeting", "").output == (
        "faktury@example.com: greeting = the language's\n")  # pl in an English pool
    rendered = run("template", "render", "ack", "--mailbox", "faktury@example.com")
    assert rendered.exit_code == 0 and "dziękujemy za kontakt" in rendered.stdout, rendered.output
    assert "Thank you for contacting" in run("template", "render", "ack", "--mailbox",
                                             "billing@example.com").stdout
    text = run("mailbox", "show", "billing@example.com").output
    assert "language: pool (en)\nacknowledge: pool (on)\ngreeting: pool (Dear {first_name},)" in text
    # Back to the pool's, one at a time; --acknowledge beats a pool's off.
    assert run("mailbox", "set", "faktury@example.com", "--language", "", "--greeting", "",
               "--acknowledge").exit_code == 0
    shown = json.loads(run("mailbox", "show", "faktury@example.com", "--json").output)
    assert {k: shown[k] for k in pick} == {"language": None, "acknowledge": True, "greeting": None}
    assert run("mailbox", "set", "faktury@example.com", "--pool-acknowledge").output == (
        "faktury@example.com: acknowledge = pool (on)\n")
    assert json.loads(run("mailbox", "show", "faktury@example.com", "--json").output)["acknowledge"] is None
    for args, message in [(("--language", "de"), "speak en, pl"),
                          (("--greeting", "Hi {nme},"), "only {first_name} and {name}"),
                          ((), "nothing to set")]:
        bad = run("mailbox", "set", "billing@example.com", *args)
        assert bad.exit_code == 2 and message in bad.output, bad.output


def test_csr_footer(run, tmp_path: Path) -> None:
    run("mailbox", "add", "support@example.com", "--pool", "default")
    run("csr", "add", "jane@example.com", "--name", "Jane Doe", "--pool", "default")
    (tmp_path / "f.html").write_text('<p><b>Jane</b> <img src="cid:footer"></p>')
    (tmp_path / "logo.png").write_bytes(PNG)
    (tmp_path / "big.png").write_bytes(PNG + b"\0" * 600_000)
    ok = run("csr", "set", "jane@example.com", "--footer-file", str(tmp_path / "f.html"),
             "--footer-image", str(tmp_path / "logo.png"))
    assert ok.exit_code == 0, ok.output
    for args, message in [(("--footer-image", str(tmp_path / "f.html")), "not a JPEG, PNG or GIF"),
                          (("--footer-image", str(tmp_path / "big.png")), "at most"),
                          (("--footer-file", str(tmp_path / "nope.html")), "cannot read")]:
        bad = run("csr", "set", "jane@example.com", *args)
        assert bad.exit_code == 2 and message in bad.output, bad.output
    store = Store(f"sqlite:///{tmp_path / 'c.db'}")
    row = Csr.get(Csr.address == "jane@example.com")
    assert bytes(row.footer_image) == PNG and row.footer_image_type == "image/png"
    assert row.footer_html == '<p><b>Jane</b> <img src="cid:footer"></p>'
    store.close()
    assert run("csr", "set", "jane@example.com", "--footer-file", "", "--footer-image", "").exit_code == 0
    store = Store(f"sqlite:///{tmp_path / 'c.db'}")
    row = Csr.get(Csr.address == "jane@example.com")
    assert row.footer_html == "" and row.footer_image is None
    store.close()
