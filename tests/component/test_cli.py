"""The admin's CLI on a real SQLite file: clear errors, exit codes, --json."""

from __future__ import annotations

import json
import shutil
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner

import cli


def _runner(tmp_path: Path):
    runner = CliRunner()
    base = ["--config", str(tmp_path / "casegate.toml"), "--store", f"sqlite:///{tmp_path / 'c.db'}"]

    def invoke(*args: str):
        return runner.invoke(cli.main, [*base, *args], catch_exceptions=False)

    return invoke


@pytest.fixture
def new_store_run(tmp_path: Path):
    """The CLI on a store that does not exist yet: ``init`` makes it."""
    return _runner(tmp_path)


@pytest.fixture
def run(tmp_path: Path, _sqlite_template: Path):
    """The CLI on a store already migrated (a copy of the session's template), so
    ``init`` only writes the config: the migrations are tested on new stores above."""
    shutil.copyfile(_sqlite_template, tmp_path / "c.db")
    (tmp_path / "c.db").chmod(0o600)
    return _runner(tmp_path)


def test_init_is_idempotent_and_writes_a_private_config(new_store_run, tmp_path: Path) -> None:
    first = new_store_run("init")
    assert first.exit_code == 0 and "applied 0001_initial, 0002_gatekeeping, 0003_rate_cap_indexes" in first.output
    config = tmp_path / "casegate.toml"
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    secret_line = [l for l in config.read_text().splitlines() if l.startswith("secret")]
    again = new_store_run("init")
    assert again.exit_code == 0 and "up to date" in again.output
    assert [l for l in config.read_text().splitlines() if l.startswith("secret")] == secret_line


def test_commands_before_init_say_to_run_init(new_store_run) -> None:
    result = new_store_run("case", "list")
    assert result.exit_code == 1 and "casegate init" in result.output


def test_mailboxes_and_csrs(run) -> None:
    run("init")
    assert run("mailbox", "add", "Support@Example.com", "--pool", "tier1").exit_code == 0
    assert json.loads(run("mailbox", "list", "--json").output) == [
        {"address": "support@example.com", "pool": "tier1", "name": "",
         "language": None, "acknowledge": None, "greeting": None}]
    dup = run("mailbox", "add", "support@example.com")
    assert dup.exit_code == 1 and "already" in dup.output
    plus = run("mailbox", "add", "support+x@example.com")
    assert plus.exit_code == 2 and "+tag" in plus.output
    ok = run("csr", "add", "jose@example.com", "--name", "José Núñez", "--pool", "tier1",
             "--signature", "José\\nTier 1")
    assert ok.exit_code == 0
    rows = json.loads(run("csr", "list", "--json").output)
    assert rows == [{"address": "jose@example.com", "name": "José Núñez", "available": True,
                     "pools": ["tier1"], "memberships": [{"pool": "tier1", "level": 1, "priority": 1, "away": False,
                                      "away_until": None, "deputy": None}],
                     "signature": "José\nTier 1", "supervisor": None}]


@pytest.mark.parametrize("bad", ["not-an-address", "a b@example.com", "x@", "@example.com"])
def test_a_bad_address_is_refused_and_never_stored(run, bad: str) -> None:
    run("init")
    result = run("csr", "add", bad, "--name", "X")
    assert result.exit_code == 2 and "not a valid email address" in result.output
    assert json.loads(run("csr", "list", "--json").output) == []
    assert run("mailbox", "add", bad).exit_code == 2


def test_case_show_unknown_and_store_down(run, tmp_path: Path) -> None:
    run("init")
    missing = run("case", "show", "CS0000001")
    assert missing.exit_code == 1 and "no case CS0000001" in missing.output
    runner = CliRunner()
    down = runner.invoke(cli.main, ["--config", str(tmp_path / "casegate.toml"), "--store",
                                    "postgresql://postgres@127.0.0.1:1/none", "case", "list"])
    assert down.exit_code == 1 and "store unavailable" in down.output


