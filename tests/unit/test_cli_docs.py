"""docs/cli.md is what scripts/gen-cli-docs makes from the click commands now."""

from __future__ import annotations

import runpy
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_docs_cli_md_is_up_to_date() -> None:
    render = runpy.run_path(str(REPO / "scripts" / "gen-cli-docs"))["render"]
    expected = render()
    current = (REPO / "docs" / "cli.md").read_text()
    assert current == expected, "docs/cli.md is out of date: run .venv/bin/python scripts/gen-cli-docs"


def test_every_command_is_in_the_reference() -> None:
    import click

    import cli

    text = (REPO / "docs" / "cli.md").read_text()

    def walk(cmd: click.Command, path: str) -> None:
        assert f"\n## {path}\n" in text or path == "casegate", path
        if isinstance(cmd, click.Group):
            for name, sub in cmd.commands.items():
                walk(sub, f"{path} {name}")

    walk(cli.main, "casegate")
    assert "\n## casegate check\n" in text and "\n## casegate completion\n" in text
