"""``serve --workers``: the count (smtpd_hook/workers.py) and its config key."""

from __future__ import annotations

import os

import pytest
from click.testing import CliRunner

import cli
from smtpd_hook.workers import cpu_count, parse_workers


def test_workers_count() -> None:
    assert parse_workers(1) == 1 and parse_workers("2") == 2 and parse_workers(" 64 ") == 64
    assert parse_workers("auto") == parse_workers("AUTO") == cpu_count() >= 1
    assert cpu_count() <= (os.cpu_count() or 1)
    for bad in (0, "0", "65", "-1", "two", "", "1.5", None):
        with pytest.raises(ValueError, match="from 1 to 64 or auto"):
            parse_workers(bad)


@pytest.mark.parametrize("where", ["option", "config"])
def test_bad_workers_value_is_refused_before_anything_starts(tmp_path, where: str) -> None:
    config = tmp_path / "casegate.toml"
    config.write_text(f'secret = "{"ab" * 32}"\n[serve]\n' + ('workers = "many"\n' if where == "config" else ""))
    args = ["--config", str(config), "--store", f"sqlite:///{tmp_path / 'none.db'}", "serve"]
    if where == "option":
        args += ["--workers", "0"]
    result = CliRunner().invoke(cli.main, args)
    assert result.exit_code == 2, result.output
    assert ("--workers" if where == "option" else "[serve] workers") in result.output
    assert "from 1 to 64 or auto" in result.output