def test_blacklist_round_trip(run, tmp_path: Path) -> None:
    run("init")
    assert run("blacklist", "add", "Spam@Bad.test", "--reason", "spam").exit_code == 0
    assert run("blacklist", "add", "@bad.test", "--subject", "(?i)casino").exit_code == 0
    bad_regex = run("blacklist", "add", "@bad.test", "--subject", "([")
    assert bad_regex.exit_code == 2 and "regular expression" in bad_regex.output
    rows = json.loads(run("blacklist", "list", "--json").output)
    assert [(r["pattern"], r["subject"]) for r in rows] == [("@bad.test", "(?i)casino"),
                                                           ("spam@bad.test", None)]
    exported = run("blacklist", "export").output
    assert run("blacklist", "remove", "spam@bad.test").exit_code == 0
    assert run("blacklist", "remove", "spam@bad.test").exit_code == 1
    (tmp_path / "list.json").write_text(exported)
    assert "imported 2 entries" in run("blacklist", "import", str(tmp_path / "list.json")).output
    assert len(json.loads(run("blacklist", "list", "--json").output)) == 2
    (tmp_path / "plain.txt").write_text("# comment\nok@good.test\nnot an address\n")
    bad = run("blacklist", "import", str(tmp_path / "plain.txt"))
    assert bad.exit_code == 1 and "entry 2" in bad.output and "nothing imported" in bad.output
    assert len(json.loads(run("blacklist", "list", "--json").output)) == 2


def test_limits(run) -> None:
    run("init")
    assert json.loads(run("limits", "show", "--json").output)["autoreply_per_recipient"] == 40
    assert run("limits", "set", "--per-recipient", "3").exit_code == 0
    assert json.loads(run("limits", "show", "--json").output)["autoreply_per_recipient"] == 3
    assert run("limits", "set").exit_code == 2


def test_serve_refuses_a_bad_trusted_network(run) -> None:
    run("init")
    result = run("serve", "--trusted-network", "10.0.0.300/8")
    assert result.exit_code == 2 and "not a network" in result.output


@pytest.mark.parametrize(("value", "error"), [
    ('"soon"', "[serve] outbox_lease"),
    ('"0s"', "outbox_lease must be at least 1s"),
    ('"off"', "[serve] outbox_lease"),
])
def test_serve_refuses_a_bad_outbox_lease(run, tmp_path: Path, value: str, error: str) -> None:
    run("init")
    config = tmp_path / "casegate.toml"
    text = config.read_text().replace("\n[serve]\n", f"\n[serve]\noutbox_lease = {value}\n", 1)
    config.write_text(text)
    result = run("serve")
    assert result.exit_code == 2 and error in result.output, result.output


def test_idn_domains_are_stored_as_postfix_sees_them(run) -> None:
    run("init")
    assert run("mailbox", "add", "support@bär.test").exit_code == 0
    assert json.loads(run("mailbox", "list", "--json").output)[0]["address"] == "support@xn--br-via.test"


def test_a_pool_without_csrs_is_warned_about(run) -> None:
    run("init")
    result = run("mailbox", "add", "support@example.com", "--pool", "defualt")
    assert result.exit_code == 0 and "no available CSR" in result.output


def test_a_removed_secret_is_made_again_in_the_right_place(run, tmp_path: Path) -> None:
    import tomllib

    run("init")
    config = tmp_path / "casegate.toml"
    config.write_text("".join(l for l in config.read_text().splitlines(keepends=True)
                              if not l.startswith("secret")))
    assert "added a secret" in run("init").output
    data = tomllib.loads(config.read_text())
    assert len(bytes.fromhex(data["secret"])) == 32 and "secret" not in data["dkim"]
    assert run("init").exit_code == 0 and config.read_text().count("secret =") == 1


def test_config_and_path_errors_are_messages_not_tracebacks(run, tmp_path: Path) -> None:
    run("init")
    out = run("case", "file", "1", "-o", str(tmp_path / "no" / "such" / "dir" / "f"))
    assert out.exit_code == 1 and "no file with id 1" in out.output
    runner = CliRunner()
    blocker = tmp_path / "file"
    blocker.write_text("x")
    r = runner.invoke(cli.main, ["--config", str(tmp_path / "casegate.toml"), "--store",
                                 f"sqlite:///{blocker}/sub/c.db", "case", "list"])
    assert r.exit_code == 1 and "cannot open the store" in r.output
    bad = tmp_path / "bad.toml"
    bad.write_text("secret = 123\n")
    r = runner.invoke(cli.main, ["--config", str(bad), "case", "list"])
    assert r.exit_code == 1 and "secret must be a string" in r.output


