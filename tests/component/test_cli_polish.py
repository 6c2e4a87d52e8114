"""The CLI on a terminal and in a pipe: header rows and progress bars on a
terminal only (a pipe gets exactly what scripts parse), shell completion."""

from __future__ import annotations

import os
import pty
import select
import shutil
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

import cli
from tests.support.casegate import Casegate, casegate_cmd


@pytest.fixture
def run(tmp_path: Path):
    runner = CliRunner()
    base = ["--config", str(tmp_path / "casegate.toml"), "--store", f"sqlite:///{tmp_path / 'c.db'}"]

    def invoke(*args: str):
        result = runner.invoke(cli.main, [*base, *args], catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return result.stdout

    invoke("init")
    invoke("mailbox", "add", "support@example.com")
    invoke("csr", "add", "jane@example.com", "--name", "Jane Doe")
    invoke("department", "add", "legal", "legal@example.com")
    invoke("question", "add", "default", "device", "--choices", "Router,Switch", "--required")
    invoke("question", "add", "default", "serial", "--free-text")
    invoke("blacklist", "add", "@spammer.test", "--reason", "spam")
    return invoke


LISTS = ["mailbox", "csr", "pool", "department", "question", "blacklist"]


@pytest.mark.parametrize("group", LISTS)
def test_a_list_has_a_header_row_on_a_terminal_only(run, monkeypatch: pytest.MonkeyPatch,
                                                    group: str) -> None:
    piped = run(group, "list")
    rows = [line.split("\t") for line in piped.splitlines()]
    assert rows and all(len(r) >= 1 for r in rows)
    header = cli.LIST_HEADERS[f"{group} list"]
    assert piped.splitlines()[0].split("\t")[0] not in header  # no header in a pipe
    assert max(len(r) for r in rows) == len(header), (header, rows)  # the header names every column
    monkeypatch.setattr(cli, "_is_terminal", lambda err=False: not err)
    shown = run(group, "list").splitlines()
    assert shown[0].split() == " ".join(header).split()
    # The same cells, aligned in columns under the header.
    assert [line.split() for line in shown[1:]] == [" ".join(r).split() for r in rows]
    starts = [shown[0].index(h) for h in header[1:]]
    for line, cells in zip(shown[1:], rows, strict=True):
        assert [line.index(c, s) for c, s in zip(cells[1:], starts, strict=False)] == starts[:len(cells) - 1]


def test_every_list_command_has_a_header() -> None:
    lists = {f"{name} list" for name, group in cli.main.commands.items()
             if hasattr(group, "commands") and "list" in group.commands}
    assert lists == set(cli.LIST_HEADERS)


def _on_a_terminal(args: list[str], env: dict[str, str], which: str) -> tuple[str, str]:
    """Run with stdout or stderr (``which``) on a pseudo-terminal; (terminal text, other stream)."""
    master, slave = pty.openpty()
    streams = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, which: slave}
    proc = subprocess.Popen(args, env=env, stdin=subprocess.DEVNULL, **streams)
    os.close(slave)
    seen = b""
    while True:
        ready, _, _ = select.select([master], [], [], 30)
        assert ready, f"no output from {args}"
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the other side is closed
            break
        if not chunk:
            break
        seen += chunk
    other = (proc.stderr if which == "stdout" else proc.stdout).read()  # type: ignore[union-attr]
    assert proc.wait(30) == 0, seen
    os.close(master)
    return seen.decode(), other.decode()


def test_a_real_terminal_gets_the_header_and_a_pipe_does_not(tmp_path: Path) -> None:
    cg = Casegate(tmp_path / "cg")
    cg.setup()
    args = [*casegate_cmd(), "--config", str(cg.config), "--store", cg.store_url, "mailbox", "list"]
    shown, _ = _on_a_terminal(args, cg.env, "stdout")
    assert shown.splitlines()[0].split() == ["ADDRESS", "POOL"]
    assert cg.run("mailbox", "list").stdout == "support@example.com\tpool=default\n"


def test_progress_bars_on_a_terminal_only(tmp_path: Path) -> None:
    cg = Casegate(tmp_path / "cg")
    base = [*casegate_cmd(), "--config", str(cg.config), "--store", cg.store_url]
    bar, out = _on_a_terminal([*base, "init"], cg.env, "stderr")
    assert "migrating the store" in bar and "100%" in bar
    names = cli.Store.migration_names()
    assert f"applied {', '.join(names)}" in out  # stdout as in a pipe
    patterns = tmp_path / "list.txt"
    patterns.write_text("".join(f"@spam{i}.test\n" for i in range(40)))
    bar, out = _on_a_terminal([*base, "blacklist", "import", str(patterns)], cg.env, "stderr")
    assert "importing" in bar and "100%" in bar and out == "imported 40 entries\n"
    patterns.write_text("".join(f"@more{i}.test\n" for i in range(40)))
    piped = cg.run("blacklist", "import", str(patterns))
    assert piped.stdout == "imported 40 entries\n" and piped.stderr == ""


def test_completion_scripts(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli.main, ["completion", "bash"])
    assert result.exit_code == 0 and "_CASEGATE_COMPLETE=bash_complete" in result.stdout
    if shutil.which("bash"):
        script = tmp_path / "casegate.bash"
        script.write_text(result.stdout)
        assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    zsh = CliRunner().invoke(cli.main, ["completion", "zsh"])
    assert zsh.exit_code == 0 and zsh.stdout.startswith("#compdef casegate")
    # What the bash function asks the program, and its answer.
    env = {**os.environ, "COMP_WORDS": "casegate mailbox ", "COMP_CWORD": "2",
           "_CASEGATE_COMPLETE": "bash_complete"}
    asked = subprocess.run([*casegate_cmd()], env=env, capture_output=True, text=True, cwd=tmp_path)
    assert {"plain,add", "plain,list"} <= set(asked.stdout.split())  # (others may add commands)
    assert all(word.startswith("plain,") for word in asked.stdout.split())
    bad = CliRunner().invoke(cli.main, ["completion", "tcsh"])
    assert bad.exit_code == 2 and "tcsh" in bad.output