def test_casegate_milter_runs_alone_and_rejects_a_blacklisted_sender(run, tmp_path: Path) -> None:
    import os
    import signal
    import subprocess
    import time

    from tests.support.casegate import casegate_cmd
    from tests.support.milterclient import PostfixLikeClient, describe
    from tests.support.postfix import free_port

    run("init")
    run("mailbox", "add", "support@example.com")
    run("blacklist", "add", "@spammer.test")
    port = free_port()
    proc = subprocess.Popen(
        [*casegate_cmd(), "--config", str(tmp_path / "casegate.toml"), "--store",
         f"sqlite:///{tmp_path / 'c.db'}", "milter", "--listen", f"127.0.0.1:{port}"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env={**os.environ})
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                client = PostfixLikeClient.open(f"127.0.0.1:{port}")
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read()
                time.sleep(0.05)
        with client:
            client.negotiate()
            client.connect_event()
            # Refused for the supervised address only (issue 8: judged per recipient).
            assert describe(client.mail("<boss@spammer.test>")) == "continue"
            assert describe(client.rcpt("<support@example.com>")).startswith("550 5.7.1")
            assert describe(client.rcpt("<bob@example.com>")) == "continue"
            client.abort()
            assert describe(client.mail("<nice@customer.test>")) == "continue"
            assert describe(client.rcpt("<support@example.com>")) == "continue"
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0


@pytest.mark.parametrize("text,named", [
    ("stroe = \"sqlite:///x.db\"\n", "unknown key 'stroe'"),
    ("[serve]\nlisten = \"127.0.0.1:10025\"\ntick_seconds = 2\n", "unknown key [serve] 'tick_seconds'"),
    ("[dkim]\nselektor = \"x\"\n", "unknown key [dkim] 'selektor'"),
])
def test_config_rejects_unknown_keys_naming_key_and_file(tmp_path: Path, text: str, named: str) -> None:
    path = tmp_path / "typo.toml"
    path.write_text(text)
    r = CliRunner().invoke(cli.main, ["--config", str(path), "case", "list"])
    assert r.exit_code == 1 and named in r.output and str(path) in r.output


def test_pool_set_and_list(run) -> None:
    run("init")
    run("mailbox", "add", "support@example.com")
    out = run("pool", "set", "default", "--closed-policy", "new_linked_after:7", "--close-on-reply",
              "--remind-after", "36h", "--autoclose-after", "off")
    assert out.exit_code == 0, out.output
    pools = json.loads(run("pool", "list", "--json").output)
    assert pools == [{"name": "default", "rule": "least_load", "closed_policy": "new_linked_after:7",
                      "close_on_reply": True, "remind_after": "36h", "autoclose_after": "off",
                      "unassigned_notify": None, "escalation_notice": False,
                      "cc_participants": True, "max_participants": 10,
                      "language": "en", "acknowledge": True, "greeting": "", "text_only": False,
                      "resolve_within": "off"}]
    for args, message in ((["--closed-policy", "sometimes"], "unknown closed-case policy"),
                          (["--remind-after", "3x"], "not a duration"),
                          ([], "nothing to set")):
        bad = run("pool", "set", "default", *args)
        assert bad.exit_code == 2 and message in bad.output, bad.output
    missing = run("pool", "set", "nosuch", "--close-on-reply")
    assert missing.exit_code == 1 and "no pool named 'nosuch'" in missing.output


def test_case_commands_at_the_shell(run, tmp_path: Path) -> None:
    run("init")
    run("mailbox", "add", "support@example.com")
    run("csr", "add", "jane@example.com", "--name", "Jane Doe")
    body = tmp_path / "body.txt"
    body.write_text("Your parcel is on its way.\n")
    opened = run("case", "open", "--customer", "Ann <ann@customer.test>", "--mailbox",
                 "support@example.com", "--csr", "jane@example.com", "--subject", "Parcel",
                 "--body-file", str(body), "--json")
    assert opened.exit_code == 0, opened.output
    number = json.loads(opened.output)["number"]
    assert run("case", "status", number).output.strip() == "in_progress"
    assert run("case", "note", number, "Called", "her").exit_code == 0
    refused = run("case", "take", number, "--csr", "jane@example.com")
    assert refused.exit_code == 1 and "already yours" in refused.output
    not_csr = run("case", "take", number, "--csr", "eve@example.com")
    assert not_csr.exit_code == 1 and "eve@example.com is not a CSR" in not_csr.output
    closed = json.loads(run("case", "status", number, "closed", "--json").output)
    assert closed["status"] == "closed" and closed["sent"] == ["closed", "survey"]
    shown = json.loads(run("case", "show", number, "--json").output)
    assert shown["notes"][0]["text"] == "Called her"
    assert [i["kind"] for i in shown["history"] if i["type"] == "message"] == [
        "csr", "reply", "closed", "survey"]
    text = run("case", "show", number).output
    assert "internal note by admin" in text and "in_progress -> closed" in text


# -- trust: file modes, secrets on screen, configuration mistakes ---------------


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_init_makes_the_store_and_config_folders_private(tmp_path: Path) -> None:
    import os

    from casestore.store import Store

    old = os.umask(0o022)  # the usual login umask: what a sysadmin's shell has
    try:
        state, etc = tmp_path / "state" / "casegate", tmp_path / "etc" / "casegate"
        url = f"sqlite:///{state / 'casegate.db'}"
        r = CliRunner().invoke(cli.main, ["--config", str(etc / "casegate.toml"), "--store", url,
                                          "init"], catch_exceptions=False)
        assert r.exit_code == 0, r.output
        assert (_mode(state), _mode(state / "casegate.db")) == (0o700, 0o600)
        assert (_mode(etc), _mode(etc / "casegate.toml")) == (0o700, 0o600)
        store = Store(url)  # the server: its -wal and -shm files are as private as the store
        store.set_setting("probe", "1")
        assert {p.name: _mode(p) for p in state.iterdir()} == {
            "casegate.db": 0o600, "casegate.db-wal": 0o600, "casegate.db-shm": 0o600}
        store.close()
    finally:
        os.umask(old)


def test_init_warns_about_a_store_any_local_user_can_read(run, tmp_path: Path) -> None:
    run("init")
    (tmp_path / "c.db").chmod(0o644)
    again = run("init")
    assert again.exit_code == 0 and "readable by every local user" in again.output
    assert "chmod 600" in again.output


def test_a_store_password_is_never_shown(tmp_path: Path, pg_url: str) -> None:
    from casestore.store import Store, display_url

    url = pg_url.replace("postgres@", "postgres:s3cr%40t@", 1)  # trust auth ignores it
    assert url != pg_url and display_url(url) == pg_url.replace("postgres@", "postgres:***@", 1)
    assert display_url("postgresql://h/db?password=s3cret&sslmode=require") == (
        "postgresql://h/db?password=***&sslmode=require")
    base = ["--config", str(tmp_path / "casegate.toml"), "--store", url]
    out = CliRunner().invoke(cli.main, [*base, "init"], catch_exceptions=False).output
    assert "postgres:***@" in out and "s3cr" not in out
    assert "s3cr" in (tmp_path / "casegate.toml").read_text()  # the config keeps it (0600)
    old = Store(url)  # a store one migration behind
    old.db.execute_sql("DELETE FROM casegate_migration WHERE name = '0004_case_life'")
    old.close()
    listed = CliRunner().invoke(cli.main, [*base, "case", "list"])
    assert listed.exit_code == 1 and "needs migrations" in listed.output
    assert "s3cr" not in listed.output and "postgres:***@" in listed.output
    down = CliRunner().invoke(cli.main, [*base[:3], "postgresql://u:s3cret@127.0.0.1:1/x",
                                         "case", "list"])
    assert down.exit_code == 1 and "s3cret" not in down.output
    bad = CliRunner().invoke(cli.main, [*base[:3], "postgresql://u:s3cret@127.0.0.1:1/", "case", "list"])
    assert bad.exit_code == 1 and "no database name" in bad.output and "s3cret" not in bad.output
    assert "s3cr" not in repr(Store(url))


def test_a_missing_config_file_is_an_error_except_for_init(tmp_path: Path, monkeypatch) -> None:
    store = f"sqlite:///{tmp_path / 'c.db'}"
    missing = tmp_path / "typo.toml"
    r = CliRunner().invoke(cli.main, ["--config", str(missing), "--store", store, "case", "list"])
    assert r.exit_code == 1 and f"no config file at {missing}" in r.output
    assert "casegate init" in r.output and not (tmp_path / "c.db").exists()
    monkeypatch.setenv("CASEGATE_CONFIG", str(missing))
    r = CliRunner().invoke(cli.main, ["--store", store, "mailbox", "list"])
    assert r.exit_code == 1 and f"no config file at {missing}" in r.output
    assert "$CASEGATE_CONFIG" in r.output
    monkeypatch.delenv("CASEGATE_CONFIG")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    if __import__("os").geteuid() != 0:  # the default path: root's is /etc/casegate
        r = CliRunner().invoke(cli.main, ["--store", store, "csr", "list"])
        assert r.exit_code == 1 and "no config file at" in r.output
    assert CliRunner().invoke(cli.main, ["--store", store, "case", "--help"]).exit_code == 0
    made = CliRunner().invoke(cli.main, ["--config", str(missing), "--store", store, "init"])
    assert made.exit_code == 0 and missing.exists()
    ok = CliRunner().invoke(cli.main, ["--config", str(missing), "--store", store, "case", "list"])
    assert ok.exit_code == 0, ok.output


def test_only_init_creates_the_store(run, tmp_path: Path) -> None:
    run("init")
    elsewhere = tmp_path / "no" / "such" / "folder" / "c.db"
    for args in (["case", "list"], ["mailbox", "list"], ["blacklist", "add", "x@spam.test"]):
        r = CliRunner().invoke(cli.main, ["--config", str(tmp_path / "casegate.toml"), "--store",
                                          f"sqlite:///{elsewhere}", *args])
        assert r.exit_code == 1 and f"no store at {elsewhere}: run `casegate init`" in r.output, r.output
        assert not (tmp_path / "no").exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    r = CliRunner().invoke(cli.main, ["--config", str(tmp_path / "casegate.toml"), "--store",
                                      f"sqlite:///{empty / 'c.db'}", "case", "list"])
    assert r.exit_code == 1 and "no store at" in r.output and list(empty.iterdir()) == []


@pytest.mark.parametrize("command", [["mailbox", "add"], ["csr", "add", "--name", "X"],
                                     ["blacklist", "add"]])
@pytest.mark.parametrize("bad", ["help@example", "help@localhost", "help@exa..mple.com"])
def test_addresses_the_milter_cannot_read_are_refused(run, command: list[str], bad: str) -> None:
    run("init")
    r = run(*command[:2], bad, *command[2:])
    assert r.exit_code == 2 and "not a valid" in r.output, r.output
    for listing in (["mailbox", "list"], ["csr", "list"], ["blacklist", "list"]):
        assert json.loads(run(*listing, "--json").output) == []



def test_assignment_rules_levels_and_next_at_the_shell(run) -> None:
    run("init")
    run("mailbox", "add", "support@example.com")
    assert run("csr", "add", "ann@example.com", "--name", "Ann", "--pool", "default:1:2").exit_code == 0
    assert run("csr", "add", "lee@example.com", "--name", "Lee", "--pool", "default:2").exit_code == 0
    bad = run("csr", "add", "x@example.com", "--name", "X", "--pool", "default:first")
    assert bad.exit_code == 1 and "NAME[:LEVEL[:PRIORITY]]" in bad.output
    rows = {r["address"]: r["memberships"] for r in json.loads(run("csr", "list", "--json").output)}
    rows = {a: [(m["pool"], m["level"], m["priority"]) for m in ms] for a, ms in rows.items()}
    assert rows == {"ann@example.com": [("default", 1, 2)], "lee@example.com": [("default", 2, 1)]}
    assert run("csr", "set", "lee@example.com", "--pool", "default:1:1", "--pool", "vip:2").exit_code == 0
    for rule in ("limit:3", "round_robin", "fifo", "none", "random", "least_load", "limit"):
        out = run("pool", "set", "default", "--assign", rule)
        assert out.exit_code == 0, out.output
    assert json.loads(run("pool", "list", "--json").output)[0]["rule"] == "limit:5"
    bad = run("pool", "set", "default", "--assign", "limit:0")
    assert bad.exit_code == 2 and "limit takes a number" in bad.output
    bad = run("pool", "set", "default", "--assign", "loudest")
    assert bad.exit_code == 2 and "unknown assignment rule" in bad.output
    nothing = run("case", "next", "--csr", "ann@example.com")
    assert nothing.exit_code == 1 and "nothing is waiting in your pools (default)" in nothing.output


def test_csr_away_and_back(run) -> None:
    run("init")
    run("mailbox", "add", "support@example.com")
    run("csr", "add", "ann@example.com", "--name", "Ann")
    run("csr", "add", "ben@example.com", "--name", "Ben")
    away = run("csr", "away", "ann@example.com", "--until", "2099-01-01", "--deputy", "ben@example.com",
               "--json")
    assert away.exit_code == 0, away.output
    m = json.loads(away.output)["memberships"][0]
    assert (m["away"], m["away_until"], m["deputy"]) == (True, "2099-01-01T00:00:00+00:00", "ben@example.com")
    bad = run("csr", "away", "ann@example.com", "--deputy", "nobody@example.com")
    assert bad.exit_code == 1 and "not a CSR" in bad.output
    back = run("csr", "back", "ann@example.com")
    assert back.exit_code == 0 and "ann@example.com\tdefault\tavailable" in back.output


def test_closing_questions_by_shell(run, tmp_path: Path) -> None:
    run("init")
    run("mailbox", "add", "support@example.com")
    run("csr", "add", "jane@example.com", "--name", "Jane")
    assert run("question", "add", "default", "product", "--choices", "Router,Switch",
               "--required").exit_code == 0
    assert run("question", "add", "default", "partner", "--free-text").exit_code == 0
    bad = run("question", "add", "default", "x y", "--choices", "A")
    assert bad.exit_code == 2
    listed = json.loads(run("question", "list", "--json").output)
    assert listed == [{"pool": "default", "name": "product", "choices": ["Router", "Switch"],
                       "required": True, "free_text": False},
                      {"pool": "default", "name": "partner", "choices": [], "required": False,
                       "free_text": True}]
    (tmp_path / "b.txt").write_text("About your router.\n")
    body = run("case", "open", "--customer", "ann@customer.test", "--mailbox", "support@example.com",
               "--csr", "jane@example.com", "--subject", "Router", "--body-file", str(tmp_path / "b.txt"))
    assert body.exit_code == 0, body.output
    number = body.output.split()[1].rstrip(";")
    refused = run("case", "close", number)
    assert refused.exit_code == 1 and "product is required" in refused.output
    assert "product=Router|Switch (required)" in refused.output
    wrong = run("case", "close", number, "--answer", "product=Modem")
    assert wrong.exit_code == 1 and "product=Modem is not one of Router, Switch" in wrong.output
    done = run("case", "close", number, "--answer", "product=Router", "--answer", "partner=ACME Ltd",
               "--json")
    assert done.exit_code == 0, done.output
    shown = json.loads(run("case", "show", number, "--json").output)
    assert shown["answers"] == {"product": "Router", "partner": "ACME Ltd"}
    assert run("question", "remove", "default", "partner").exit_code == 0
    assert run("question", "remove", "default", "partner").exit_code == 1


def test_departments_at_the_shell(run) -> None:
    run("init")
    run("mailbox", "add", "support@example.com")
    run("csr", "add", "jane@example.com", "--name", "Jane")
    assert run("department", "add", "legal", "legal@example.com", "--deadline", "1d").exit_code == 0
    bad = run("department", "add", "csr", "jane@example.com")
    assert bad.exit_code == 1 and "is a CSR or a supervised address" in bad.output
    assert run("department", "set", "legal", "--deadline", "36h").exit_code == 0
    assert json.loads(run("department", "list", "--json").output) == [
        {"name": "legal", "address": "legal@example.com", "deadline": "36h"}]
    assert run("case", "list", "--overdue", "--json").output.strip() == "[]"
    assert run("department", "remove", "legal").exit_code == 0
    assert run("department", "remove", "legal").exit_code == 1


def test_approval_at_the_shell(run) -> None:
    run("init")
    run("mailbox", "add", "support@example.com")
    run("csr", "add", "jane@example.com", "--name", "Jane")
    run("csr", "add", "bob@example.com", "--name", "Bob")
    bad = run("csr", "set", "bob@example.com", "--needs-approval")
    assert bad.exit_code == 1 and "needs --supervisor" in bad.output
    assert run("csr", "set", "bob@example.com", "--needs-approval", "--supervisor",
               "jane@example.com").exit_code == 0
    rows = {r["address"]: r["supervisor"] for r in json.loads(run("csr", "list", "--json").output)}
    assert rows == {"bob@example.com": "jane@example.com", "jane@example.com": None}
    assert json.loads(run("approval", "list", "--json").output) == []
    missing = run("approval", "approve", "7")
    assert missing.exit_code == 1 and "no held answer 7" in missing.output


def test_version() -> None:
    out = CliRunner().invoke(cli.main, ["--version"])
    assert out.exit_code == 0 and out.output.startswith("casegate, version ")
